"""A hexadecimal cloud_id names one gateway whatever its case: every door (API paths and bodies,
import, push, admin, commands) reaches the one lower-case user, files and keys use the lower-case
id, and case variants created before are folded without losing a reading."""

import json
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path

import pytest
import time_machine
from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.management import call_command
from django.db import connection
from django.test import Client

from ingestion import hourfiles
from ingestion.case_duplicates import fold_case_variants
from ingestion.models import HourFile
from tests.api.test_users_api import client_with_token
from tests.factories import EagleUserFactory, HourFileFactory
from tests.push_uploads import fragment, uploader_xml
from users.checks import check_cloud_id_case_variants
from users.cloud_ids import normalise_cloud_id
from users.models import ConnectionType, EagleUser

pytestmark = pytest.mark.django_db

HOUR = datetime(2026, 3, 1, 12, tzinfo=UTC)


@pytest.fixture(autouse=True)
def fresh_throttle() -> None:
    cache.clear()


def test_it_keeps_cloud_ids_in_lower_case_and_refuses_what_is_not_one() -> None:
    assert normalise_cloud_id("00AA02") == "00aa02"
    assert normalise_cloud_id("0000a2") == "0000a2"
    for bad in ("", "00-27", "0x12", "g1", "1" * 33, "00aa02\n"):
        with pytest.raises(ValueError):
            normalise_cloud_id(bad)


def test_the_api_creates_one_user_for_two_cases_and_finds_it_by_either(operator: User) -> None:
    api = client_with_token(operator)

    first = api.post("/api/users/00aa02", {"user_email": "a@example.org", "user_pw": "pw-one"})
    second = api.post(
        "/api/users/00AA02",
        {"cloud_id": "00Aa02", "user_email": "b@example.org", "user_pw": "pw-two"},
        format="json",
    )

    assert first.status_code == 201
    assert second.status_code == 200, second.json()
    assert second.json()["cloud_id"] == "00aa02"
    assert EagleUser.objects.count() == 1
    assert EagleUser.objects.get().email == "b@example.org"
    found = api.get("/api/users/00AA02")
    assert found.status_code == 200 and found.json()["cloud_id"] == "00aa02"
    coverage = api.get(
        "/api/users/00AA02/coverage",
        {"start": "2026-03-01T12:00:00Z", "end": "2026-03-01T13:00:00Z"},
    )
    assert coverage.status_code == 200 and coverage.json()["cloud_id"] == "00aa02"


def test_an_upper_case_user_is_created_in_lower_case_and_named_so_everywhere(
    operator: User,
) -> None:
    api = client_with_token(operator)

    created = api.post("/api/users/0000A2", {"user_email": "c@example.org", "user_pw": "pw"})

    assert created.status_code == 201
    assert created.json()["cloud_id"] == "0000a2"
    assert EagleUser.objects.filter(cloud_id="0000a2").exists()
    assert EagleUser.objects.filter(cloud_id="0000A2").get().cloud_id == "0000a2"


def test_an_import_of_two_cases_makes_one_user(tmp_path: Path) -> None:
    lines = [
        {"cloud_id": "0000a2", "user_email": "one@example.org", "user_pw": "pw-one"},
        {"cloud_id": "0000A2", "user_email": "two@example.org", "user_pw": "pw-two"},
    ]
    path = tmp_path / "users.jl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))

    out = StringIO()
    call_command("import_users", str(path), stdout=out)

    assert "line 2: 0000a2 updated" in out.getvalue()
    assert list(EagleUser.objects.values_list("cloud_id", "email")) == [
        ("0000a2", "two@example.org")
    ]


def test_a_push_to_an_upper_case_path_lands_in_the_lower_case_users_file() -> None:
    moment = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    user = EagleUserFactory(cloud_id="00a1b2", connection_type=ConnectionType.PUSH)
    token = user.issue_push_token()
    body = uploader_xml(fragment("demand", int(moment.timestamp()), (1234,)), sent_at=0)

    with time_machine.travel(moment, tick=False):
        response = Client().post(
            "/api/push/00A1B2",
            data=body,
            content_type="application/x-www-form-urlencoded",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )

    assert response.status_code == 202, response.json()
    assert response.json()["cloud_id"] == "00a1b2"
    hour_file = hourfiles.local_path("00a1b2", hourfiles.hour_floor(moment))
    assert hour_file.exists()
    assert json.loads(hour_file.read_text())["cloud_id"] == "00a1b2"
    assert not list(Path(settings.LOG_ROOT).rglob("*00A1B2*"))


def test_the_admin_refuses_a_case_variant_of_an_existing_user(admin_client: Client) -> None:
    EagleUserFactory(cloud_id="00aa02")

    response = admin_client.post(
        "/admin/users/eagleuser/add/",
        {"cloud_id": "00AA02", "connection_type": ConnectionType.CLOUD, "is_active": "on"},
    )

    assert response.status_code == 200
    assert "already exists" in response.content.decode()
    assert EagleUser.objects.count() == 1


def test_commands_find_the_user_by_any_case() -> None:
    EagleUserFactory(cloud_id="00aa02", connection_type=ConnectionType.PUSH)
    out = StringIO()

    call_command("push_token", "00AA02", "--issue", stdout=out)

    assert "Push token of 00aa02" in out.getvalue()


def test_hour_files_and_archive_keys_use_the_lower_case_id() -> None:
    assert hourfiles.file_name("00AA02", HOUR) == "iseif-rainforest-00aa02-2026-03-01-12.jl"
    assert "/00aa02/2026/03/01/iseif-rainforest-00aa02-" in "/" + hourfiles.archive_key(
        "00AA02", HOUR
    )
    assert hourfiles.local_path("00AA02", HOUR) == hourfiles.local_path("00aa02", HOUR)


# --- Case variants created before cloud_ids were kept in lower case -------------------------


def store_as_written_before(model: type, pk: int, cloud_id: str) -> None:
    """Give a row a cloud_id in upper case, as rainlog could store it before."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {model._meta.db_table} SET cloud_id = %s WHERE id = %s",  # noqa: S608
            [cloud_id, pk],
        )


def old_user(cloud_id: str, **fields: object) -> EagleUser:
    user = EagleUserFactory(cloud_id=cloud_id.lower() + "ff", **fields)
    store_as_written_before(EagleUser, user.pk, cloud_id)
    return EagleUser.objects.get(pk=user.pk)


def old_hour_file(user: EagleUser, lines: list[str], state: str = "open") -> HourFile:
    cloud_id = user.cloud_id
    local = (
        Path(settings.LOG_ROOT)
        / hourfiles.hour_label(HOUR)
        / (f"iseif-rainforest-{cloud_id}-{hourfiles.hour_label(HOUR)}.jl")
    )
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_text("".join(line + "\n" for line in lines))
    row = HourFileFactory(
        user=user,
        cloud_id=cloud_id.lower() + "ff",
        hour=HOUR,
        state=state,
        local_path=str(local),
        key=f"{cloud_id}/2026/03/01/{local.name}",
    )
    store_as_written_before(HourFile, row.pk, cloud_id)
    return HourFile.objects.get(pk=row.pk)


def raw_cloud_ids(model: type) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT cloud_id FROM {model._meta.db_table} ORDER BY id")  # noqa: S608
        return [cloud_id for (cloud_id,) in cursor.fetchall()]


def test_folding_keeps_the_variant_with_readings_under_the_lower_case_id() -> None:
    holder = old_user("00AA02", email="original@example.org")
    row = old_hour_file(holder, ['{"reading": 1}', '{"reading": 2}'])
    EagleUserFactory(cloud_id="00aa02", email="duplicate@example.org")

    report = fold_case_variants(EagleUser, HourFile, log=lambda line: None)

    assert report.unresolved == []
    assert raw_cloud_ids(EagleUser) == ["00aa02"]
    assert EagleUser.objects.get().email == "original@example.org"
    row.refresh_from_db()
    assert raw_cloud_ids(HourFile) == ["00aa02"]
    assert row.key == hourfiles.archive_key("00aa02", HOUR)
    moved = hourfiles.local_path("00aa02", HOUR)
    assert row.local_path == str(moved)
    assert moved.read_text() == '{"reading": 1}\n{"reading": 2}\n'
    assert not list(Path(settings.LOG_ROOT).rglob("*00AA02*"))


def test_an_archived_file_keeps_its_key_when_its_user_is_renamed() -> None:
    holder = old_user("00AB03")
    row = old_hour_file(holder, ['{"reading": 1}'], state="verified")

    fold_case_variants(EagleUser, HourFile, log=lambda line: None)

    row.refresh_from_db()
    assert raw_cloud_ids(EagleUser) == ["00ab03"]
    assert row.cloud_id == "00ab03"
    assert row.key == "00AB03/2026/03/01/iseif-rainforest-00AB03-2026-03-01-12.jl"


def test_variants_that_both_hold_readings_are_reported_and_not_merged() -> None:
    upper = old_user("00AC04")
    old_hour_file(upper, ['{"reading": "upper"}'])
    lower = EagleUserFactory(cloud_id="00ac04")
    HourFileFactory(user=lower, hour=HOUR)
    hourfiles.local_path("00ac04", HOUR).write_text('{"reading": "lower"}\n')
    lines: list[str] = []

    report = fold_case_variants(EagleUser, HourFile, log=lines.append)

    assert len(report.unresolved) == 1
    assert any(line.startswith("NOT MERGED: 00ac04") for line in lines)
    assert sorted(raw_cloud_ids(EagleUser)) == ["00AC04", "00ac04"]
    upper.refresh_from_db()
    lower.refresh_from_db()
    assert lower.is_active and not upper.is_active
    assert "00AC04, 00ac04" in upper.suspended_reason
    uppercase_file = (
        Path(settings.LOG_ROOT)
        / hourfiles.hour_label(HOUR)
        / (f"iseif-rainforest-00AC04-{hourfiles.hour_label(HOUR)}.jl")
    )
    assert uppercase_file.read_text() == '{"reading": "upper"}\n'
    assert hourfiles.local_path("00ac04", HOUR).read_text() == '{"reading": "lower"}\n'
    (warning,) = check_cloud_id_case_variants(databases=["default"])
    assert warning.id == "users.W001" and "00AC04" in warning.msg
