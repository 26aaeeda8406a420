from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from rest_framework.authentication import get_authorization_header
from rest_framework.request import Request


class TokenAuthentication(KnoxTokenAuthentication):
    """Knox tokens (stored hashed, with expiry), sent as `Authorization: Token …` or `Bearer …`."""

    accepted_prefixes = (b"token", b"bearer")

    def authenticate(self, request: Request):  # type: ignore[no-untyped-def]
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() not in self.accepted_prefixes:
            return None
        if len(parts) != 2:
            return super().authenticate(request)
        return self.authenticate_credentials(parts[1])
