"""OpenAPI pieces shared by the API modules: the problem document of every error, common error
responses, token auth, and the hooks that apply them to every operation."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiResponse

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An RFC 9457 problem document: every 4xx and 5xx answer of the API "
    '(docs/api.md, "Errors").',
    "properties": {
        "type": {"type": "string", "description": "Always about:blank: see `code`."},
        "title": {"type": "string", "description": "The HTTP status phrase (Not Found)."},
        "status": {"type": "integer", "description": "The HTTP status code."},
        "detail": {"type": "string", "description": "What was wrong, in one sentence."},
        "instance": {"type": "string", "description": "The path that was asked for."},
        "code": {
            "type": "string",
            "description": "A stable word to switch on: invalid, not_found, "
            "not_authenticated, permission_denied, method_not_allowed, conflict, …",
        },
        "errors": {
            "type": "array",
            "description": "With code `invalid`: each value that does not validate.",
            "items": {
                "type": "object",
                "properties": {
                    "field": {
                        "type": "string",
                        "nullable": True,
                        "description": "The body field or query parameter (a.b when nested); "
                        "null for the body or query as a whole.",
                    },
                    "message": {"type": "string"},
                    "code": {"type": "string"},
                },
                "required": ["field", "message", "code"],
            },
        },
    },
    "required": ["type", "title", "status", "detail", "instance", "code"],
    "additionalProperties": True,
}
PROBLEM_CONTENT = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


def error(description: str) -> OpenApiResponse:
    """An error response of an operation: its body is a Problem (added by document_errors)."""
    return OpenApiResponse(description=description)


UNAUTHENTICATED = error("No valid token or session.")
FORBIDDEN = error("Signed in, but only staff operators may do this.")
NOT_FOUND = error("No such object.")
NO_SUCH_PAGE = error("No such page: past the last one, or not a page number.")
FIELD_ERRORS = error("A filter or body value that does not validate: `errors` lists each.")
READ_ERRORS: dict[int, OpenApiResponse] = {401: UNAUTHENTICATED, 404: NOT_FOUND}


def one_form_per_route(endpoints: list[tuple[Any, ...]], **kwargs: Any) -> list[tuple[Any, ...]]:
    """Schema pre-processing: each route is listed in its named form only (api/urls.py serves
    it with and without the trailing slash; the named form comes first)."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for endpoint in endpoints:
        path, _, method, _ = endpoint
        key = (path.rstrip("/"), method)
        if key not in seen:
            seen.add(key)
            kept.append(endpoint)
    return kept


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
    return {"description": response.description, "content": PROBLEM_CONTENT}


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
        implied.append(("400", _error_response(FIELD_ERRORS)))
    return implied


def document_errors(result: dict[str, Any], generator: Any = None, **kwargs: Any) -> dict:
    """Schema post-processing: every error response is a Problem (application/problem+json),
    and every operation that needs a sign-in documents the errors its shape implies (401; 403
    for writes viewers may not make; 404 for a path parameter or a page past the end; 400 for
    values it validates), wherever a view did not say so itself."""
    operator_only = _operator_only_writes(generator) if generator is not None else set()
    result.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    for path, item in result.get("paths", {}).items():
        for method, operation in item.items():
            responses = operation.setdefault("responses", {})
            security = operation.get("security", [])
            if security and all(security):  # anonymous access is not allowed
                for code, response in _implied_errors(operation, (path, method) in operator_only):
                    responses.setdefault(code, response)
            for code, response in responses.items():
                if str(code)[0] in "45":
                    response["content"] = PROBLEM_CONTENT
    return result
