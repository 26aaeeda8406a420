from rest_framework import exceptions, status
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from api.authentication import SEED_PASSWORD_HINT


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The object is not in a state that allows this."


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's handler, plus a pointer to token auth for clients still sending the seed's ?pw=."""
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    request = context.get("request")
    if (
        isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed)
        and request is not None
        and "pw" in request.query_params
    ):
        response.data = {"detail": SEED_PASSWORD_HINT}
        response.status_code = status.HTTP_401_UNAUTHORIZED
        response["WWW-Authenticate"] = "Token"
    return response
