"""Every 4xx and 5xx answer under /api/ is an RFC 9457 problem document (docs/api.md, "Errors"):

    {"type": "about:blank", "title": "Not Found", "status": 404,
     "detail": "No EAGLE user with cloud_id 00ff.", "instance": "/api/users/00ff",
     "code": "not_found"}

`detail` says in one sentence what was wrong; `code` is a stable word a client may switch on; a
400 for values that do not validate adds `errors`, one {field, message, code} per problem (`field`
is null for a problem of the whole body or query). Some problems carry more members (`removed`,
`failure`, `wait`), documented with their operation. The schema's `Problem` component
(api/schema.py) describes this shape.
"""

from __future__ import annotations

from collections.abc import Iterator
from http import HTTPStatus
from typing import Any, TypeVar

from django.core.exceptions import ObjectDoesNotExist
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db.models import Model
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

from api.authentication import SEED_PASSWORD_HINT

M = TypeVar("M", bound=Model)
PROBLEM_CONTENT_TYPE = "application/problem+json"


def problem_document(
    status_code: int,
    detail: str,
    instance: str,
    code: str,
    errors: list[dict[str, Any]] | None = None,
    **members: Any,
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status_code).phrase,
        "status": status_code,
        "detail": detail,
        "instance": instance,
        "code": code,
    }
    if errors is not None:
        document["errors"] = errors
    document.update(members)
    return document


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The object is not in a state that allows this."


class Problem(exceptions.APIException):
    """An error with members beyond the usual ones: `raise Problem(503, "…", removed={…})`."""

    def __init__(self, status_code: int, detail: str, code: str = "error", **members: Any):
        super().__init__(detail, code)
        self.status_code = status_code
        self.code = code
        self.members = members


def _field_errors(detail: Any, field: str | None = None) -> Iterator[dict[str, Any]]:
    """ValidationError details flattened: nested fields as `a.b`, list items as `a.0`."""
    if isinstance(detail, dict):
        for name, value in detail.items():
            name = None if name == api_settings.NON_FIELD_ERRORS_KEY else str(name)
            path = name if field is None else field if name is None else f"{field}.{name}"
            yield from _field_errors(value, path)
    elif isinstance(detail, list):
        if all(isinstance(item, str) for item in detail):
            for item in detail:
                yield from _field_errors(item, field)
        else:
            for index, item in enumerate(detail):
                if item:
                    path = str(index) if field is None else f"{field}.{index}"
                    yield from _field_errors(item, path)
    else:
        yield {"field": field, "message": str(detail), "code": getattr(detail, "code", "invalid")}


def _sentence(errors: list[dict[str, Any]]) -> str:
    return " ".join(
        error["message"] if error["field"] is None else f"{error['field']}: {error['message']}"
        for error in errors
    )


def no_such(model: type[Model], field: str, value: Any) -> exceptions.NotFound:
    """The one 404 of a lookup: 'No EAGLE user with cloud_id 00ff.'"""
    name = "id" if field == "pk" else field
    return exceptions.NotFound(f"No {model._meta.verbose_name} with {name} {value}.")


def get_or_404(model: type[M], field: str, value: Any) -> M:
    try:
        return model._default_manager.get(**{field: value})
    except ObjectDoesNotExist:
        raise no_such(model, field, value) from None


def _not_found(exc: Http404, view: Any) -> exceptions.NotFound:
    """The lookup of a generic view (DRF's get_object) as no_such() says it; else as raised."""
    lookup = str(getattr(view, "lookup_url_kwarg", None) or getattr(view, "lookup_field", ""))
    kwargs = getattr(view, "kwargs", None) or {}
    if str(exc).endswith("matches the given query.") and lookup in kwargs:
        return no_such(view.get_queryset().model, lookup, kwargs[lookup])
    return exceptions.NotFound(str(exc) or None)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, answering problem documents; a pointer to token auth for the seed's ?pw=."""
    request = context.get("request")
    view = context.get("view")
    if isinstance(exc, Http404):
        exc = _not_found(exc, view)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    if (
        isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed)
        and request is not None
        and "pw" in request.query_params
    ):
        exc = exceptions.AuthenticationFailed(SEED_PASSWORD_HINT)
        # Read by DRF's handler for WWW-Authenticate; the stubs do not declare it.
        exc.auth_header = "Token"  # type: ignore[attr-defined]
    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    instance = request.path if request is not None else ""
    members: dict[str, Any] = {}
    errors = None
    if isinstance(exc, exceptions.ValidationError):
        errors = list(_field_errors(exc.detail))
        detail, code = _sentence(errors), "invalid"
    else:
        detail = str(exc.detail)
        code = getattr(exc.detail, "code", None) or exc.default_code
    if isinstance(exc, Problem):
        members, code = exc.members, exc.code
    wait = getattr(exc, "wait", None)  # set by DRF on Throttled, absent from its stubs
    if isinstance(exc, exceptions.Throttled) and wait is not None:
        members["wait"] = wait
    response.data = problem_document(
        response.status_code, detail, instance, code, errors, **members
    )
    response.content_type = PROBLEM_CONTENT_TYPE
    if request is not None:
        # A CSV or JSON-lines error body helps no one: problems are JSON whatever was asked for.
        request.accepted_renderer = JSONRenderer()
        request.accepted_media_type = PROBLEM_CONTENT_TYPE
    return response


def problem_response(
    request: HttpRequest, status_code: int, detail: str, code: str
) -> JsonResponse:
    """A problem document answered outside DRF's views (unknown routes, server errors)."""
    return JsonResponse(
        problem_document(status_code, detail, request.path, code),
        status=status_code,
        content_type=PROBLEM_CONTENT_TYPE,
    )


@csrf_exempt
def unknown_route(request: HttpRequest, route: str) -> JsonResponse:
    return problem_response(
        request,
        status.HTTP_404_NOT_FOUND,
        f"No route {request.path}: the routes are listed in /api/schema/.",
        "not_found",
    )


def server_error(request: HttpRequest) -> HttpResponse:
    """Django's 500 handler: a problem document under /api/, the usual page elsewhere."""
    if request.path.startswith("/api/"):
        return problem_response(
            request,
            status.HTTP_500_INTERNAL_SERVER_ERROR,
            "The server failed to answer this request; the error is logged for the operators.",
            "server_error",
        )
    return defaults.server_error(request)
