"""Hour files: readings land in the file of their own UTC hour, sealing diverts writers to late parts."""

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
import time_machine
from pytest_django.fixtures import Settings

from ingestion import hourfiles
from ingestion.records import Reading, Source

RECEIVED = datetime(2026, 3, 8, 10, 0, 5, tzinfo=UTC)


def reading(cloud_id: str, meter_time: datetime, demand_kw: float = 1.5) -> Reading:
    return Reading(
        cloud_id=cloud_id,
        record_type="demand",
        meter_timestamp=int(meter_time.timestamp()),
        received_at=RECEIVED,
        source=Source.SIMULATOR,
        values={"demand_kw": demand_kw},
    )


def lines_of(path: Path) -> list[dict]:
    return list(hourfiles.iter_records(path))


def test_it_files_each_reading_under_the_utc_hour_of_its_meter_time(tmp_path: Path) -> None:
    with hourfiles.HourFileWriter(root=tmp_path) as writer:
        result = writer.append(
            [
                reading("002738", datetime(2026, 3, 8, 9, 59, 58, tzinfo=UTC)),
                reading("002738", datetime(2026, 3, 8, 10, 0, 4, tzinfo=UTC)),
                reading("0abc", datetime(2026, 3, 8, 10, 0, 4, tzinfo=UTC)),
            ]
        )
    assert not result.unwritten
    nine = tmp_path / "2026-03-08-09" / "iseif-rainforest-002738-2026-03-08-09.jl"
    ten = tmp_path / "2026-03-08-10" / "iseif-rainforest-002738-2026-03-08-10.jl"
    assert [r["meter_time"] for r in lines_of(nine)] == ["2026-03-08T09:59:58Z"]
    assert [r["meter_time"] for r in lines_of(ten)] == ["2026-03-08T10:00:04Z"]
    assert lines_of(tmp_path / "2026-03-08-10" / "iseif-rainforest-0abc-2026-03-08-10.jl")


def test_it_keeps_open_files_within_the_pool_bound(tmp_path: Path) -> None:
    with hourfiles.HourFileWriter(root=tmp_path, max_open=8) as writer:
        for n in range(50):
            writer.append([reading(f"{n:06x}", datetime(2026, 3, 8, 10, 1, tzinfo=UTC))])
            assert writer.open_files <= 8
    assert len(list((tmp_path / "2026-03-08-10").glob("*.jl"))) == 50


def test_files_of_hours_the_rotation_has_sealed_are_closed_at_the_next_sync(
    tmp_path: Path, settings: Settings
) -> None:
    settings.ROTATE_GRACE_SECONDS = 120
    nine = datetime(2026, 3, 8, 9, 59, tzinfo=UTC)
    ten = datetime(2026, 3, 8, 10, 1, tzinfo=UTC)
    with hourfiles.HourFileWriter(root=tmp_path) as writer:
        with time_machine.travel(ten, tick=False):
            writer.append([reading("0001", nine), reading("0002", nine), reading("0001", ten)])
            writer.sync()
            # Within the grace, a reading of the hour just ended may still come.
            assert writer.open_files == 3
        with time_machine.travel(datetime(2026, 3, 8, 10, 2, 1, tzinfo=UTC), tick=False):
            writer.sync()
            # A shipped file held open would keep its disk space.
            assert writer.open_files == 1
            writer.append([reading("0002", nine.replace(second=30))])
    assert len(lines_of(hourfiles.local_path("0002", nine, root=tmp_path))) == 2


def test_a_reading_for_a_sealed_hour_goes_to_a_late_part(tmp_path: Path) -> None:
    hour = datetime(2026, 3, 8, 9, tzinfo=UTC)
    with hourfiles.HourFileWriter(root=tmp_path) as writer:
        writer.append([reading("002738", hour.replace(minute=59))])
        main = hourfiles.local_path("002738", hour, root=tmp_path)
        size_at_seal = main.stat().st_size
        assert hourfiles.seal(main)
        # The writer still holds the file open: the marker, checked under the lock, must stop it.
        result = writer.append([reading("002738", hour.replace(minute=59, second=30))])
    assert main.stat().st_size == size_at_seal
    late = hourfiles.local_path("002738", hour, part=1, root=tmp_path)
    assert result.written[0].path == late and result.written[0].part == 1
    assert [r["meter_time"] for r in lines_of(late)] == ["2026-03-08T09:59:30Z"]


def test_a_shipped_and_removed_hour_is_never_recreated_under_its_old_name(tmp_path: Path) -> None:
    hour = datetime(2026, 3, 8, 9, tzinfo=UTC)
    with hourfiles.HourFileWriter(root=tmp_path) as writer:
        writer.append([reading("002738", hour)])
    main = hourfiles.local_path("002738", hour, root=tmp_path)
    hourfiles.seal(main)
    main.unlink()
    with hourfiles.HourFileWriter(root=tmp_path) as writer:
        writer.append([reading("002738", hour.replace(minute=30))])
    assert not main.exists()
    assert hourfiles.local_path("002738", hour, part=1, root=tmp_path).exists()


def test_sealing_is_idempotent_and_reports_missing_files(tmp_path: Path) -> None:
    hour = datetime(2026, 3, 8, 9, tzinfo=UTC)
    path = hourfiles.local_path("002738", hour, root=tmp_path)
    assert hourfiles.seal(path) is False
    with hourfiles.HourFileWriter(root=tmp_path) as writer:
        writer.append([reading("002738", hour)])
    assert hourfiles.seal(path) and hourfiles.seal(path)
    assert hourfiles.is_sealed(path)


def test_a_torn_last_line_from_a_crash_does_not_swallow_the_next_reading(tmp_path: Path) -> None:
    hour = datetime(2026, 3, 8, 9, tzinfo=UTC)
    path = hourfiles.local_path("002738", hour, root=tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(reading("002738", hour).to_line() + b'{"format_version": 1, "reco')
    with hourfiles.HourFileWriter(root=tmp_path) as writer:
        writer.append([reading("002738", hour.replace(minute=1))])
    malformed: list[hourfiles.MalformedLine] = []
    records = list(hourfiles.iter_records(path, malformed))
    assert [r["meter_time"] for r in records] == ["2026-03-08T09:00:00Z", "2026-03-08T09:01:00Z"]
    assert [m.line_number for m in malformed] == [2]


@pytest.mark.skipif(
    not Path("/dev/full").exists(), reason="needs /dev/full to simulate a full disk"
)
def test_a_full_disk_leaves_the_readings_unwritten_and_reported(tmp_path: Path) -> None:
    hour = datetime(2026, 3, 8, 9, tzinfo=UTC)
    path = hourfiles.local_path("002738", hour, root=tmp_path)
    path.parent.mkdir(parents=True)
    # Every write to /dev/full fails with ENOSPC, as on a full file system.
    os.symlink("/dev/full", path)
    batch = [reading("002738", hour), reading("0abc", hour)]
    with hourfiles.HourFileWriter(root=tmp_path) as writer:
        result = writer.append(batch)
    assert [r.cloud_id for r in result.unwritten] == ["002738"]
    assert "002738" in result.errors[0] and "No space" in result.errors[0]
    assert [w.cloud_id for w in result.written] == ["0abc"]
