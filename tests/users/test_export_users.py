"""manage.py export_users: the seed's format, passwords only when asked for explicitly."""

import json
import stat
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from ingestion.models import FetchState
from tests.factories import EagleUserFactory
from users.models import ConnectionType, EagleUser

pytestmark = pytest.mark.django_db


@pytest.fixture
def users() -> None:
    krum = EagleUserFactory(
        cloud_id="002738", email="viktor.krum@durmstrang.edu", eagle_password="1234567"
    )
    FetchState.objects.create(
        user=krum,
        total_events_logged=2725,
        first_timestamp=1443274732.39435,
        last_timestamp=1443277732.933939,
    )
    EagleUserFactory(
        cloud_id="00a1f0",
        email="",
        eagle_password="install-code-42",
        connection_type=ConnectionType.EAGLE200,
        gateway_address="192.168.1.20",
    )


def export(*args: str) -> tuple[list[dict], str]:
    out, err = StringIO(), StringIO()
    call_command("export_users", *args, stdout=out, stderr=err)
    return [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


def test_it_writes_the_apis_field_names_without_passwords_by_default(users: None) -> None:
    records, err = export()
    assert [r["cloud_id"] for r in records] == ["002738", "00a1f0"]
    assert records[0] == {
        "cloud_id": "002738",
        "email": "viktor.krum@durmstrang.edu",
        "total_events_logged": 2725,
        "first_timestamp": 1443274732.39435,
        "last_timestamp": 1443277732.933939,
        "connection_type": "cloud",
        "gateway_address": "",
        "meter_mac": "",
        "is_active": True,
        "suspended_reason": "",
    }
    assert all("eagle_password" not in r for r in records)
    assert "Exported 2 users." in err


def test_it_includes_passwords_only_with_the_explicit_option(users: None) -> None:
    records, err = export("--with-passwords")
    assert [r["eagle_password"] for r in records] == ["1234567", "install-code-42"]
    assert "passwords in clear" in err


def test_a_password_file_is_readable_by_its_owner_only(users: None, tmp_path: Path) -> None:
    target = tmp_path / "backup.jl"
    call_command(
        "export_users",
        "--with-passwords",
        "--output",
        str(target),
        stdout=StringIO(),
        stderr=StringIO(),
    )
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert len(target.read_text().splitlines()) == 2
    assert not list(tmp_path.glob(".*.partial"))


def test_an_export_with_passwords_imports_back_into_an_empty_database(
    users: None, tmp_path: Path
) -> None:
    target = tmp_path / "backup.jl"
    call_command(
        "export_users", "--with-passwords", "-o", str(target), stdout=StringIO(), stderr=StringIO()
    )
    before = list(
        EagleUser.objects.values("cloud_id", "email", "connection_type", "gateway_address")
    )
    EagleUser.objects.all().delete()

    call_command("import_users", str(target), stdout=StringIO())

    assert (
        list(EagleUser.objects.values("cloud_id", "email", "connection_type", "gateway_address"))
        == before
    )
    assert EagleUser.objects.get(cloud_id="00a1f0").eagle_password == "install-code-42"
    assert FetchState.objects.get(user__cloud_id="002738").total_events_logged == 2725
