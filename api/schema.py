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
NO_SUCH_PAGE = error("No such page: past the last one, or not a page number.")
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


def _error_response(response: OpenApiResponse) -> dict[str, Any]:
    return {
        "description": response.description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _implied_errors(
    operation: dict[str, Any], operator_only: bool
) -> list[tuple[str, dict[str, Any]]]:
    """The client errors an operation can answer by its shape alone: who may call it, its path
    parameters, its pagination, and the values it validates."""
    parameters = operation.get("parameters", [])
    implied = [("401", _error_response(UNAUTHENTICATED))]
    if operator_only:
        implied.append(("403", _error_response(FORBIDDEN)))
    if any(p.get("in") == "path" for p in parameters):
        implied.append(("404", _error_response(NOT_FOUND)))
    elif any(p.get("name") == "page" for p in parameters):
        implied.append(("404", _error_response(NO_SUCH_PAGE)))
    if "requestBody" in operation or any(
        p.get("in") == "query" and p.get("name") not in ("page", "format") for p in parameters
    ):
        implied.append(
            (
                "400",
                {
                    "description": FIELD_ERRORS.description,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
            )
        )
    return implied


def document_implied_errors(result: dict[str, Any], generator: Any = None, **kwargs: Any) -> dict:
    """Schema post-processing: every operation that needs a sign-in documents the errors its
    shape implies (401; 403 for writes viewers may not make; 404 for a path parameter or a page
    past the end; 400 for values it validates), wherever a view did not say so itself."""
    operator_only = _operator_only_writes(generator) if generator is not None else set()
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
            for code, response in _implied_errors(operation, (path, method) in operator_only):
                responses.setdefault(code, response)
    return result
