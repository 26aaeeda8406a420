"""Key rotation: prepend a key, run reencrypt_secrets, drop the old key, passwords still read."""

from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection
from pytest_django.fixtures import Settings

from tests.factories import EagleUserFactory
from users.crypto import reencrypt_row
from users.models import EagleUser

pytestmark = pytest.mark.django_db


def stored_token(cloud_id: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT eagle_password FROM users_eagleuser WHERE cloud_id = %s", [cloud_id])
        return cursor.fetchone()[0]


def test_rotation_moves_every_secret_to_the_new_key(settings: Settings) -> None:
    old_key = settings.FIELD_ENCRYPTION_KEYS[0]
    for n in range(3):
        EagleUserFactory(cloud_id=f"00000{n}", eagle_password=f"secret-{n}")
    new_key = Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [new_key, old_key]

    out = StringIO()
    call_command("reencrypt_secrets", stdout=out)

    assert "users.EagleUser.eagle_password: 3 re-encrypted, 0 already under the first key" in (
        out.getvalue()
    )
    new_only = Fernet(new_key.encode())
    assert new_only.decrypt(stored_token("000001").encode()) == b"secret-1"
    settings.FIELD_ENCRYPTION_KEYS = [new_key]
    assert [u.eagle_password for u in EagleUser.objects.order_by("cloud_id")] == [
        "secret-0",
        "secret-1",
        "secret-2",
    ]
    out = StringIO()
    call_command("reencrypt_secrets", stdout=out)
    assert "0 re-encrypted, 3 already under the first key" in out.getvalue()


def test_it_leaves_alone_a_password_changed_after_it_was_read(settings: Settings) -> None:
    user = EagleUserFactory(cloud_id="000001", eagle_password="old-password")
    token_read = stored_token("000001")
    settings.FIELD_ENCRYPTION_KEYS = [
        Fernet.generate_key().decode(),
        *settings.FIELD_ENCRYPTION_KEYS,
    ]
    # An operator sets a new password between the read and the conditional write.
    user.eagle_password = "new-password"
    user.save(update_fields=["eagle_password"])

    assert not reencrypt_row(EagleUser, "eagle_password", user.pk, token_read)
    assert EagleUser.objects.get(pk=user.pk).eagle_password == "new-password"


def test_a_secret_no_key_can_read_stops_with_a_message_naming_the_setting(
    settings: Settings,
) -> None:
    EagleUserFactory(cloud_id="000001", eagle_password="secret")
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(ImproperlyConfigured, match="FIELD_ENCRYPTION_KEYS"):
        call_command("reencrypt_secrets", stdout=StringIO())
