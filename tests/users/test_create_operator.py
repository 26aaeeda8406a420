"""manage.py create_operator: staff operators and read-only viewers without prompts."""

import io
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from knox.models import AuthToken
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def test_it_creates_a_staff_operator_with_the_password_from_stdin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-unusual-passphrase\n"))
    out = StringIO()
    call_command("create_operator", "alice", "--password-stdin", stdout=out)
    alice = User.objects.get(username="alice")
    assert alice.is_staff and alice.check_password("a-long-unusual-passphrase")
    assert "a-long-unusual-passphrase" not in out.getvalue()


def test_a_viewer_with_a_token_reads_but_cannot_sign_in_with_a_password() -> None:
    out = StringIO()
    call_command("create_operator", "bob", "--viewer", "--token", stdout=out)
    bob = User.objects.get(username="bob")
    assert not bob.is_staff and not bob.has_usable_password()
    token = out.getvalue().split("keep it secret): ")[1].strip()
    assert AuthToken.objects.filter(user=bob).count() == 1
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/users/").status_code == 200
    assert client.post("/api/users/002738", {"email": "a@example.org"}).status_code == 403


def test_it_refuses_a_weak_password_and_an_existing_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("123\n"))
    with pytest.raises(CommandError, match="too short"):
        call_command("create_operator", "carol", "--password-stdin", stdout=StringIO())
    assert not User.objects.filter(username="carol").exists()
    call_command("create_operator", "carol", stdout=StringIO())
    with pytest.raises(CommandError, match="exists already"):
        call_command("create_operator", "carol", stdout=StringIO())
