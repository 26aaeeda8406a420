"""The client's address, as throttles and the sign-in lockout count it.

Only the last TRUSTED_PROXY_COUNT entries of X-Forwarded-For were written by proxies rainlog
trusts; anything before them is the client's own say. With 0 (the default) the address is the
connection's, REMOTE_ADDR. DRF's throttles apply the same rule (NUM_PROXIES is set from the same
setting); this is the one django-axes calls.
"""

from django.http import HttpRequest
from rest_framework.throttling import BaseThrottle


def client_address(request: HttpRequest) -> str:
    # get_ident reads only request.META, which a plain Django request has as well as DRF's.
    return BaseThrottle().get_ident(request) or ""  # type: ignore[arg-type]
