"""`make bench-parquet`: the Parquet dataset against the JSON-lines archive it is made from, on the
same generated data, in one run.

Set-up, in a temporary directory removed at the end: a fresh bench database (BENCH_DATABASE_URL,
default postgres://postgres@127.0.0.1:5432/rainlog_bench_parquet), migrated; a local archive with
1,000 households x 24 h of 10-second demand readings (BENCH_HOUSEHOLDS, BENCH_HOURS), about 8.6
million records in 24,000 hour files written at their archive keys, each recorded verified in the
manifest as the rotation records it.

Measured, each against a baseline taken in the same run:
1. Size: the Parquet files (readings and demand summary) against the JSON-lines files and the
   same files gzipped. Goal: Parquet at most 1/20 of JSON lines.
2. Export: `parquet_export.export` of every hour; rows per second of one fleet-hour (the median
   hour), and what that makes for an hour of 10,000 households. Goal: well under a minute.
3. The fleet's 15-minute demand over the day (each household's mean per bucket, then mean,
   percentiles and total across households): `parquet_query.fleet_demand`, what the fleet
   endpoint runs (DuckDB over the demand summary), against the same query over a view of the
   JSON-lines files through DuckDB's `read_json` (`fleet_demand_of` over the readings). The same
   SQL over the Parquet readings is shown beside them. Wall and CPU time (DuckDB's threads
   included), as the machine may be shared. Goal: at least 50x faster, under 2 s.
4. One household-day: its demand rows from the dataset (`parquet_query.household_rows`: pyarrow,
   row groups pruned by their cloud_id statistics), against the API's path from JSON lines (`retrieval.iter_readings`: the manifest,
   then each hour file read and parsed). Goal: no slower.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.support import configure_django, drop_database, load_average, recreate_database

DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/rainlog_bench_parquet"
)
HOUSEHOLDS = int(os.environ.get("BENCH_HOUSEHOLDS", "1000"))
HOURS = int(os.environ.get("BENCH_HOURS", "24"))
STEP_SECONDS = 10
DAY = datetime(2026, 3, 8, tzinfo=UTC)
ZIGBEE_EPOCH = 946684800
FLEET_TARGET = 10_000
QUERY_RUNS = 3
# One line of a cloud demand reading as the poller writes it (Reading.to_line's field order).
LINE = (
    '{"format_version":1,"record_type":"demand","cloud_id":"%(cloud_id)s",'
    '"meter_timestamp":%(ts)d,"meter_time":"%(day)sT%(time)sZ",'
    '"received_at":"%(day)sT%(time)s.%(ms)03dZ","source":"cloud","demand_kw":%(kw)s,'
    '"raw":{"DeviceMacId":"0xd8d5b90000%(mac)s","MeterMacId":"0x00135003%(mac)s",'
    '"TimeStamp":"0x%(zigbee)08x","Demand":"0x%(raw)06x","Multiplier":"0x00000001",'
    '"Divisor":"0x000003e8","DigitsRight":"0x03","DigitsLeft":"0x0f",'
    '"SuppressLeadingZero":"Y"}}\n'
)


def household_hour(index: int, hour: datetime) -> bytes:
    """One household's hour of 10-second readings: a daily profile per household, plus noise.
    Received 0.4 to 1.3 s after the meter time (the same second is written, as the meter
    clock and the receiving clock are not the same anyway)."""
    chance = random.Random(index * 100_003 + int(hour.timestamp()))
    base = 0.3 + (index % 17) / 10
    evening = 1.5 if 17 <= hour.hour <= 21 else 1.0
    start = int(hour.timestamp())
    fields = {"cloud_id": f"{index:06x}", "mac": f"{index:06x}", "day": f"{hour:%Y-%m-%d}"}
    lines = []
    for n in range(3600 // STEP_SECONDS):
        seconds = n * STEP_SECONDS
        watts = max(20, int(1000 * base * evening) + chance.randrange(-250, 250))
        fields["ts"] = start + seconds
        fields["time"] = f"{hour.hour:02d}:{seconds // 60:02d}:{seconds % 60:02d}"
        fields["ms"] = chance.randrange(1000)
        fields["kw"] = watts / 1000
        fields["zigbee"] = start + seconds - ZIGBEE_EPOCH
        fields["raw"] = watts
        lines.append(LINE % fields)
    return "".join(lines).encode()


def write_household_hour(path: Path, index: int, hour: datetime) -> tuple[int, str, int]:
    """Write one hour file; (bytes, SHA-256, lines)."""
    data = household_hour(index, hour)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return len(data), hashlib.sha256(data).hexdigest(), data.count(b"\n")


def generate(root: Path) -> tuple[int, int, int]:
    """Write every hour file at its archive key (two processes) and record it verified in the
    manifest; (files, bytes, lines)."""
    from django.utils import timezone

    from ingestion import hourfiles
    from ingestion.models import HourFile, HourFileState

    files = size = lines = 0
    with ProcessPoolExecutor(2) as pool:
        for offset in range(HOURS):
            hour = DAY + timedelta(hours=offset)
            households = [(index, f"{index:06x}") for index in range(1, HOUSEHOLDS + 1)]
            keys = [hourfiles.archive_key(cloud_id, hour) for _, cloud_id in households]
            written = pool.map(
                write_household_hour,
                [root / key for key in keys],
                [index for index, _ in households],
                [hour] * len(households),
                chunksize=50,
            )
            now = timezone.now()
            rows = [
                HourFile(
                    cloud_id=cloud_id,
                    hour=hour,
                    part=0,
                    local_path=str(hourfiles.local_path(cloud_id, hour)),
                    key=key,
                    content_type="application/x-ndjson",
                    state=HourFileState.VERIFIED,
                    size=file_size,
                    sha256=digest,
                    data_size=file_size,
                    data_sha256=digest,
                    line_count=file_lines,
                    first_reading_at=hour,
                    last_reading_at=hour + timedelta(seconds=3600 - STEP_SECONDS),
                    verified_at=now,
                    local_deleted_at=now,
                )
                for (_, cloud_id), key, (file_size, digest, file_lines) in zip(
                    households, keys, written, strict=True
                )
            ]
            HourFile.objects.bulk_create(rows, batch_size=1000)
            files += len(rows)
            size += sum(row.size or 0 for row in rows)
            lines += sum(row.line_count or 0 for row in rows)
            print(f"  generated hour {offset + 1}/{HOURS}", end="\r", file=sys.stderr)
    print(file=sys.stderr)
    return files, size, lines


def gzip_size(paths: list[Path]) -> int:
    def compressed(path: Path) -> int:
        return len(gzip.compress(path.read_bytes(), compresslevel=6, mtime=0))

    with ThreadPoolExecutor(2) as pool:
        return sum(pool.map(compressed, paths))


def timed(function: Any, runs: int = 1) -> Any:
    """(median seconds, last result) of `runs` calls."""
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


# The `demand` relation over the JSON-lines files, in the dataset's columns, so that the fleet
# query runs unchanged on both (`parquet_query.fleet_demand_of`). DuckDB's `read_json` with the
# columns declared: discovering them fails on hour files whose `raw` holds both `TimeStamp` and
# `timestamp`, and declaring them spares the sampling.
JSON_DEMAND_VIEW = """
CREATE TEMP VIEW demand AS
SELECT cloud_id, to_timestamp(meter_timestamp) AS meter_time, demand_kw
FROM read_json({files}, format = 'newline_delimited',
               columns = {{record_type: 'VARCHAR', cloud_id: 'VARCHAR',
                          meter_timestamp: 'BIGINT', demand_kw: 'DOUBLE'}})
WHERE record_type = 'demand'
"""


def cpu_seconds() -> float:
    """User plus system CPU time of this process (DuckDB's threads included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="rainlog-bench-parquet-"))
    archive_root = work / "archive"
    configure_django(work, DATABASE_URL, ARCHIVE_ROOT=str(archive_root))
    recreate_database(DATABASE_URL)
    try:
        import django

        django.setup()
        return run(work, archive_root)
    finally:
        from django.db import connections

        connections.close_all()
        drop_database(DATABASE_URL)
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, archive_root: Path) -> int:
    from django.core.management import call_command

    from ingestion import parquet, parquet_export, parquet_query, retrieval
    from ingestion.eagle.record_types import DEMAND
    from ingestion.models import DatasetFile, DatasetFileContent, DatasetHour

    call_command("migrate", verbosity=0)
    print(
        f"bench-parquet: {HOUSEHOLDS} households x {HOURS} h of {STEP_SECONDS}-second readings "
        f"(load {load_average()})"
    )
    started = time.perf_counter()
    files, json_bytes, lines = generate(archive_root)
    print(
        f"  data: {files} hour files, {lines:,} readings, generated in {time.perf_counter() - started:.0f} s"
    )

    json_paths = sorted((archive_root / "rainforest-logs").rglob("*.jl"))
    gzip_bytes = gzip_size(json_paths)

    # Export, hour by hour, each timed.
    hour_seconds = []
    for offset in range(HOURS):
        hour = DAY + timedelta(hours=offset)
        seconds, report = timed(
            lambda h=hour: parquet_export.export(since=h, until=h + timedelta(hours=1))
        )
        assert report.ok and report.exported == 1, report.summary()
        hour_seconds.append(seconds)
    rows = sum(DatasetHour.objects.values_list("rows", flat=True))
    assert rows == lines, f"{rows} rows exported, {lines} readings generated"
    parquet_bytes = sum(DatasetFile.objects.values_list("size", flat=True))
    summary_bytes = sum(
        DatasetFile.objects.filter(content=DatasetFileContent.DEMAND_MINUTES).values_list(
            "size", flat=True
        )
    )
    median_hour = statistics.median(hour_seconds)
    rows_per_second = HOUSEHOLDS * 3600 / STEP_SECONDS / median_hour
    fleet_hour = FLEET_TARGET * 3600 / STEP_SECONDS / rows_per_second

    print("\n1. Size")
    print(f"  JSON lines       {json_bytes / 1e6:10.1f} MB")
    print(f"  gzip JSON lines  {gzip_bytes / 1e6:10.1f} MB  (1/{json_bytes / gzip_bytes:.1f})")
    print(
        f"  Parquet          {parquet_bytes / 1e6:10.1f} MB  (1/{json_bytes / parquet_bytes:.1f} "
        f"of JSON lines, 1/{gzip_bytes / parquet_bytes:.1f} of gzip)  goal 1/20: "
        f"{'met' if json_bytes / parquet_bytes >= 20 else 'NOT met'}"
    )
    print(f"    of which the demand summary {summary_bytes / 1e6:.1f} MB")
    print("\n2. Export")
    print(
        f"  one fleet-hour ({HOUSEHOLDS} households, {HOUSEHOLDS * 360:,} rows): median "
        f"{median_hour:.2f} s (min {min(hour_seconds):.2f}, max {max(hour_seconds):.2f}), "
        f"{rows_per_second:,.0f} rows/s"
    )
    print(
        f"  an hour of {FLEET_TARGET:,} households at that rate: {fleet_hour:.0f} s  goal well "
        f"under 60 s: {'met' if fleet_hour < 45 else 'NOT met'}"
    )

    # The fleet's 15-minute demand over the day, both ways.
    start, end = DAY, DAY + timedelta(hours=HOURS)

    interval = timedelta(minutes=15)

    def numbers(buckets: list[Any]) -> list[tuple[Any, ...]]:
        return [
            (b.start, b.households, b.readings, b.total_kw, *b.percentiles_kw.values())
            for b in buckets
        ]

    def from_parquet() -> list[tuple[Any, ...]]:
        # What the fleet endpoint and the console call.
        assert parquet_query.summary_answers(start, end, interval)
        return numbers(parquet_query.fleet_demand(start, end, interval))

    def from_parquet_readings() -> list[tuple[Any, ...]]:
        with parquet_query.open_dataset(start, end, [DEMAND]) as dataset:
            return numbers(parquet_query.fleet_demand_of(dataset, start, end, interval))

    def from_json_lines() -> list[tuple[Any, ...]]:
        listing = ", ".join(f"'{path}'" for path in json_paths)
        dataset = parquet_query.Dataset(parquet_query.connect(), {DEMAND: len(json_paths)})
        with dataset:
            dataset.execute(JSON_DEMAND_VIEW.format(files=f"[{listing}]"))
            return numbers(parquet_query.fleet_demand_of(dataset, start, end, interval))

    cpu = cpu_seconds()
    parquet_seconds, parquet_rows = timed(from_parquet, QUERY_RUNS)
    parquet_cpu = (cpu_seconds() - cpu) / QUERY_RUNS
    cpu = cpu_seconds()
    readings_seconds, readings_rows = timed(from_parquet_readings, QUERY_RUNS)
    readings_cpu = (cpu_seconds() - cpu) / QUERY_RUNS
    cpu = cpu_seconds()
    json_seconds, json_rows = timed(from_json_lines)
    json_cpu = cpu_seconds() - cpu
    assert len(parquet_rows) == len(readings_rows) == len(json_rows) == HOURS * 4
    for answer in (parquet_rows, readings_rows):
        for a, b in zip(answer, json_rows, strict=True):
            assert a[:3] == b[:3], (a, b)
            for x, y in zip(a[3:], b[3:], strict=True):
                assert abs(x - y) < 1e-6 * max(1.0, abs(y)), (a, b)
    speedup = json_seconds / parquet_seconds
    print("\n3. Fleet 15-minute demand over the day (the same numbers every way)")
    print(f"  DuckDB read_json over JSON lines      {json_seconds:8.3f} s  (CPU {json_cpu:7.2f} s)")
    print(
        f"  the same SQL over Parquet readings    {readings_seconds:8.3f} s  "
        f"(CPU {readings_cpu:7.2f} s)  {json_seconds / readings_seconds:.0f}x faster "
        f"(CPU: {json_cpu / readings_cpu:.0f}x)"
    )
    print(
        f"  fleet endpoint: the demand summary    {parquet_seconds:8.3f} s  "
        f"(CPU {parquet_cpu:7.2f} s)  {speedup:.0f}x faster (CPU: {json_cpu / parquet_cpu:.0f}x)  "
        f"goal 50x and under 2 s: {'met' if speedup >= 50 and parquet_seconds < 2 else 'NOT met'}"
    )

    # One household-day, both ways.
    cloud_id = f"{HOUSEHOLDS // 2:06x}"

    def household_from_parquet() -> Any:
        return parquet_query.household_rows(DEMAND, cloud_id, start, end)

    def household_from_json_lines() -> int:
        return sum(1 for _ in retrieval.iter_readings(cloud_id, start, end))

    api_seconds, api_rows = timed(household_from_json_lines, QUERY_RUNS)
    day_seconds, day_table = timed(household_from_parquet, QUERY_RUNS)
    day_rows = day_table.num_rows
    assert api_rows == day_rows == HOURS * 360, (api_rows, day_rows)
    # Checked outside the timing: Python datetimes of every row cost more than the read.
    times = day_table.column("meter_time").to_pylist()
    assert times == sorted(times)
    print(f"\n4. One household-day ({day_rows:,} readings)")
    print(f"  API path from JSON lines (retrieval)  {api_seconds * 1000:8.0f} ms")
    print(
        f"  Parquet (pyarrow, row groups pruned)  {day_seconds * 1000:8.0f} ms  "
        f"({api_seconds / day_seconds:.1f}x)  goal no slower: "
        f"{'met' if day_seconds <= api_seconds else 'NOT met'}"
    )
    print(f"\nParquet schema version {parquet.SCHEMA_VERSION}; load at the end {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
