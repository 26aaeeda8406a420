"""Encryption keys: a bad key is named by `manage.py check`; the development key works."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import override_settings
from pytest_django.fixtures import Settings

from users.checks import check_field_encryption_keys
from users.crypto import decrypt, encrypt

PROJECT_DIR = Path(__file__).resolve().parents[2]


def test_the_check_names_each_key_that_is_not_a_fernet_key(settings: Settings) -> None:
    good = settings.FIELD_ENCRYPTION_KEYS[0]
    with override_settings(FIELD_ENCRYPTION_KEYS=[good, "not-a-key"]):
        errors = check_field_encryption_keys()
    assert [e.id for e in errors] == ["users.E001"]
    assert "Key 2 of FIELD_ENCRYPTION_KEYS" in errors[0].msg
    assert check_field_encryption_keys() == []


def test_a_debug_run_without_keys_can_store_and_read_a_password(tmp_path: Path) -> None:
    script = (
        "import django; django.setup()\n"
        "from users.crypto import encrypt, decrypt\n"
        "assert decrypt(encrypt('1234567')) == '1234567'\n"
        "from django.core.management import call_command; call_command('check')\n"
    )
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "VAR_DIR": str(tmp_path / "var"),
        "RAINLOG_ENV_FILE": str(tmp_path / "no.env"),
        "DJANGO_SETTINGS_MODULE": "rainlog.settings",
        "DEBUG": "1",
    }
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("secret", ["1234567", "pässwörd with spaces ", "x" * 500])
def test_a_secret_survives_the_round_trip(secret: str) -> None:
    token = encrypt(secret)
    assert secret not in token
    assert decrypt(token) == secret
