"""OpenAPI pieces shared by the API modules: the error body, common error responses, token auth."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class ErrorSerializer(serializers.Serializer[Any]):
    detail = serializers.CharField(help_text="What was wrong, in words.")


def error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


UNAUTHENTICATED = error("No valid token or session.")
FORBIDDEN = error("Signed in, but only staff operators may do this.")
NOT_FOUND = error("No such object.")
FIELD_ERRORS = OpenApiResponse(
    OpenApiTypes.OBJECT,
    description="A filter or body value that does not validate: {field: [messages]}.",
)
READ_ERRORS: dict[int, OpenApiResponse] = {401: UNAUTHENTICATED, 404: NOT_FOUND}


class RainlogTokenScheme(OpenApiAuthenticationExtension):
    """Knox tokens as accepted by api.authentication (drf-spectacular matches exact classes)."""

    target_class = "api.authentication.TokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Token <token>` (or `Bearer <token>`); get one at /api/auth/token/.",
        }


WRITE_METHODS = {"post", "put", "patch", "delete"}


def _operator_only_writes(generator: Any) -> set[tuple[str, str]]:
    """(path, method) of the writes whose view lets only staff operators change things."""
    from api.permissions import IsOperator, IsOperatorOrReadOnly

    writes = set()
    for path, _, method, callback in generator.endpoints or []:
        view_class = getattr(callback, "cls", None)
        permissions = getattr(view_class, "permission_classes", ())
        if method.lower() in WRITE_METHODS and any(
            isinstance(p, type) and issubclass(p, (IsOperator, IsOperatorOrReadOnly))
            for p in permissions
        ):
            writes.add((path, method.lower()))
    return writes


def document_auth_errors(result: dict[str, Any], generator: Any = None, **kwargs: Any) -> dict:
    """Schema post-processing: every operation that needs a sign-in documents 401, and every
    write that viewers may not make documents 403, wherever a view did not say so itself."""
    operator_only = _operator_only_writes(generator) if generator is not None else set()
    error_ref = {"$ref": "#/components/schemas/Error"}
    result.setdefault("components", {}).setdefault("schemas", {}).setdefault(
        "Error",
        {
            "type": "object",
            "properties": {"detail": {"type": "string"}},
            "required": ["detail"],
        },
    )
    for path, item in result.get("paths", {}).items():
        for method, operation in item.items():
            security = operation.get("security", [])
            if not security or any(not requirement for requirement in security):
                continue  # anonymous access allowed
            responses = operation.setdefault("responses", {})
            documented = [("401", UNAUTHENTICATED)]
            if (path, method) in operator_only:
                documented.append(("403", FORBIDDEN))
            for code, response in documented:
                responses.setdefault(
                    code,
                    {
                        "description": response.description,
                        "content": {"application/json": {"schema": error_ref}},
                    },
                )
    return result
