"""Rotation ships every closed hour file once, verified, and only then removes it from disk."""

import dataclasses
import gzip
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from pytest_django.fixtures import Settings

from ingestion import hourfiles
from ingestion.archive import rotation
from ingestion.models import HourFile, HourFileState
from tests.factories import EagleUserFactory
from tests.hour_files import demand_readings, write

HOUR = datetime(2026, 3, 8, 9, tzinfo=UTC)
# Just after HOUR closed, grace period included.
AFTER_CLOSE = HOUR + timedelta(hours=1, minutes=5)

pytestmark = pytest.mark.django_db


def object_bytes(s3_client: Any, bucket: str, key: str) -> bytes:
    return s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()


def keys_in(s3_client: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket).get("Contents", [])]


def rotate_at(moment: datetime, **options: Any) -> rotation.RotationReport:
    with time_machine.travel(moment, tick=False):
        return rotation.rotate(**options)


def test_it_ships_a_closed_hour_to_its_key_verified_and_removes_the_local_file(
    s3_archive: str, s3_client: Any
) -> None:
    user = EagleUserFactory(cloud_id="002738")
    write(demand_readings("002738", HOUR, 600))
    local = hourfiles.local_path("002738", HOUR)
    data = local.read_bytes()

    report = rotate_at(AFTER_CLOSE)

    key = "rainforest-logs/002738/2026/03/08/iseif-rainforest-002738-2026-03-08-09.jl"
    assert keys_in(s3_client, s3_archive) == [key]
    assert object_bytes(s3_client, s3_archive, key) == data
    head = s3_client.head_object(Bucket=s3_archive, Key=key)
    assert head["ContentType"] == "application/x-ndjson"
    row = HourFile.objects.get()
    assert (row.state, row.key, row.user, row.part) == (HourFileState.VERIFIED, key, user, 0)
    assert row.size == row.data_size == len(data)
    assert row.sha256 == row.data_sha256 == hashlib.sha256(data).hexdigest()
    assert row.line_count == 600 and row.malformed_lines == 0
    assert row.first_reading_at == HOUR
    assert row.last_reading_at == HOUR + timedelta(seconds=599 * 6)
    assert row.verified_at is not None and row.local_deleted_at is not None
    assert not local.exists()
    # The marker outlives the file, so a late reading never recreates the shipped name.
    assert hourfiles.sealed_marker(local).exists()
    assert (report.shipped, report.failed, report.conflicts) == (1, 0, 0)


def test_it_leaves_the_current_hour_and_the_grace_period_alone(
    s3_archive: str, s3_client: Any
) -> None:
    write(demand_readings("002738", HOUR, 5))
    write(demand_readings("002738", HOUR + timedelta(hours=1), 5))

    rotate_at(HOUR + timedelta(hours=1, seconds=30))
    assert keys_in(s3_client, s3_archive) == []
    assert not hourfiles.is_sealed(hourfiles.local_path("002738", HOUR))

    rotate_at(AFTER_CLOSE)
    assert [k.rsplit("-", 1)[-1] for k in keys_in(s3_client, s3_archive)] == ["09.jl"]
    assert hourfiles.local_path("002738", HOUR + timedelta(hours=1)).exists()


def test_it_ships_to_the_local_file_system_archive_the_same_way(settings: Settings) -> None:
    write(demand_readings("0abc", HOUR, 20))
    data = hourfiles.local_path("0abc", HOUR).read_bytes()

    report = rotate_at(AFTER_CLOSE)

    row = HourFile.objects.get()
    stored = Path(settings.ARCHIVE_ROOT) / row.key
    assert stored.read_bytes() == data
    assert row.state == HourFileState.VERIFIED and report.shipped == 1
    # No temporary file is left beside the object.
    assert [p.name for p in stored.parent.iterdir()] == [stored.name]
    assert not hourfiles.local_path("0abc", HOUR).exists()


def test_a_reading_after_the_seal_goes_to_a_late_part_shipped_under_its_own_key(
    s3_archive: str, s3_client: Any
) -> None:
    write(demand_readings("002738", HOUR, 10))
    rotate_at(AFTER_CLOSE)
    late_reading = demand_readings("002738", HOUR + timedelta(minutes=59), 1)
    write(late_reading)
    late = hourfiles.local_path("002738", HOUR, part=1)
    assert late.exists() and not hourfiles.local_path("002738", HOUR).exists()

    rotate_at(AFTER_CLOSE + timedelta(hours=1))

    late_key = "rainforest-logs/002738/2026/03/08/iseif-rainforest-002738-2026-03-08-09.late-1.jl"
    assert sorted(keys_in(s3_client, s3_archive))[1] == late_key
    assert object_bytes(s3_client, s3_archive, late_key) == late_reading[0].to_line()
    assert HourFile.objects.get(part=1).state == HourFileState.VERIFIED
    assert not late.exists()


def test_it_counts_malformed_lines_and_ships_every_byte(s3_archive: str, s3_client: Any) -> None:
    write(demand_readings("002738", HOUR, 3))
    local = hourfiles.local_path("002738", HOUR)
    # A line torn by a crash, then more readings after it.
    with open(local, "ab") as handle:
        handle.write(b'{"format_version": 1, "record_ty\n')
    write(demand_readings("002738", HOUR + timedelta(minutes=30), 2))
    data = local.read_bytes()

    report = rotate_at(AFTER_CLOSE)

    row = HourFile.objects.get()
    assert object_bytes(s3_client, s3_archive, row.key) == data
    assert (row.line_count, row.malformed_lines) == (5, 1)
    assert row.last_reading_at == HOUR + timedelta(minutes=30, seconds=6)
    assert report.malformed_lines == 1


@pytest.mark.parametrize("torn_line", [False, True])
def test_the_manifest_keeps_the_newest_time_of_each_record_type(
    s3_archive: str,
    torn_line: bool,
) -> None:
    # A summation read after the last demand reading: its time is no demand reading's.
    summation = dataclasses.replace(
        demand_readings("002738", HOUR + timedelta(minutes=20), 1)[0],
        record_type="summation",
        values={"delivered_kwh": 1234.5},
    )
    write([*demand_readings("002738", HOUR, 3), summation])
    if torn_line:
        with open(hourfiles.local_path("002738", HOUR), "ab") as handle:
            handle.write(b'{"format_version": 1, "record_ty\n')

    rotate_at(AFTER_CLOSE)

    row = HourFile.objects.get()
    assert row.newest_timestamps == {
        "demand": int((HOUR + timedelta(seconds=12)).timestamp()),
        "summation": int((HOUR + timedelta(minutes=20)).timestamp()),
    }


def test_an_empty_sealed_file_is_nothing_to_ship(s3_archive: str, s3_client: Any) -> None:
    local = hourfiles.local_path("002738", HOUR)
    local.parent.mkdir(parents=True)
    local.touch()
    hourfiles.seal(local)

    report = rotate_at(AFTER_CLOSE)

    assert keys_in(s3_client, s3_archive) == []
    assert not HourFile.objects.exists()
    assert not local.exists() and report.empty == 1
    assert report.ok


def test_gzip_objects_are_explicit_jl_gz_without_content_encoding(
    settings: Settings, s3_archive: str, s3_client: Any
) -> None:
    settings.ARCHIVE_COMPRESS = "gzip"
    write(demand_readings("002738", HOUR, 600))
    data = hourfiles.local_path("002738", HOUR).read_bytes()

    rotate_at(AFTER_CLOSE)

    row = HourFile.objects.get()
    assert row.key.endswith("iseif-rainforest-002738-2026-03-08-09.jl.gz") and row.compressed
    head = s3_client.head_object(Bucket=s3_archive, Key=row.key)
    assert head["ContentType"] == "application/gzip"
    assert "ContentEncoding" not in head
    stored = object_bytes(s3_client, s3_archive, row.key)
    assert gzip.decompress(stored) == data
    assert (row.size, row.sha256) == (len(stored), hashlib.sha256(stored).hexdigest())
    assert (row.data_size, row.data_sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert row.content_type == "application/gzip" and row.size < row.data_size


def test_the_key_stays_what_it_was_when_the_row_was_made(
    settings: Settings, s3_archive: str, s3_client: Any
) -> None:
    write(demand_readings("002738", HOUR, 5))
    with time_machine.travel(AFTER_CLOSE, tick=False):
        rotation.rotate(should_stop=lambda: True)  # registers, ships nothing
    row = HourFile.objects.get()
    assert row.state == HourFileState.OPEN and not row.compressed
    settings.ARCHIVE_COMPRESS = "gzip"
    settings.ARCHIVE_PREFIX = "elsewhere"

    rotate_at(AFTER_CLOSE)

    assert keys_in(s3_client, s3_archive) == [row.key]
    assert row.key.startswith("rainforest-logs/") and row.key.endswith(".jl")


def test_an_identical_object_already_at_the_key_counts_as_shipped(
    s3_archive: str, s3_client: Any
) -> None:
    write(demand_readings("002738", HOUR, 5))
    data = hourfiles.local_path("002738", HOUR).read_bytes()
    key = hourfiles.archive_key("002738", HOUR)
    s3_client.put_object(Bucket=s3_archive, Key=key, Body=data)

    report = rotate_at(AFTER_CLOSE)

    assert (report.already_archived, report.shipped, report.conflicts) == (1, 0, 0)
    assert HourFile.objects.get().state == HourFileState.VERIFIED
    assert not hourfiles.local_path("002738", HOUR).exists()


def test_a_different_object_at_the_key_is_a_conflict_never_overwritten(
    s3_archive: str, s3_client: Any
) -> None:
    write(demand_readings("002738", HOUR, 5))
    local = hourfiles.local_path("002738", HOUR)
    data = local.read_bytes()
    key = hourfiles.archive_key("002738", HOUR)
    s3_client.put_object(Bucket=s3_archive, Key=key, Body=b"someone else's bytes\n")

    report = rotate_at(AFTER_CLOSE)

    row = HourFile.objects.get()
    assert row.state == HourFileState.CONFLICT
    assert "different object" in row.last_error and report.conflicts == 1 and not report.ok
    assert object_bytes(s3_client, s3_archive, key) == b"someone else's bytes\n"
    assert local.read_bytes() == data
    # A conflict waits for an operator: later runs leave it alone.
    rotate_at(AFTER_CLOSE + timedelta(days=1))
    assert HourFile.objects.get().state == HourFileState.CONFLICT

    # The operator moves the stray object away and retries.
    s3_client.delete_object(Bucket=s3_archive, Key=key)
    assert row.retry()
    rotate_at(AFTER_CLOSE + timedelta(days=1))

    assert object_bytes(s3_client, s3_archive, key) == data
    assert HourFile.objects.get().state == HourFileState.VERIFIED
    assert not local.exists()


def test_a_conflict_on_the_local_archive_is_detected_too(settings: Settings) -> None:
    write(demand_readings("0abc", HOUR, 5))
    stored = Path(settings.ARCHIVE_ROOT) / hourfiles.archive_key("0abc", HOUR)
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"other\n")

    rotate_at(AFTER_CLOSE)

    assert HourFile.objects.get().state == HourFileState.CONFLICT
    assert stored.read_bytes() == b"other\n"
    assert hourfiles.local_path("0abc", HOUR).exists()


def test_only_the_requested_hour_and_user_are_shipped(s3_archive: str, s3_client: Any) -> None:
    for cloud_id in ("0001", "0002"):
        write(demand_readings(cloud_id, HOUR, 3))
        write(demand_readings(cloud_id, HOUR - timedelta(hours=1), 3))

    rotate_at(AFTER_CLOSE, hour=HOUR, cloud_id="0002")

    assert keys_in(s3_client, s3_archive) == [hourfiles.archive_key("0002", HOUR)]
    assert HourFile.objects.count() == 1


def test_a_row_registered_by_someone_else_is_shipped_too(s3_archive: str, s3_client: Any) -> None:
    write(demand_readings("002738", HOUR, 3))
    HourFile.objects.create(
        cloud_id="002738",
        hour=HOUR,
        local_path=str(hourfiles.local_path("002738", HOUR)),
        key=hourfiles.archive_key("002738", HOUR),
    )

    rotate_at(AFTER_CLOSE)

    assert HourFile.objects.get().state == HourFileState.VERIFIED
    assert keys_in(s3_client, s3_archive) == [hourfiles.archive_key("002738", HOUR)]


def test_a_verified_file_left_on_disk_by_a_stopped_run_is_removed(s3_archive: str) -> None:
    write(demand_readings("002738", HOUR, 3))
    local = hourfiles.local_path("002738", HOUR)
    kept = local.read_bytes()
    rotate_at(AFTER_CLOSE)
    # As if the run had stopped after recording the row verified, before removing the file.
    local.write_bytes(kept)
    HourFile.objects.update(local_deleted_at=None)

    report = rotate_at(AFTER_CLOSE + timedelta(hours=1))

    assert not local.exists() and report.local_deleted == 1 and report.relocated == 0
    assert HourFile.objects.get().local_deleted_at is not None


def test_new_readings_under_a_shipped_name_move_to_a_new_late_part(
    s3_archive: str, s3_client: Any
) -> None:
    write(demand_readings("002738", HOUR, 3))
    rotate_at(AFTER_CLOSE)
    first_object = object_bytes(s3_client, s3_archive, hourfiles.archive_key("002738", HOUR))
    # Markers cleaned up long ago; then a meter with a wrong clock sends readings of that hour.
    hourfiles.sealed_marker(hourfiles.local_path("002738", HOUR)).unlink()
    straggler = demand_readings("002738", HOUR + timedelta(minutes=40), 2)
    write(straggler)
    assert hourfiles.local_path("002738", HOUR).exists()

    report = rotate_at(AFTER_CLOSE + timedelta(hours=2))

    assert report.relocated == 1
    assert (
        object_bytes(s3_client, s3_archive, hourfiles.archive_key("002738", HOUR)) == first_object
    )
    late_key = hourfiles.archive_key("002738", HOUR, part=1)
    assert object_bytes(s3_client, s3_archive, late_key) == b"".join(r.to_line() for r in straggler)
    assert HourFile.objects.get(part=1).state == HourFileState.VERIFIED
    assert not hourfiles.local_path("002738", HOUR).exists()
    assert not hourfiles.local_path("002738", HOUR, part=1).exists()


def test_old_hour_directories_lose_their_markers_once_all_is_verified(
    settings: Settings, s3_archive: str
) -> None:
    settings.ROTATE_MARKER_RETENTION_HOURS = 24
    write(demand_readings("0001", HOUR, 3))
    write(demand_readings("0002", HOUR, 3))
    rotate_at(AFTER_CLOSE)
    directory = hourfiles.hour_dir(HOUR)
    assert sorted(p.name.endswith(".sealed") for p in directory.iterdir()) == [True, True]

    rotate_at(AFTER_CLOSE + timedelta(hours=12))
    assert directory.exists()

    report = rotate_at(AFTER_CLOSE + timedelta(hours=25))
    assert not directory.exists() and report.dirs_removed == 1


def test_an_hour_directory_with_an_unshipped_file_is_kept(
    settings: Settings, s3_archive: str, s3_client: Any
) -> None:
    settings.ROTATE_MARKER_RETENTION_HOURS = 24
    write(demand_readings("0001", HOUR, 3))
    key = hourfiles.archive_key("0001", HOUR)
    s3_client.put_object(Bucket=s3_archive, Key=key, Body=b"x\n")

    rotate_at(AFTER_CLOSE + timedelta(hours=25))

    assert HourFile.objects.get().state == HourFileState.CONFLICT
    assert hourfiles.local_path("0001", HOUR).exists()
    assert hourfiles.sealed_marker(hourfiles.local_path("0001", HOUR)).exists()


def test_open_files_stay_bounded_whatever_the_number_of_files(
    settings: Settings, s3_archive: str
) -> None:
    settings.ROTATE_CONCURRENCY = 3
    for n in range(60):
        write(demand_readings(f"{n:04x}", HOUR, 2))
    open_fds: list[int] = []

    def count_fds(step: rotation.Step, key: str) -> None:
        if step == rotation.Step.MEASURED:
            open_fds.append(len(list(Path("/proc/self/fd").iterdir())))

    before = len(list(Path("/proc/self/fd").iterdir()))
    report = rotate_at(AFTER_CLOSE, after_step=count_fds)

    assert report.shipped == 60
    # At most one local file (and its gzip spool) per worker, plus a few connections per worker.
    assert max(open_fds) - before <= 3 * settings.ROTATE_CONCURRENCY + 10


@pytest.mark.parametrize("compress", ["", "gzip"])
def test_a_file_too_large_for_memory_is_streamed_with_the_same_result(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    s3_archive: str,
    s3_client: Any,
    compress: str,
) -> None:
    settings.ARCHIVE_COMPRESS = compress
    # Tiny limits, so that this file is streamed and its lines span read chunks.
    monkeypatch.setattr(rotation, "SPOOL_BYTES", 1000)
    monkeypatch.setattr(rotation, "READ_CHUNK", 777)
    write(demand_readings("002738", HOUR, 40))
    local = hourfiles.local_path("002738", HOUR)
    with open(local, "ab") as handle:
        handle.write(b"not json\n")
    data = local.read_bytes()

    rotate_at(AFTER_CLOSE)

    row = HourFile.objects.get()
    stored = object_bytes(s3_client, s3_archive, row.key)
    assert (gzip.decompress(stored) if compress else stored) == data
    assert (row.size, row.sha256) == (len(stored), hashlib.sha256(stored).hexdigest())
    assert (row.line_count, row.malformed_lines) == (40, 1)
    assert row.last_reading_at == HOUR + timedelta(seconds=39 * 6)
    assert row.state == HourFileState.VERIFIED
