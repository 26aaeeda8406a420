"""The SQL readings store: the partitioned `readings` table, loading sealed hours with COPY (once,
however often or by however many workers), the load records, and retention by whole partitions."""

import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client
from django.urls import reverse
from django_q.models import Schedule
from pytest_django.fixtures import Settings

from ingestion import hourfiles, readings_store, tasks
from ingestion.archive import rotation
from ingestion.models import FetchState, HourFile, LoadedHourFile, ReadingsLoad
from ingestion.polling.schedules import LOAD_SCHEDULE, register_schedules
from ingestion.purging import purge_user_data
from ingestion.readings_store import COLUMNS
from tests.factories import OperatorFactory
from tests.hour_files import demand_readings, write
from tests.polling import logged_keys, polling_run

NINE = datetime(2026, 3, 8, 9, tzinfo=UTC)
AFTER = datetime(2026, 3, 8, 12, 10, tzinfo=UTC)


@pytest.fixture
def store(settings: Settings) -> Any:
    settings.READINGS_STORE = "postgres"
    settings.READINGS_RETENTION_DAYS = 0
    # Worker threads have connections of their own, which see only committed data.
    settings.READINGS_LOAD_WORKERS = 1
    yield settings
    # Transactional tests commit, and the flush after them knows only Django's own tables.
    with connection.cursor() as cursor:
        for day in readings_store.partitions():
            cursor.execute(f"DROP TABLE {readings_store.partition_name(day)}")


def table_keys() -> list[tuple[str, str, int]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT cloud_id, record_type, extract(epoch FROM meter_time)::bigint FROM readings"
        )
        return [(c, r, int(t)) for c, r, t in cursor.fetchall()]


def rotate_at(moment: datetime) -> None:
    with time_machine.travel(moment, tick=False):
        report = rotation.rotate()
    assert report.ok, report.errors


@pytest.mark.django_db
def test_it_is_a_table_partitioned_by_day_with_the_typed_columns_and_key() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT partstrat, pg_get_partkeydef('readings'::regclass) FROM pg_partitioned_table "
            "WHERE partrelid = 'readings'::regclass"
        )
        assert cursor.fetchone() == ("r", "RANGE (meter_time)")
        cursor.execute(
            "SELECT column_name, data_type, datetime_precision FROM information_schema.columns "
            "WHERE table_name = 'readings' ORDER BY ordinal_position"
        )
        columns = cursor.fetchall()
        cursor.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'readings'::regclass "
            "AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)"
        )
        key = [name for (name,) in cursor.fetchall()]
    assert tuple(name for name, _, _ in columns) == COLUMNS
    types = {name: (kind, precision) for name, kind, precision in columns}
    assert types["meter_time"] == ("timestamp with time zone", 0)
    assert types["received_at"] == ("timestamp with time zone", 3)
    assert types["demand_kw"][0] == "double precision" and types["tier"][0] == "integer"
    assert types["raw"][0] == "jsonb"
    assert key == ["cloud_id", "record_type", "meter_time"]


@pytest.mark.django_db(transaction=True)
def test_a_polled_fleets_hours_loaded_twice_give_exactly_one_row_per_reading(
    store,
) -> None:
    store.INGEST_EXTRA_POLL_SECONDS = 30
    # From two minutes before an hour to two minutes after it.
    start = (1_790_000_040 // 3600 + 1) * 3600 - 120
    with polling_run(store, users=4, start=start) as run:
        FetchState.objects.update(extra_record_types=["summation", "price"])
        run.poller.load_users()
        for _ in range(40):
            run.tick()
        logged = logged_keys()
    assert len(logged) == len(set(logged)) > 100
    assert {key[1] for key in logged} >= {"demand", "summation", "price"}
    rotate_at(datetime.fromtimestamp(start + 3 * 3600, UTC))

    first = readings_store.run_pass()
    LoadedHourFile.objects.all().delete()  # as if every load was lost: the hours load again
    second = readings_store.run_pass()

    assert sorted(table_keys()) == sorted(logged)
    assert first.rows_inserted == len(logged) and first.failures == 0
    assert second.rows_read == len(logged) and second.rows_inserted == 0
    assert {load.hour for load in first.loads} == {
        hourfiles.hour_floor(datetime.fromtimestamp(start, UTC)),
        hourfiles.hour_floor(datetime.fromtimestamp(start + 120, UTC)),
    }


@pytest.mark.django_db(transaction=True)
def test_two_workers_loading_the_same_hours_at_once_never_duplicate_a_row(store) -> None:
    for cloud_id in ("0a01", "0a02", "0a03"):
        write(demand_readings(cloud_id, NINE, 1800))  # 09:00 to 12:00
    rotate_at(AFTER)
    hours = readings_store.pending_hours(AFTER)

    loads = readings_store.load_pending(hours + hours + hours, workers=3)

    keys = table_keys()
    assert len(keys) == len(set(keys)) == 3 * 1800
    assert sum(load.rows_inserted for load in loads) == 3 * 1800
    assert LoadedHourFile.objects.count() == HourFile.objects.count() == 9


@pytest.mark.django_db
def test_it_loads_typed_values_and_raw_from_archived_and_local_files(store) -> None:
    write(demand_readings("0b01", NINE, 10))
    rotate_at(AFTER)  # shipped: the loader reads the archive
    ten = NINE + timedelta(hours=1)
    record = {
        "format_version": 1,
        "record_type": "price",
        "cloud_id": "0b01",
        "meter_timestamp": int(ten.timestamp()) + 5,
        "meter_time": "2026-03-08T10:00:05Z",
        "received_at": "2026-03-08T10:00:06.250Z",
        "source": "cloud",
        "price": 0.0603,
        "currency": "US\\D\t",
        "tier": None,
        "raw": {"Price": "0x0000025b", "Note": 'a "quoted" \\ back\tslash', "é": [1, None]},
    }
    path = hourfiles.local_path("0b01", ten)
    path.parent.mkdir(parents=True)
    bad_times = [
        orjson.dumps({**record, "meter_timestamp": record["meter_timestamp"] + n, "received_at": t})
        for n, t in ((1, "yesterday"), (2, "2026-13-01T00:00:00Z"), (3, "2026-03-08T10:00:07"))
    ]
    path.write_bytes(b"\n".join([orjson.dumps(record), b'{"torn line', *bad_times]) + b"\n")
    HourFile.objects.create(
        cloud_id="0b01", hour=ten, local_path=str(path), key="k", sealed_at=AFTER
    )
    path.with_name(path.name + ".sealed").touch()

    report = readings_store.run_pass(now=AFTER)

    assert report.rows_inserted == 11 and report.failures == 0
    # The torn line and the three times PostgreSQL could not take (no offset is no instant).
    assert sum(load.malformed_lines for load in report.loads) == 4
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT received_at, price, currency, tier, raw, demand_kw, source FROM readings "
            "WHERE record_type = 'price'"
        )
        received, price, currency, tier, raw, demand, source = cursor.fetchone()
        cursor.execute("SELECT demand_kw FROM readings WHERE record_type = 'demand' LIMIT 1")
        assert cursor.fetchone()[0] == 1.0
    assert received == datetime(2026, 3, 8, 10, 0, 6, 250000, tzinfo=UTC)
    assert (price, currency, tier, demand, source) == (0.0603, "US\\D\t", None, None, "cloud")
    assert orjson.loads(raw) == record["raw"]


@pytest.mark.django_db
def test_without_raw_kept_the_column_stays_empty(store) -> None:
    store.READINGS_KEEP_RAW = False
    write(demand_readings("0c01", NINE, 10))
    rotate_at(AFTER)

    report = readings_store.run_pass(now=AFTER)

    assert report.loads[0].raw_kept is False
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*), count(raw) FROM readings")
        assert cursor.fetchone() == (10, 0)


@pytest.mark.django_db
def test_an_hour_not_sealed_yet_waits_and_an_unreadable_archive_is_a_recorded_failure(
    store,
) -> None:
    write(demand_readings("0d01", NINE, 10))
    write(demand_readings("0d02", NINE, 10))
    rotate_at(AFTER)
    HourFile.objects.filter(cloud_id="0d02").update(key="rainforest-logs/0d02/missing.jl")
    write(demand_readings("0d03", NINE + timedelta(hours=2), 10))
    HourFile.objects.create(
        cloud_id="0d03",
        hour=NINE + timedelta(hours=2),
        local_path="x",
        key="y",
        sealed_at=AFTER,  # claimed by a rotation that has not sealed it yet
    )

    report = readings_store.run_pass(now=AFTER)

    (load,) = report.loads
    assert (load.files, load.files_failed, load.rows_inserted) == (1, 1, 10)
    assert "missing.jl" in load.error
    assert readings_store.lag(AFTER).failures_last_day == 1
    assert [p.hour for p in readings_store.pending_hours(AFTER)] == [
        NINE,
        NINE + timedelta(hours=2),
    ]


@pytest.mark.django_db
def test_partitions_are_made_ahead_and_dropped_whole_past_the_retention(store) -> None:
    store.READINGS_RETENTION_DAYS = 2
    for day in range(4):
        write(demand_readings("0e01", NINE + timedelta(days=day), 10))
    rotate_at(NINE + timedelta(days=4))
    now = NINE + timedelta(days=4)
    readings_store.load_pending(readings_store.pending_hours(NINE), now=now)
    assert readings_store.partitions()[:4] == [date(2026, 3, d) for d in (8, 9, 10, 11)]

    report = readings_store.run_pass(now=now)

    # Kept: from 2026-03-10 (two days before 2026-03-12 09:00, from its midnight) on.
    assert report.partitions_dropped == ["readings_p20260308", "readings_p20260309"]
    assert readings_store.partitions() == [date(2026, 3, d) for d in (10, 11, 12, 13, 14)]
    assert len(table_keys()) == 20
    assert not ReadingsLoad.objects.filter(hour__lt=datetime(2026, 3, 10, tzinfo=UTC)).exists()
    assert readings_store.pending_hours(now) == []


@pytest.mark.django_db
def test_load_readings_backfills_a_range_with_a_dry_run_first(
    store: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    for cloud_id in ("0f01", "0f02"):
        write(demand_readings(cloud_id, NINE, 1800))
    rotate_at(AFTER)

    call_command(
        "load_readings", "--since", "2026-03-08T10:00", "--until", "2026-03-08T11:00", "--dry-run"
    )
    assert "2026-03-08-10  2 file(s)" in capsys.readouterr().out
    assert table_keys() == []

    call_command("load_readings", "--since", "2026-03-08T10:00", "--until", "2026-03-08T11:00")
    out = capsys.readouterr().out
    assert "1200 readings read, 1200 new" in out
    call_command("load_readings")
    assert "2400 readings read, 2400 new" in capsys.readouterr().out
    assert len(table_keys()) == 3600


@pytest.mark.django_db
def test_load_readings_says_why_when_the_store_is_off(settings: Settings) -> None:
    settings.READINGS_STORE = ""
    with pytest.raises(CommandError, match="READINGS_STORE"):
        call_command("load_readings")


@pytest.mark.django_db
def test_the_admin_shows_the_lag_and_the_failed_loads(store) -> None:
    write(demand_readings("1a01", NINE, 10))
    write(demand_readings("1a02", NINE + timedelta(hours=1), 10))
    rotate_at(AFTER)
    HourFile.objects.filter(cloud_id="1a02").update(key="rainforest-logs/1a02/missing.jl")
    readings_store.run_pass(now=AFTER)
    client = Client()
    client.force_login(OperatorFactory(is_superuser=True))

    page = client.get(reverse("admin:ingestion_readingsload_changelist")).content.decode()
    failed = client.get(reverse("admin:ingestion_readingsload_changelist"), {"failed": "yes"})

    assert "Oldest sealed hour not yet loaded: <strong>2026-03-08 10:00 UTC</strong>" in page
    assert "Failed loads in the last 24 hours: <strong>1</strong>" in page
    assert "missing.jl" in failed.content.decode()


@pytest.mark.django_db
def test_the_scheduled_task_keeps_the_partitions_and_loads_what_is_pending(store) -> None:
    write(demand_readings("1c01", NINE, 10))
    rotate_at(AFTER)

    with time_machine.travel(AFTER, tick=False):
        outcome = tasks.load_readings()

    assert outcome["rows_inserted"] == 10 and outcome["failures"] == 0
    assert outcome["partitions_made"] == [
        "readings_p20260308",
        "readings_p20260309",
        "readings_p20260310",
    ]


@pytest.mark.django_db
def test_the_load_schedule_exists_only_while_the_store_is_on(store) -> None:
    store.READINGS_LOAD_INTERVAL = 10
    register_schedules()
    schedule = Schedule.objects.get(name=LOAD_SCHEDULE)
    assert (schedule.func, schedule.minutes) == ("ingestion.tasks.load_readings", 10)

    store.READINGS_STORE = ""
    register_schedules()
    assert not Schedule.objects.filter(name=LOAD_SCHEDULE).exists()


def test_on_sqlite_the_store_stays_off_and_a_system_check_says_why(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DEBUG": "1",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "READINGS_STORE": "postgres",
    }
    run = subprocess.run(
        [sys.executable, "manage.py", "check"], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert "ingestion.W001" in run.stderr + run.stdout
    assert "the readings store stays off" in run.stderr + run.stdout


@pytest.mark.django_db
def test_a_load_the_database_refuses_is_recorded_with_its_error_and_loads_later(store) -> None:
    write(demand_readings("1b01", NINE, 10))
    rotate_at(AFTER)

    # No partition for the day yet (a pass makes it first): PostgreSQL refuses the rows.
    failed = readings_store.load_hour(NINE, AFTER)

    assert failed is not None and failed.pk and failed.rows_inserted == 0
    assert "no partition of relation" in failed.error
    assert table_keys() == [] and not LoadedHourFile.objects.exists()
    assert readings_store.run_pass(now=AFTER).rows_inserted == 10


@pytest.mark.django_db
def test_purging_a_households_data_deletes_its_readings_from_the_table(store) -> None:
    write(demand_readings("1d01", NINE, 10))
    write(demand_readings("1d02", NINE, 10))
    rotate_at(AFTER)
    readings_store.run_pass(now=AFTER)

    report = purge_user_data("1d01")

    assert report.store_rows == 10
    assert {cloud_id for cloud_id, _, _ in table_keys()} == {"1d02"}


def staging_table_made() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('pg_temp.readings_staging')")
        return cursor.fetchone()[0] is not None


def sealed_file(cloud_id: str, hour: datetime, part: int, lines: list[bytes]) -> None:
    path = hourfiles.local_path(cloud_id, hour, part)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(lines) + b"\n")
    hourfiles.sealed_marker(path).touch()
    HourFile.objects.create(
        cloud_id=cloud_id,
        hour=hour,
        part=part,
        local_path=str(path),
        key=hourfiles.archive_key(cloud_id, hour, part),
        sealed_at=AFTER,
    )


@pytest.mark.django_db
def test_an_hour_loaded_for_the_first_time_is_copied_straight_into_the_table(
    store, caplog: pytest.LogCaptureFixture
) -> None:
    for cloud_id in ("2a01", "2a02"):
        write(demand_readings(cloud_id, NINE, 600))  # 09:00 to 10:00
    rotate_at(AFTER)

    with caplog.at_level("INFO", logger="ingestion.readings_store"):
        report = readings_store.run_pass(now=AFTER)

    assert report.rows_inserted == report.rows_read == 1200 and report.failures == 0
    assert len(set(table_keys())) == 1200
    assert not staging_table_made()
    assert "loading through readings_staging" not in caplog.text


@pytest.mark.django_db
def test_repeated_readings_and_readings_of_another_hour_are_left_out_as_before(store) -> None:
    ten = NINE + timedelta(hours=1)
    lines = [reading.to_line().rstrip(b"\n") for reading in demand_readings("2b01", NINE, 10)]
    elsewhere = demand_readings("2b01", ten + timedelta(seconds=5), 1)[0].to_line().rstrip(b"\n")
    # A line written twice, and a reading of 10:00 in the 09:00 file.
    sealed_file("2b01", NINE, 0, [*lines[:6], lines[5], elsewhere])
    # A late part that repeats a reading of the first.
    sealed_file("2b01", NINE, 1, lines[4:])

    report = readings_store.run_pass(now=AFTER)

    ((load,),) = [report.loads]
    assert (load.files, load.rows_read, load.rows_inserted, load.malformed_lines) == (2, 14, 10, 0)
    assert sorted(t for _, _, t in table_keys()) == [
        int(NINE.timestamp()) + 6 * n for n in range(10)
    ]
    assert not staging_table_made()


@pytest.mark.django_db
def test_readings_in_the_table_without_a_load_record_send_the_load_through_the_staging_table(
    store, caplog: pytest.LogCaptureFixture
) -> None:
    for cloud_id in ("2c01", "2c02", "2c03"):
        write(demand_readings(cloud_id, NINE, 600))
    rotate_at(AFTER)
    readings_store.run_pass(now=AFTER)
    # The records of the load lost, and the first two households' rows too.
    LoadedHourFile.objects.all().delete()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM readings WHERE cloud_id IN ('2c01', '2c02')")

    with caplog.at_level("INFO", logger="ingestion.readings_store"):
        report = readings_store.run_pass(now=AFTER)

    # The table has the third household's readings of the hour: no straight copy is tried.
    assert "a reading is in the table already" not in caplog.text
    assert staging_table_made()
    assert (report.rows_read, report.rows_inserted, report.failures) == (1800, 1200, 0)
    keys = table_keys()
    assert len(keys) == len(set(keys)) == 1800
    assert LoadedHourFile.objects.count() == 3


@pytest.mark.django_db
def test_a_straight_copy_that_meets_a_reading_in_the_table_is_undone_and_loads_through_staging(
    store, caplog: pytest.LogCaptureFixture
) -> None:
    own = [r.to_line().rstrip(b"\n") for r in demand_readings("2d01", NINE, 300)]
    other = [r.to_line().rstrip(b"\n") for r in demand_readings("2d09", NINE, 300)]
    sealed_file("2d09", NINE, 0, other)
    readings_store.run_pass(now=AFTER)
    # A line of 2d09's, already loaded, in the middle of 2d01's file: the probe of 2d01's
    # readings finds none, and the straight copy meets it after 2d01's first 150 rows.
    sealed_file("2d01", NINE, 0, [*own[:150], other[7], *own[150:]])

    with caplog.at_level("INFO", logger="ingestion.readings_store"):
        report = readings_store.run_pass(now=AFTER)

    assert "2026-03-08-09: a reading is in the table already" in caplog.text
    ((load,),) = [report.loads]
    assert (load.files, load.rows_read, load.rows_inserted, load.failed) == (1, 301, 300, False)
    keys = table_keys()
    assert len(keys) == len(set(keys)) == 600
