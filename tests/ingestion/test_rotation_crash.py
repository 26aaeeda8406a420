"""A rotation killed between any two steps is finished by the next run: one correct object each.

The crash is a BaseException raised by the step hook, which nothing in the rotation handles: like
a SIGKILL, it leaves rows, leases, objects and files exactly as they were at that point.
"""

import gzip
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from pytest_django.fixtures import Settings

from ingestion import hourfiles
from ingestion.archive import rotation
from ingestion.models import HourFile, HourFileState
from tests.hour_files import demand_readings, write

HOUR = datetime(2026, 3, 8, 9, tzinfo=UTC)
AFTER_CLOSE = HOUR + timedelta(hours=1, minutes=5)
USERS = ("002738", "0abc")

pytestmark = pytest.mark.django_db


class SimulatedCrash(BaseException):
    pass


@pytest.fixture(params=["s3", "local-gzip"])
def archive_bytes(request: pytest.FixtureRequest, settings: Settings) -> Any:
    """Which archive the test ships to, and how to read back every object in it."""
    if request.param == "s3":
        bucket = request.getfixturevalue("s3_archive")
        client = request.getfixturevalue("s3_client")

        def read_all() -> dict[str, bytes]:
            listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
            return {
                o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
                for o in listed
            }

        return read_all
    settings.ARCHIVE_COMPRESS = "gzip"
    root = Path(settings.ARCHIVE_ROOT)

    def read_local() -> dict[str, bytes]:
        return {
            p.relative_to(root).as_posix(): gzip.decompress(p.read_bytes())
            for p in root.rglob("*")
            if p.is_file()
        }

    return read_local


def crash_after(step: rotation.Step, key_part: str) -> rotation.AfterStep:
    def hook(reached: rotation.Step, key: str) -> None:
        if reached == step and key_part in key:
            raise SimulatedCrash(f"killed after {step}")

    return hook


@pytest.mark.parametrize("step", list(rotation.Step))
def test_a_run_killed_after_any_step_is_finished_by_the_next(
    settings: Settings, archive_bytes: Any, step: Any
) -> None:
    originals = {}
    for cloud_id in USERS:
        write(demand_readings(cloud_id, HOUR, 50))
        originals[cloud_id] = hourfiles.local_path(cloud_id, HOUR).read_bytes()

    with time_machine.travel(AFTER_CLOSE, tick=False), pytest.raises(SimulatedCrash):
        rotation.rotate(after_step=crash_after(step, "002738"))

    # The next run comes after the dead run's lease has lapsed.
    later = AFTER_CLOSE + timedelta(seconds=settings.ROTATE_LEASE_SECONDS + 1)
    with time_machine.travel(later, tick=False):
        report = rotation.rotate()
    assert report.ok and report.conflicts == 0

    stored = archive_bytes()
    assert sorted(stored) == sorted(
        hourfiles.archive_key(c, HOUR, compressed=settings.ARCHIVE_COMPRESS == "gzip")
        for c in USERS
    )
    for cloud_id in USERS:
        row = HourFile.objects.get(cloud_id=cloud_id)
        assert stored[row.key] == originals[cloud_id]
        assert row.state == HourFileState.VERIFIED
        assert row.local_deleted_at is not None and row.claimed_until is None
        assert not hourfiles.local_path(cloud_id, HOUR).exists()
        assert hourfiles.sealed_marker(hourfiles.local_path(cloud_id, HOUR)).exists()


def test_a_run_that_dies_while_holding_a_lease_blocks_nobody_after_it_lapses(
    settings: Settings, s3_archive: str
) -> None:
    write(demand_readings("002738", HOUR, 5))
    with time_machine.travel(AFTER_CLOSE, tick=False), pytest.raises(SimulatedCrash):
        rotation.rotate(after_step=crash_after(rotation.Step.CLAIMED, ""))
    row = HourFile.objects.get()
    assert row.state == HourFileState.UPLOADING and row.claimed_until > AFTER_CLOSE

    # While the lease holds, another run keeps off the file.
    with time_machine.travel(AFTER_CLOSE + timedelta(minutes=1), tick=False):
        assert rotation.rotate().shipped == 0
    assert HourFile.objects.get().state == HourFileState.UPLOADING

    with time_machine.travel(row.claimed_until + timedelta(seconds=1), tick=False):
        assert rotation.rotate().shipped == 1
    assert HourFile.objects.get().attempts == 2
