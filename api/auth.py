"""API tokens for operators: obtain with username and password, revoke one or all.

POST /api/auth/token/       {"username", "password"} -> {"token", "expiry", "user"}; throttled,
                            and locked out after LOGIN_FAILURE_LIMIT failures (django-axes)
POST /api/auth/logout/      revoke the token that authenticates this request
POST /api/auth/logout-all/  revoke every token of this operator

Tokens are knox tokens: only a hash is stored, each expires after API_TOKEN_TTL_HOURS, and the
token itself is shown once, in the response that issues it.
"""

from typing import Any

from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema, inline_serializer
from knox.models import AuthToken
from knox.views import LoginView, LogoutAllView, LogoutView
from rest_framework import serializers
from rest_framework.exceptions import AuthenticationFailed, Throttled
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle

from api.authentication import TokenAuthentication, delete_expired_tokens
from api.permissions import is_operator
from api.schema import FIELD_ERRORS, error


class TokenRequestSerializer(serializers.Serializer[Any]):
    username = serializers.CharField()
    password = serializers.CharField(
        write_only=True, trim_whitespace=False, style={"input_type": "password"}
    )


TokenResponse = inline_serializer(
    "TokenResponse",
    {
        "token": serializers.CharField(),
        "expiry": serializers.DateTimeField(allow_null=True),
        "user": inline_serializer(
            "TokenUser", {"username": serializers.CharField(), "role": serializers.CharField()}
        ),
    },
)


def role_of(user: Any) -> str:
    return "operator" if is_operator(user) else "viewer"


class SignInLockedOut(Throttled):
    default_detail = (
        "Too many failed sign-ins from this address: it is locked out for a while. "
        "An operator can unlock it (manage.py axes_reset_ip ADDRESS)."
    )


class ObtainTokenView(LoginView):
    """Username and password in the body (JSON or form); answers a new token and its expiry."""

    authentication_classes = ()
    permission_classes = (AllowAny,)
    throttle_classes = (ScopedRateThrottle,)
    throttle_scope = "token"
    serializer_class = TokenRequestSerializer

    def get_authenticate_header(self, request: Request) -> str:
        # Without one DRF turns 401 into 403; a client should learn that credentials are wanted.
        return "Token"

    @extend_schema(
        request=TokenRequestSerializer,
        responses={
            200: TokenResponse,
            400: FIELD_ERRORS,
            401: error("Wrong username or password, or an inactive operator."),
            429: error(
                "Too many attempts from this address (API_TOKEN_THROTTLE), or too many failed "
                "sign-ins (locked out for LOGIN_LOCKOUT_MINUTES): wait, retry."
            ),
        },
    )
    def post(self, request: Request, format: str | None = None) -> Response:
        credentials = TokenRequestSerializer(data=request.data)
        credentials.is_valid(raise_exception=True)
        # The Django request, on which django-axes records failures and marks a lockout.
        django_request = request._request
        user = authenticate(
            django_request,
            username=credentials.validated_data["username"],
            password=credentials.validated_data["password"],
        )
        if getattr(django_request, "axes_locked_out", False):
            # Answered here in the API's shape rather than by axes' middleware (an HTML page).
            django_request.axes_locked_out = False  # type: ignore[attr-defined]  # set by axes
            raise SignInLockedOut()
        if user is None:
            raise AuthenticationFailed("Unable to sign in with these credentials.")
        request.user = user
        # Knox deleted expired tokens on every request; with one query a request, it is done here.
        delete_expired_tokens()
        return super().post(request, format=format)

    def get_post_response_data(
        self, request: Request, token: str, instance: AuthToken
    ) -> dict[str, Any]:
        return {
            "token": token,
            "expiry": self.format_expiry_datetime(instance.expiry) if instance.expiry else None,
            "user": {"username": request.user.get_username(), "role": role_of(request.user)},
        }


class RevokeTokenView(LogoutView):
    authentication_classes = (TokenAuthentication,)

    @extend_schema(request=None, responses={204: None})
    def post(self, request: Request, format: str | None = None) -> Response:
        return super().post(request, format=format)


class RevokeAllTokensView(LogoutAllView):
    authentication_classes = (TokenAuthentication,)

    @extend_schema(request=None, responses={204: None})
    def post(self, request: Request, format: str | None = None) -> Response:
        return super().post(request, format=format)
