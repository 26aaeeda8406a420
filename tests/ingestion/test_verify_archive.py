"""manage.py verify_archive: the manifest against the bucket and the local disk."""

from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError
from pytest_django.fixtures import Settings

from ingestion import hourfiles
from ingestion.archive import rotation
from ingestion.models import HourFile, HourFileState
from tests.hour_files import demand_readings, write

HOUR = datetime(2026, 3, 8, 9, tzinfo=UTC)
AFTER_CLOSE = HOUR + timedelta(hours=1, minutes=5)

pytestmark = pytest.mark.django_db


def ship(*cloud_ids: str, hour: datetime = HOUR) -> None:
    for cloud_id in cloud_ids:
        write(demand_readings(cloud_id, hour, 10))
    with time_machine.travel(hour + timedelta(hours=1, minutes=5), tick=False):
        assert rotation.rotate().ok


def verify(*args: str) -> tuple[str, CommandError | None]:
    out = StringIO()
    try:
        with time_machine.travel(AFTER_CLOSE + timedelta(hours=1), tick=False):
            call_command("verify_archive", *args, stdout=out)
    except CommandError as exc:
        return out.getvalue(), exc
    return out.getvalue(), None


def test_a_faithful_archive_passes(s3_archive: str) -> None:
    ship("0001", "0002")
    output, error = verify()
    assert error is None
    assert "2 verified files checked against the archive" in output and "no problems" in output


def test_it_finds_an_object_changed_behind_its_back(s3_archive: str, s3_client: Any) -> None:
    ship("0001", "0002")
    changed = hourfiles.archive_key("0002", HOUR)
    original = s3_client.get_object(Bucket=s3_archive, Key=changed)["Body"].read()
    # Same size, one byte different, written without a checksum the way another tool would.
    s3_client.put_object(Bucket=s3_archive, Key=changed, Body=original[:-2] + b"X\n")

    output, error = verify()

    assert error is not None and error.returncode == 1
    assert f"MISMATCHED {changed}: SHA-256" in output
    assert "1 mismatched" in output and hourfiles.archive_key("0001", HOUR) not in output


def test_it_finds_a_missing_object_and_a_size_change(s3_archive: str, s3_client: Any) -> None:
    ship("0001", "0002")
    s3_client.delete_object(Bucket=s3_archive, Key=hourfiles.archive_key("0001", HOUR))
    s3_client.put_object(
        Bucket=s3_archive, Key=hourfiles.archive_key("0002", HOUR), Body=b"short\n"
    )

    output, error = verify()

    assert error is not None
    assert f"MISSING {hourfiles.archive_key('0001', HOUR)}" in output
    assert f"MISMATCHED {hourfiles.archive_key('0002', HOUR)}: 6 bytes" in output


def test_it_finds_objects_the_manifest_does_not_know(s3_archive: str, s3_client: Any) -> None:
    ship("0001")
    stray = "rainforest-logs/0003/2026/03/08/iseif-rainforest-0003-2026-03-08-09.jl"
    s3_client.put_object(Bucket=s3_archive, Key=stray, Body=b"{}\n")
    s3_client.put_object(Bucket=s3_archive, Key="outside-the-prefix/x.jl", Body=b"{}\n")

    output, error = verify()

    assert error is not None
    assert f"ORPHANED {stray}" in output
    assert "outside-the-prefix" not in output


def test_since_limits_the_audit_to_later_hours(s3_archive: str, s3_client: Any) -> None:
    earlier = HOUR - timedelta(hours=3)
    ship("0001", hour=earlier)
    ship("0001")
    s3_client.delete_object(Bucket=s3_archive, Key=hourfiles.archive_key("0001", earlier))

    output, error = verify("--since", "2026-03-08-09")
    assert error is None and "1 verified files checked" in output

    _, error = verify("--since", "2026-03-08")
    assert error is not None

    output, error = verify("--since", "2026-03-08T09:00Z")
    assert error is None and "1 verified files checked" in output


def test_it_finds_an_unshipped_file_gone_from_disk(s3_archive: str) -> None:
    write(demand_readings("0001", HOUR, 3))
    local = hourfiles.local_path("0001", HOUR)
    HourFile.objects.create(
        cloud_id="0001",
        hour=HOUR,
        state=HourFileState.FAILED,
        local_path=str(local),
        key=hourfiles.archive_key("0001", HOUR),
    )
    local.unlink()

    output, error = verify()

    assert error is not None
    assert f"LOCAL-MISSING {hourfiles.archive_key('0001', HOUR)}: failed" in output


def test_it_audits_the_local_file_system_archive_too(settings: Settings) -> None:
    ship("0001")
    stored = Path(settings.ARCHIVE_ROOT) / hourfiles.archive_key("0001", HOUR)
    stored.write_bytes(stored.read_bytes().replace(b"1", b"2"))

    output, error = verify()

    assert error is not None and "MISMATCHED" in output


def test_a_bad_since_is_refused_in_one_line() -> None:
    with pytest.raises(CommandError, match="--since: 'garbage' is not a time") as refused:
        call_command("verify_archive", "--since", "garbage")
    assert "\n" not in str(refused.value)
