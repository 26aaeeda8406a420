"""Operator tokens: knox tokens (stored hashed, with expiry), sent as `Token …` or `Bearer …`.

Knox's own check costs three queries a request (the token, its user, and the user's other tokens
to delete expired ones). Here it is one query, and a token seen within the last
API_TOKEN_CACHE_SECONDS is accepted from memory: the latest-event endpoint is polled by dashboards
at high rates. Revoking a token, or deactivating or deleting its operator, drops it from this
process's memory at once; other web processes notice within API_TOKEN_CACHE_SECONDS. Expired
tokens are refused whatever the cache holds, and deleted by `delete_expired_tokens`.
"""

from __future__ import annotations

import binascii
import threading
import time
from dataclasses import dataclass
from hmac import compare_digest
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from knox.crypto import hash_token
from knox.models import AuthToken
from knox.settings import CONSTANTS
from rest_framework.authentication import get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

INVALID_TOKEN = "Invalid token."
SEED_PASSWORD_HINT = (
    "The ?pw= query parameter is no longer accepted. Obtain a token with "
    "POST /api/auth/token/ (username and password) and send it as 'Authorization: Token <token>'."
)


@dataclass(frozen=True, slots=True)
class _Accepted:
    user: Any
    auth_token: AuthToken
    until: float


class _RecentTokens:
    """Tokens accepted in the last few seconds, by digest, in this process."""

    def __init__(self) -> None:
        self._entries: dict[str, _Accepted] = {}
        self._lock = threading.Lock()

    def get(self, digest: str) -> _Accepted | None:
        entry = self._entries.get(digest)
        if entry is None or entry.until < time.monotonic():
            return None
        expiry = entry.auth_token.expiry
        if expiry is not None and expiry < timezone.now():
            self.forget(digest)
            return None
        return entry

    def remember(self, digest: str, user: Any, auth_token: AuthToken) -> None:
        seconds = settings.API_TOKEN_CACHE_SECONDS
        if seconds <= 0:
            return
        with self._lock:
            now = time.monotonic()
            # Bounded without a sweeper: stale entries go whenever a new one comes in.
            if len(self._entries) >= 1024:
                self._entries = {k: v for k, v in self._entries.items() if v.until >= now}
            self._entries[digest] = _Accepted(user, auth_token, now + seconds)

    def forget(self, digest: str) -> None:
        with self._lock:
            self._entries.pop(digest, None)

    def forget_user(self, user_pk: object) -> None:
        with self._lock:
            self._entries = {k: v for k, v in self._entries.items() if v.user.pk != user_pk}

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


recent_tokens = _RecentTokens()


class TokenAuthentication(KnoxTokenAuthentication):
    accepted_prefixes = (b"token", b"bearer")

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        if "pw" in request.query_params:
            # A password in the URL lands in access logs and browser history: refused outright,
            # even next to a valid token or session, so that no client keeps sending it.
            raise AuthenticationFailed(SEED_PASSWORD_HINT)
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() not in self.accepted_prefixes:
            return None
        if len(parts) != 2:
            return super().authenticate(request)
        return self.authenticate_credentials(parts[1])

    def authenticate_credentials(self, token: bytes) -> tuple[Any, AuthToken]:
        try:
            text = token.decode()
            digest = hash_token(text)
        except (UnicodeDecodeError, TypeError, binascii.Error, ValueError) as exc:
            raise AuthenticationFailed(INVALID_TOKEN) from exc
        accepted = recent_tokens.get(digest)
        if accepted is not None:
            return accepted.user, accepted.auth_token
        candidates = AuthToken.objects.select_related("user").filter(
            token_key=text[: CONSTANTS.TOKEN_KEY_LENGTH]
        )
        for auth_token in candidates:
            if not compare_digest(digest, auth_token.digest):
                continue
            if auth_token.expiry is not None and auth_token.expiry < timezone.now():
                auth_token.delete()
                break
            user, auth_token = self.validate_user(auth_token)
            recent_tokens.remember(digest, user, auth_token)
            return user, auth_token
        raise AuthenticationFailed(INVALID_TOKEN)


def delete_expired_tokens() -> int:
    """Delete tokens past their expiry (they are refused anyway); returns how many."""
    deleted, _ = AuthToken.objects.filter(expiry__lt=timezone.now()).delete()
    return deleted


@receiver(post_delete, sender=AuthToken, dispatch_uid="forget-revoked-token")
def _forget_revoked(sender: type, instance: AuthToken, **kwargs: Any) -> None:
    recent_tokens.forget(instance.digest)


@receiver(post_save, sender=get_user_model(), dispatch_uid="forget-changed-operator-tokens")
@receiver(post_delete, sender=get_user_model(), dispatch_uid="forget-deleted-operator-tokens")
def _forget_operator(sender: type, instance: Any, **kwargs: Any) -> None:
    recent_tokens.forget_user(instance.pk)
