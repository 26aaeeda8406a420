"""`make bench-load`: loading sealed hours into the SQL readings store, against psql's `\\copy`.

Set-up, in a temporary directory and a database of its own (BENCH_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/rl_store_bench), both removed at the end:
- BENCH_HOUSEHOLDS households (default 1,000) x BENCH_HOURS hours (default 24) of hour files with
  one demand reading every 10 s (360 a file: 8.64 million rows by default), written as the poller
  writes them, sealed, and registered in the manifest as the rotation leaves them (the noon hour
  shipped to the local archive and removed from disk, the others sealed on disk);
- the same rows as typed CSV (the table's columns), for the baseline.

Measured in the same run, on the same server:
1. baseline: `psql -c "\\copy readings_baseline FROM file.csv CSV"` into an unindexed table with
   the same columns, once before and once after the loads; the baseline is the mean of the two,
   which cancels a drift in the load of this shared machine;
2. `manage.py load_readings` (READINGS_LOAD_WORKERS workers): every hour, loaded for the first
   time, streamed with COPY straight into `readings`. Ratio of rows per second against the
   baseline (goal: at least 0.7);
3. `manage.py load_readings` again over the same hours: no new rows, at least 5 times faster than
   the first (it finds every file loaded); and, for information, the same hours loaded again from
   scratch (their load records forgotten): the straight COPY meets a reading already there, and
   every row is read, copied into the staging table and refused by ON CONFLICT;
4. a household-day aggregate (one household, 24 hours, hourly, `retrieval.aggregate_demand` as
   the API calls it) from the files and from the table, and the fleet's 15-minute aggregate of
   one hour (every household, `api.fleet_readings.fleet_document` as GET
   /api/fleet/readings/aggregate computes it) from the Parquet dataset (that hour exported first)
   and from the table in one query; median of 3, checking both give the same.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dj_database_url
import orjson

from bench.support import configure_django, drop_database, load_average, recreate_database

HOUSEHOLDS = int(os.environ.get("BENCH_HOUSEHOLDS", "1000"))
HOURS = int(os.environ.get("BENCH_HOURS", "24"))
READINGS_PER_HOUR = 360
DAY = datetime(2026, 3, 8, tzinfo=UTC)
# The hour of the fleet aggregate, exported to the Parquet dataset too.
NOON = DAY + timedelta(hours=min(12, HOURS - 1))
TARGET_RATIO = 0.7
TARGET_SECOND_LOAD_SPEEDUP = 5.0
DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/rl_store_bench"
)
BASELINE_TABLE = "readings_baseline"


def cloud_id_of(n: int) -> str:
    return f"{0x100000 + n:06x}"


def iso(moment: datetime, milliseconds: bool = False) -> str:
    if milliseconds:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def write_fleet(csv_path: Path) -> tuple[int, int]:
    """The hour files (sealed, with manifest rows) and the CSV of the same rows; (rows, bytes)."""
    from django.conf import settings
    from django.utils import timezone

    from ingestion import hourfiles
    from ingestion.models import HourFile, HourFileState

    rows = size = 0
    manifest = []
    now = timezone.now()
    with open(csv_path, "w", encoding="utf-8") as csv:
        for hour_index in range(HOURS):
            hour = DAY + timedelta(hours=hour_index)
            directory = hourfiles.hour_dir(hour)
            directory.mkdir(parents=True)
            times = []
            for line in range(READINGS_PER_HOUR):
                moment = hour + timedelta(seconds=10 * line)
                received = moment + timedelta(milliseconds=380 + line % 200)
                times.append((int(moment.timestamp()), iso(moment), iso(received, True)))
            for n in range(HOUSEHOLDS):
                cloud_id = cloud_id_of(n)
                lines = []
                csv_lines = []
                for line, (timestamp, meter_time, received_at) in enumerate(times):
                    demand = 300 + (n * 131 + (hour_index * READINGS_PER_HOUR + line) * 37) % 4200
                    raw = {
                        "DeviceMacId": f"0xd8d5b9000000{n:04x}",
                        "MeterMacId": f"0x00135003{n:08x}",
                        "TimeStamp": f"0x{timestamp - 946684800:08x}",
                        "Demand": f"0x{demand:06x}",
                        "Multiplier": "0x00000001",
                        "Divisor": "0x000003e8",
                        "DigitsRight": "0x03",
                        "DigitsLeft": "0x06",
                        "SuppressLeadingZero": "Y",
                    }
                    lines.append(
                        orjson.dumps(
                            {
                                "format_version": 1,
                                "record_type": "demand",
                                "cloud_id": cloud_id,
                                "meter_timestamp": timestamp,
                                "meter_time": meter_time,
                                "received_at": received_at,
                                "source": "cloud",
                                "demand_kw": demand / 1000,
                                "raw": raw,
                            }
                        )
                    )
                    raw_csv = orjson.dumps(raw).decode().replace('"', '""')
                    csv_lines.append(
                        f'{cloud_id},demand,{meter_time},{received_at},cloud,{demand / 1000!r},,,,,,1,"{raw_csv}"\n'
                    )
                data = b"\n".join(lines) + b"\n"
                path = hourfiles.local_path(cloud_id, hour)
                key = hourfiles.archive_key(cloud_id, hour)
                row = HourFile(
                    cloud_id=cloud_id,
                    hour=hour,
                    part=0,
                    local_path=str(path),
                    key=key,
                    state=HourFileState.SEALED,
                    sealed_at=now,
                )
                if hour == NOON:
                    # Shipped, verified and removed from disk, as the rotation leaves it: the
                    # Parquet export (the fleet aggregate's other source) reads it there.
                    archived = Path(settings.ARCHIVE_ROOT) / key
                    archived.parent.mkdir(parents=True, exist_ok=True)
                    archived.write_bytes(data)
                    digest = hashlib.sha256(data).hexdigest()
                    row.state, row.verified_at, row.local_deleted_at = (
                        HourFileState.VERIFIED,
                        now,
                        now,
                    )
                    row.size = row.data_size = len(data)
                    row.sha256 = row.data_sha256 = digest
                    row.line_count = len(lines)
                    row.content_type = "application/x-ndjson"
                else:
                    path.write_bytes(data)
                    hourfiles.sealed_marker(path).touch()
                csv.write("".join(csv_lines))
                rows += len(lines)
                size += len(data)
                manifest.append(row)
            print(f"  hour {hour_index + 1}/{HOURS} written", end="\r", flush=True)
    HourFile.objects.bulk_create(manifest, batch_size=2000)
    print()
    return rows, size


def psql_copy(csv_path: Path) -> float:
    """Seconds of psql's \\copy of the CSV into a fresh unindexed baseline table."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {BASELINE_TABLE}")
        # The readings table's columns, without its key (unindexed) or partitions.
        cursor.execute(
            f"CREATE TABLE {BASELINE_TABLE} (LIKE readings INCLUDING DEFAULTS EXCLUDING INDEXES)"
        )
    config = dj_database_url.parse(DATABASE_URL)
    command = [
        "psql",
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        config["HOST"] or "127.0.0.1",
        "-p",
        str(config["PORT"] or 5432),
        "-U",
        config["USER"] or "postgres",
        "-d",
        config["NAME"],
        "-c",
        f"\\copy {BASELINE_TABLE} FROM '{csv_path}' WITH (FORMAT csv)",
    ]
    started = time.monotonic()
    subprocess.run(command, check=True, env={**os.environ, "PGPASSWORD": config["PASSWORD"] or ""})
    seconds = time.monotonic() - started
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {BASELINE_TABLE}")
    return seconds


def process_cpu() -> float:
    times = os.times()
    return times.user + times.system


def timed_load() -> tuple[float, int]:
    """Seconds of `manage.py load_readings` over every pending hour, and the rows it inserted;
    prints the CPU time of this process (reading and converting the files) beside it."""
    from django.core.management import call_command

    from ingestion.models import ReadingsLoad

    before = set(ReadingsLoad.objects.values_list("pk", flat=True))
    started, cpu = time.monotonic(), process_cpu()
    call_command("load_readings", verbosity=0, stdout=open(os.devnull, "w"))  # noqa: SIM115
    seconds = time.monotonic() - started
    print(f"  ({process_cpu() - cpu:.1f} s of CPU in this process; load average {load_average()})")
    loads = ReadingsLoad.objects.exclude(pk__in=before)
    failed = [load.error for load in loads if load.error]
    if failed:
        raise SystemExit(f"loads failed: {failed[:3]}")
    return seconds, sum(load.rows_inserted for load in loads)


def table_rows() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM readings")
        return int(cursor.fetchone()[0])


def median_seconds(work: Callable[[], Any], runs: int = 3) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(runs):
        started = time.monotonic()
        result = work()
        times.append(time.monotonic() - started)
    return statistics.median(times), result


def aggregates() -> list[tuple[str, str, float, float]]:
    """(name, the files' source, seconds from it, seconds from the table) of the two aggregates,
    each computed as the API computes it, and checked to give the same answer both ways."""
    from django.test import override_settings

    from api.fleet_readings import fleet_document
    from ingestion import retrieval

    def household_day() -> tuple[str, list[Any]]:
        buckets = retrieval.aggregate_demand(
            cloud_id_of(7), DAY, DAY + timedelta(hours=HOURS), timedelta(hours=1)
        )
        return "", buckets

    def fleet_quarters() -> tuple[str, list[Any]]:
        # GET /api/fleet/readings/aggregate: the Parquet dataset, or the table in one query.
        document = fleet_document(NOON, NOON + timedelta(hours=1), "15m", None)
        return document.pop("source"), [document]

    results = []
    for name, files, sources, work in (
        ("household-day, hourly", "files", ("", ""), household_day),
        ("fleet 15-minute, one hour", "Parquet", ("parquet", "table"), fleet_quarters),
    ):
        with override_settings(READINGS_STORE=""):
            from_files, (file_source, file_answer) = median_seconds(work)
        from_table, (table_source, table_answer) = median_seconds(work)
        if (file_source, table_source) != sources:
            raise SystemExit(f"{name}: answered from {file_source} and {table_source}")
        if repr(file_answer) != repr(table_answer):
            raise SystemExit(f"{name}: the table's answer differs from the {files}'")
        results.append((name, files, from_files, from_table))
    return results


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="rainlog-bench-load-"))
    configure_django(work, DATABASE_URL, READINGS_STORE="postgres")
    recreate_database(DATABASE_URL)
    try:
        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command

        from ingestion import parquet_export
        from ingestion.models import LoadedHourFile

        call_command("migrate", verbosity=0)
        print(
            f"Fleet: {HOUSEHOLDS} households x {HOURS} h, a reading every 10 s; "
            f"{settings.READINGS_LOAD_WORKERS} load workers; load average {load_average()}"
        )
        csv_path = work / "readings.csv"
        started = time.monotonic()
        rows, size = write_fleet(csv_path)
        print(
            f"Generated {rows:,} readings: {size / 2**30:.2f} GiB of hour files, "
            f"{csv_path.stat().st_size / 2**30:.2f} GiB of CSV ({time.monotonic() - started:.0f} s)"
        )

        baseline_before = psql_copy(csv_path)
        print(
            f"psql \\copy (before): {baseline_before:.1f} s, {rows / baseline_before:,.0f} rows/s"
        )
        first, inserted = timed_load()
        assert inserted == rows == table_rows(), (inserted, rows)
        print(f"load_readings: {first:.1f} s, {inserted / first:,.0f} rows/s, {inserted:,} rows")
        second, again = timed_load()
        assert again == 0 and table_rows() == rows
        print(f"load_readings again: {second:.2f} s, {again} new rows")
        LoadedHourFile.objects.all().delete()
        forced, forced_rows = timed_load()
        assert forced_rows == 0 and table_rows() == rows
        print(f"same hours loaded from scratch: {forced:.1f} s, {forced_rows} new rows")
        baseline_after = psql_copy(csv_path)
        print(f"psql \\copy (after): {baseline_after:.1f} s, {rows / baseline_after:,.0f} rows/s")
        baseline = (baseline_before + baseline_after) / 2
        ratio = (rows / first) / (rows / baseline)
        speedup = first / second

        started = time.monotonic()
        exported = parquet_export.export(since=NOON, until=NOON + timedelta(hours=1))
        if exported.exported != 1:
            raise SystemExit(f"the Parquet export of {NOON:%H}:00 failed: {exported.summary()}")
        print(f"{NOON:%H}:00 exported to Parquet ({time.monotonic() - started:.1f} s)")
        timings = aggregates()
        print()
        print(f"rows/s ratio load_readings / psql \\copy: {ratio:.2f} (goal >= {TARGET_RATIO})")
        print(
            f"second load: {speedup:,.0f}x faster than the first, no new rows "
            f"(goal >= {TARGET_SECOND_LOAD_SPEEDUP:.0f}x); from scratch: {first / forced:.2f}x"
        )
        for name, files, from_files, from_table in timings:
            print(
                f"{name}: {files} {from_files * 1000:,.0f} ms, table {from_table * 1000:,.0f} ms, "
                f"{from_files / from_table:.1f}x faster from the table (same answer)"
            )
        ok = ratio >= TARGET_RATIO and speedup >= TARGET_SECOND_LOAD_SPEEDUP
        return 0 if ok else 1
    finally:
        from django.db import connections

        connections.close_all()
        drop_database(DATABASE_URL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
