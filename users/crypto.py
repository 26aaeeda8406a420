"""Encryption at rest for EAGLE passwords: Fernet (AES-128-CBC + HMAC-SHA256) with key rotation.

FIELD_ENCRYPTION_KEYS lists Fernet keys; the first encrypts, every one decrypts, so a new key can be
prepended, `manage.py reencrypt_secrets` run, and the old key dropped afterwards.
"""

from collections.abc import Callable
from functools import cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.db.models.functions import Cast

REENCRYPT_BATCH = 500
UNDECRYPTABLE = (
    "A stored secret cannot be decrypted with any key in FIELD_ENCRYPTION_KEYS: "
    "was a key removed before `manage.py reencrypt_secrets` ran?"
)


@cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except ValueError:
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEYS holds a value that is not a Fernet key (32 url-safe base64 bytes)."
        ) from None


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.FIELD_ENCRYPTION_KEYS))


def is_current(token: str) -> bool:
    """Whether `token` is encrypted under the first (newest) key already."""
    try:
        _fernet(tuple(settings.FIELD_ENCRYPTION_KEYS[:1])).decrypt(token.encode())
    except InvalidToken:
        return False
    return True


def encrypt(plaintext: str) -> str:
    return fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ImproperlyConfigured(UNDECRYPTABLE) from None


def rotate(token: str) -> str:
    """The same secret, encrypted again under the first (newest) key."""
    try:
        return fernet().rotate(token.encode()).decode()
    except InvalidToken:
        raise ImproperlyConfigured(UNDECRYPTABLE) from None


class EncryptedTextField(models.TextField):
    """A text column stored as a Fernet token; Python code sees the plaintext."""

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if value is None or value == "":
            return value
        return decrypt(value)

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return encrypt(value)


def encrypted_fields() -> list[tuple[type[models.Model], str]]:
    """Every (model, field name) stored through EncryptedTextField."""
    return [
        (model, field.name)
        for model in apps.get_models()
        for field in model._meta.concrete_fields
        if isinstance(field, EncryptedTextField)
    ]


def _with_ciphertext(model: type[models.Model], field_name: str) -> models.QuerySet:
    # Cast to a plain text column: the stored token, not decrypted by EncryptedTextField.
    return model._default_manager.annotate(ciphertext=Cast(field_name, models.TextField()))


def reencrypt_row(model: type[models.Model], field_name: str, pk: object, token: str) -> bool:
    """Replace `token` by the same secret under the first key, if the row still holds `token`.

    False when the row changed since `token` was read (a new value is under the first key
    already) or is gone.
    """
    new_token = models.Value(rotate(token), output_field=models.TextField())
    rows = _with_ciphertext(model, field_name).filter(pk=pk, ciphertext=token)
    return rows.update(**{field_name: new_token}) == 1


def reencrypt_field(
    model: type[models.Model],
    field_name: str,
    should_stop: Callable[[], bool] = lambda: False,
) -> tuple[int, int]:
    """Encrypt every stored value of the field again under the first key, batch by batch.

    Returns (re-encrypted, already current). Values are handled as ciphertext only, never loaded
    into a model; `should_stop` is asked between batches.
    """
    rows = (
        _with_ciphertext(model, field_name).exclude(ciphertext="").exclude(ciphertext__isnull=True)
    )
    rotated = current = 0
    last_pk = None
    while not should_stop():
        batch = rows.order_by("pk") if last_pk is None else rows.filter(pk__gt=last_pk)
        pairs = list(batch.order_by("pk").values_list("pk", "ciphertext")[:REENCRYPT_BATCH])
        if not pairs:
            break
        for pk, token in pairs:
            if is_current(token):
                current += 1
            elif reencrypt_row(model, field_name, pk, token):
                rotated += 1
        last_pk = pairs[-1][0]
    return rotated, current
