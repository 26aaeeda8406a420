"""Rotation never wedges on a manifest row whose local file is gone: it settles the row from what
is known (the archived object, verified) or records the file missing with an incident that an
operator settles from the admin; and a writer never removes a file a rotation has claimed.

A kill is a BaseException raised by the step hook, which nothing in the rotation handles: like a
SIGKILL, it leaves rows, leases, objects and files exactly as they were at that point.
"""

import fcntl
import gzip
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.test import Client
from pytest_django.fixtures import Settings

from ingestion import hourfiles
from ingestion.archive import rotation
from ingestion.hourfiles import HourFileWriter
from ingestion.models import HourFile, HourFileState, Incident, IncidentState
from ingestion.records import FailureClass, Reading
from tests.factories import EagleUserFactory
from tests.hour_files import demand_readings, write

CLOUD_ID = "0001ba"
HOUR = datetime(2026, 12, 2, 2, tzinfo=UTC)
AFTER_CLOSE = HOUR + timedelta(hours=1, minutes=5)
LATE_1 = ".late-1."

pytestmark = pytest.mark.django_db


class SimulatedKill(BaseException):
    pass


def kill_after(step: rotation.Step, key_part: str) -> rotation.AfterStep:
    def hook(reached: rotation.Step, key: str) -> None:
        if reached == step and key_part in key:
            raise SimulatedKill(f"killed after {step}")

    return hook


def rotate_at(moment: datetime, **options: Any) -> rotation.RotationReport:
    with time_machine.travel(moment, tick=False):
        return rotation.rotate(**options)


def after_lease(moment: datetime, settings: Settings) -> datetime:
    """When a killed run's claims have lapsed."""
    return moment + timedelta(seconds=settings.ROTATE_LEASE_SECONDS + 1)


@pytest.fixture
def shipped_hour(db: None) -> Path:
    """An hour shipped and removed, so readings that come for it later go to late part 1."""
    EagleUserFactory(cloud_id=CLOUD_ID)
    write(demand_readings(CLOUD_ID, HOUR, 300))
    assert rotate_at(AFTER_CLOSE).shipped == 1
    return hourfiles.local_path(CLOUD_ID, HOUR, 1)


def late_readings(count: int = 20) -> list[Reading]:
    return demand_readings(CLOUD_ID, HOUR + timedelta(minutes=40), count)


@pytest.mark.parametrize("compress", [False, True])
def test_a_late_part_gone_after_its_upload_is_settled_verified_from_the_archive(
    settings: Settings, shipped_hour: Path, compress: bool
) -> None:
    settings.ARCHIVE_COMPRESS = "gzip" if compress else ""
    write(late_readings())
    data = shipped_hour.read_bytes()
    with pytest.raises(SimulatedKill):
        rotate_at(AFTER_CLOSE, after_step=kill_after(rotation.Step.UPLOADED, LATE_1))
    # The disk that held the file is lost before the next run.
    shipped_hour.unlink()

    report = rotate_at(after_lease(AFTER_CLOSE, settings))

    assert report.ok and report.already_archived == 1
    row = HourFile.objects.get(part=1)
    assert row.state == HourFileState.VERIFIED and row.local_deleted_at is not None
    stored = (Path(settings.ARCHIVE_ROOT) / row.key).read_bytes()
    assert (gzip.decompress(stored) if compress else stored) == data
    assert row.size == len(stored) and row.data_size == len(data)
    assert row.line_count == 20 and row.last_reading_at == HOUR + timedelta(minutes=40, seconds=114)
    assert row.newest_timestamps == {"demand": int(row.last_reading_at.timestamp())}


def test_a_late_part_gone_before_its_upload_is_recorded_missing_with_an_incident(
    settings: Settings, shipped_hour: Path
) -> None:
    write(late_readings())
    with pytest.raises(SimulatedKill):
        rotate_at(AFTER_CLOSE, after_step=kill_after(rotation.Step.SEALED, LATE_1))
    shipped_hour.unlink()

    later = after_lease(AFTER_CLOSE, settings)
    report = rotate_at(later)

    assert report.missing == 1 and not report.ok
    row = HourFile.objects.get(part=1)
    assert row.state == HourFileState.MISSING and "is gone" in row.last_error
    incident = Incident.objects.get()
    assert incident.failure_class == FailureClass.HOUR_FILE_MISSING
    assert incident.user.cloud_id == CLOUD_ID and incident.state == IncidentState.OPEN
    assert "hour 2026-12-02 02:00 UTC part 1" in incident.message
    assert row.key in incident.message and str(shipped_hour) in incident.message
    # Settled: no retry loop, no freshness alarm, and no working fetch resolves the incident.
    attempts = row.attempts
    assert rotate_at(later + timedelta(hours=2)).attempted == 0
    row.refresh_from_db()
    assert row.attempts == attempts
    assert HourFile.objects.oldest_unshipped() is None
    assert Incident.objects.open_pairs([incident.user_id]) == set()


def test_an_operator_puts_a_missing_file_back_and_ships_it_from_the_admin(
    settings: Settings, shipped_hour: Path, client: Client, operator: User
) -> None:
    write(late_readings())
    kept = shipped_hour.read_bytes()
    with pytest.raises(SimulatedKill):
        rotate_at(AFTER_CLOSE, after_step=kill_after(rotation.Step.CLAIMED, LATE_1))
    shipped_hour.unlink()
    later = after_lease(AFTER_CLOSE, settings)
    rotate_at(later)
    row = HourFile.objects.get(part=1)
    assert row.state == HourFileState.MISSING

    operator.is_superuser = True
    operator.save()
    client.force_login(operator)
    shipped_hour.write_bytes(kept)
    response = client.post(
        "/admin/ingestion/hourfile/",
        {"action": "retry", "_selected_action": [row.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert rotate_at(later + timedelta(minutes=1)).shipped == 1
    row.refresh_from_db()
    assert row.state == HourFileState.VERIFIED and row.line_count == 20

    incident = Incident.objects.get()
    response = client.post(
        "/admin/ingestion/incident/",
        {"action": "resolve", "_selected_action": [incident.pk]},
        follow=True,
    )
    incident.refresh_from_db()
    assert incident.state == IncidentState.RESOLVED and incident.resolved_by == operator


def test_a_late_part_gone_with_another_hours_object_at_its_key_is_a_conflict(
    settings: Settings, shipped_hour: Path
) -> None:
    write(late_readings())
    other = Path(settings.ARCHIVE_ROOT) / hourfiles.archive_key(CLOUD_ID, HOUR, 1)
    other.parent.mkdir(parents=True, exist_ok=True)
    foreign = b"".join(r.to_line() for r in demand_readings(CLOUD_ID, HOUR + timedelta(hours=3), 5))
    other.write_bytes(foreign)
    with pytest.raises(SimulatedKill):
        rotate_at(AFTER_CLOSE, after_step=kill_after(rotation.Step.SEALED, LATE_1))
    shipped_hour.unlink()

    report = rotate_at(after_lease(AFTER_CLOSE, settings))

    assert report.conflicts == 1
    row = HourFile.objects.get(part=1)
    assert row.state == HourFileState.CONFLICT and "another hour" in row.last_error
    assert other.read_bytes() == foreign


def blocked_on(path: Path) -> bool:
    """Whether some process waits for a lock on `path` (/proc/locks marks waiters with "->")."""
    inode = os.stat(path).st_ino
    with open("/proc/locks") as locks:
        return any("->" in line and f":{inode} " in line for line in locks)


def test_a_writer_leaves_an_empty_file_sealed_under_it_to_the_rotation(
    settings: Settings, shipped_hour: Path
) -> None:
    """The soak's wedge: on a full disk a writer's append to late-1 fails and leaves it empty; a
    rotation claims it and seals it while the writer, past its first look at the marker, waits
    for the lock. The writer used to remove the empty file, leaving the claimed row without it."""
    shipped_hour.touch()  # what a failed append on a full disk leaves
    with pytest.raises(SimulatedKill):
        rotate_at(AFTER_CLOSE, after_step=kill_after(rotation.Step.CLAIMED, LATE_1))

    # The seal, as hourfiles.seal makes it, with a writer waiting for the lock meanwhile.
    seal_fd = os.open(shipped_hour, os.O_RDONLY)
    fcntl.flock(seal_fd, fcntl.LOCK_EX)
    written = []

    def append_late_readings() -> None:
        with HourFileWriter() as writer:
            written.extend(writer.append(late_readings()).written)

    writer = threading.Thread(target=append_late_readings)
    writer.start()
    deadline = time.monotonic() + 30
    while not blocked_on(shipped_hour) and time.monotonic() < deadline:
        time.sleep(0.01)
    hourfiles.sealed_marker(shipped_hour).touch()
    fcntl.flock(seal_fd, fcntl.LOCK_UN)
    os.close(seal_fd)
    writer.join(30)

    assert [file.part for file in written] == [2]
    assert shipped_hour.exists()
    report = rotate_at(after_lease(AFTER_CLOSE, settings))
    assert report.ok and report.empty == 1 and report.shipped == 1
    assert not HourFile.objects.exclude(state=HourFileState.VERIFIED).exists()
    assert HourFile.objects.get(part=2).line_count == 20
