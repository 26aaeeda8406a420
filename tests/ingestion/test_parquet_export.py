"""A fleet polled across an hour boundary, rotated and exported: the Parquet dataset holds every
JSON-lines reading once, with equal values; a late part replaces its hour with a new complete
version; a crash at any step leaves a state the next export completes."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import time_machine
from pytest_django.fixtures import Settings

from ingestion import hourfiles, parquet, parquet_export
from ingestion.archive import rotation, store
from ingestion.models import (
    DatasetFile,
    DatasetFileContent,
    DatasetFileState,
    DatasetHour,
    DatasetHourState,
    HourFile,
)
from tests.fleet_dataset import (
    AFTER_CLOSE,
    BOUNDARY,
    archived_records,
    poll_across_the_hour,
    rotate_and_export,
)
from tests.hour_files import demand_readings, write

pytestmark = pytest.mark.django_db


def dataset_rows() -> list[dict[str, Any]]:
    """Every row of every file under the prefix, read with pyarrow alone (no database)."""
    filesystem, root = store.open_archive().arrow_filesystem()
    rows = []
    selector = pafs.FileSelector(f"{root}/{parquet.prefix()}", recursive=True, allow_not_found=True)
    for info in filesystem.get_file_info(selector):
        if info.type != pafs.FileType.File:
            continue
        record_type = info.path.split("/record_type=")[1].split("/")[0]
        for row in pq.read_table(info.path, filesystem=filesystem).to_pylist():
            rows.append({**row, "record_type": record_type})
    return rows


def summary_rows() -> list[dict[str, Any]]:
    """Every row of every current demand summary file, read with pyarrow."""
    filesystem, root = store.open_archive().arrow_filesystem()
    files = DatasetFile.objects.filter(
        content=DatasetFileContent.DEMAND_MINUTES, state=DatasetFileState.CURRENT
    ).order_by("dataset_hour__hour", "key")
    return [
        row
        for key in files.values_list("key", flat=True)
        for row in pq.read_table(f"{root}/{key}", filesystem=filesystem).to_pylist()
    ]


def as_record(row: dict[str, Any]) -> dict[str, Any]:
    """A dataset row in the JSON-lines record's terms, to compare values."""
    values = {name: row[name] for name in parquet.RECORD_TYPES[row["record_type"]].value_schema}
    return {
        "record_type": row["record_type"],
        "cloud_id": row["cloud_id"],
        "meter_timestamp": int(row["meter_time"].timestamp()),
        "received_at": row["received_at"],
        "source": row["source"],
        "format_version": row["format_version"],
        "raw": orjson.loads(row["raw"]),
        **values,
    }


def as_comparable(record: dict[str, Any]) -> dict[str, Any]:
    values = {
        name: record[name] for name in parquet.RECORD_TYPES[record["record_type"]].value_schema
    }
    return {
        "record_type": record["record_type"],
        "cloud_id": record["cloud_id"],
        "meter_timestamp": record["meter_timestamp"],
        "received_at": datetime.fromisoformat(record["received_at"]),
        "source": record["source"],
        "format_version": record["format_version"],
        "raw": record["raw"],
        **values,
    }


def identity(record: dict[str, Any]) -> tuple[str, str, int]:
    return record["cloud_id"], record["record_type"], record["meter_timestamp"]


def test_it_exports_every_polled_reading_once_with_equal_values(
    settings: Settings, any_archive: Any
) -> None:
    poll_across_the_hour(settings)
    report = rotate_and_export(AFTER_CLOSE)

    assert report.ok and report.exported == 2, report.summary()
    expected = {identity(r): as_comparable(r) for r in archived_records()}
    assert {kind for _, kind, _ in expected} == {"demand", "summation", "price"}
    rows = [as_record(row) for row in dataset_rows()]
    assert len(rows) == len(expected) == report.rows
    assert {identity(row): row for row in rows} == expected
    hours = DatasetHour.objects.order_by("hour")
    assert [(h.hour, h.state, h.version) for h in hours] == [
        (BOUNDARY - timedelta(hours=1), DatasetHourState.EXPORTED, 1),
        (BOUNDARY, DatasetHourState.EXPORTED, 1),
    ]


def test_a_second_export_finds_nothing_to_do(settings: Settings, any_archive: Any) -> None:
    poll_across_the_hour(settings, users=2, ticks=15)
    rotate_and_export(AFTER_CLOSE)
    keys = set(DatasetFile.objects.values_list("key", "sha256"))

    again = rotate_and_export(AFTER_CLOSE + timedelta(hours=1))

    assert again.hours_found == 0 and again.exported == 0
    assert set(DatasetFile.objects.values_list("key", "sha256")) == keys


def test_files_are_sorted_by_household_then_time_under_hive_partitions(
    settings: Settings, any_archive: Any
) -> None:
    poll_across_the_hour(settings, users=3, ticks=15)
    rotate_and_export(AFTER_CLOSE)

    demand = DatasetFile.objects.get(
        record_type="demand", content=DatasetFileContent.READINGS, dataset_hour__hour=BOUNDARY
    )
    assert demand.key == (
        "rainforest-parquet/record_type=demand/date=2026-09-21/hour-2026-09-21-10-v1-0.parquet"
    )
    filesystem, root = store.open_archive().arrow_filesystem()
    table = ds.dataset(f"{root}/{demand.key}", filesystem=filesystem).to_table()
    keys = list(zip(table["cloud_id"].to_pylist(), table["meter_time"].to_pylist(), strict=True))
    assert keys == sorted(keys)
    assert table.schema.metadata[parquet.SCHEMA_VERSION_KEY] == b"1"
    assert table.schema.names == [
        "cloud_id",
        "meter_time",
        "received_at",
        "source",
        "demand_kw",
        "format_version",
        "raw",
    ]


def test_each_hours_demand_is_summarised_per_household_and_minute(
    settings: Settings, any_archive: Any
) -> None:
    poll_across_the_hour(settings, users=3, ticks=25)
    rotate_and_export(AFTER_CLOSE)
    minutes: dict[tuple[str, datetime], list[float]] = defaultdict(list)
    for record in archived_records():
        if record["record_type"] == "demand":
            minute = datetime.fromtimestamp(record["meter_timestamp"] // 60 * 60, UTC)
            minutes[record["cloud_id"], minute].append(record["demand_kw"])

    summary = DatasetFile.objects.get(
        content=DatasetFileContent.DEMAND_MINUTES, dataset_hour__hour=BOUNDARY
    )
    assert summary.key == (
        "rainforest-parquet-summary/demand_minutes/date=2026-09-21/hour-2026-09-21-10-v1-0.parquet"
    )
    rows = summary_rows()
    assert [(r["cloud_id"], r["minute"]) for r in rows] == sorted(
        minutes, key=lambda key: (key[1].hour, key)
    )
    for row in rows:
        values = minutes[row["cloud_id"], row["minute"]]
        assert row["readings"] == len(values)
        assert row["demand_kw_sum"] == pytest.approx(sum(values))
        assert (row["demand_kw_min"], row["demand_kw_max"]) == (min(values), max(values))
    assert {r["minute"].hour for r in rows} == {9, 10}


def test_files_store_times_in_microseconds_and_repeating_values_as_dictionaries() -> None:
    start = BOUNDARY
    demand = [r.to_record() for r in demand_readings("00a1b2", start, 400)]
    totals = [
        {**record, "record_type": "summation", "delivered_kwh": 100 + n / 1000, "received_kwh": 0.0}
        for n, record in enumerate(demand)
    ]
    tables = dict(parquet.typed_tables([*demand, *totals]))

    for record_type, table in tables.items():
        file = pq.ParquetFile(pa.BufferReader(parquet.parquet_bytes(table)))
        columns = file.metadata.row_group(0)
        encodings = {
            columns.column(i).path_in_schema: columns.column(i).encodings
            for i in range(columns.num_columns)
        }
        dictionary = {name for name, used in encodings.items() if "RLE_DICTIONARY" in used}
        if record_type == "demand":
            # Seven values over 400 readings; meter totals are new at every reading.
            assert dictionary == {"cloud_id", "source", "demand_kw"}
        else:
            assert dictionary == {"cloud_id", "source", "received_kwh"}
        meter_time = file.schema.column(1)
        assert meter_time.name == "meter_time"
        assert orjson.loads(meter_time.logical_type.to_json())["timeUnit"] == "microseconds"
        back = file.read()
        assert back.schema.field("meter_time").type == pa.timestamp("us", tz="UTC")
        assert back.equals(table.cast(back.schema))


def test_a_late_part_replaces_its_hour_with_a_new_complete_version(
    settings: Settings, any_archive: Any
) -> None:
    hour = BOUNDARY
    write(demand_readings("00a1", hour, 20) + demand_readings("0b02", hour, 10))
    rotate_and_export(AFTER_CLOSE)
    first = set(DatasetFile.objects.values_list("key", flat=True))

    # A reading of the sealed hour arrives late: a late part, shipped an hour later.
    write(demand_readings("00a1", hour + timedelta(minutes=30), 1))
    report = rotate_and_export(AFTER_CLOSE + timedelta(hours=1))

    assert report.exported == 1, report.summary()
    row = DatasetHour.objects.get(hour=hour)
    assert (row.state, row.version, row.rows, row.source_files) == (
        DatasetHourState.EXPORTED,
        2,
        31,
        3,
    )
    files = DatasetFile.objects.all()
    assert {f.state for f in files} == {DatasetFileState.CURRENT}
    assert not first & {f.key for f in files}
    rows = dataset_rows()
    assert len(rows) == 31
    assert sorted(identity(as_record(r)) for r in rows) == sorted(
        identity(r) for r in archived_records()
    )
    # The summary is of the new version too: 00a1's minute 30 holds the late reading.
    minutes = {(r["cloud_id"], r["minute"]): r["readings"] for r in summary_rows()}
    assert sum(minutes.values()) == 31
    assert minutes[("00a1", hour + timedelta(minutes=30))] == 1


def test_an_hour_waits_until_all_its_hour_files_are_verified(
    settings: Settings, any_archive: Any
) -> None:
    write(demand_readings("00a1", BOUNDARY, 5) + demand_readings("0b02", BOUNDARY, 5))
    # Another object at one file's key: a conflict, which keeps that file out of the archive.
    archive_store = store.open_archive()
    key = hourfiles.archive_key("0b02", BOUNDARY)
    archive_store.create(key, b"other", 5, hashlib.sha256(b"other").hexdigest(), "text/plain")
    report = rotate_and_export(AFTER_CLOSE, conflicts=1)
    assert (report.exported, report.waiting) == (0, 1)
    assert not DatasetFile.objects.exists()

    # The operator removes the stray object and retries: the hour is exported whole.
    archive_store.delete(key)
    assert HourFile.objects.get(cloud_id="0b02").retry()
    report = rotate_and_export(AFTER_CLOSE + timedelta(minutes=10))
    assert report.exported == 1
    assert DatasetHour.objects.get().rows == 10


class Killed(BaseException):
    pass


@pytest.mark.parametrize("step", list(parquet_export.ExportStep))
def test_a_crash_after_any_step_leaves_a_state_the_next_export_completes(
    settings: Settings, step: Any
) -> None:
    settings.ROTATE_LEASE_SECONDS = 30
    write(demand_readings("00a1", BOUNDARY, 20))
    rotate_and_export(AFTER_CLOSE)
    # A late part makes the hour due again; the second version's export dies after `step`.
    write(demand_readings("00a1", BOUNDARY + timedelta(minutes=40), 3))

    def die(at: parquet_export.ExportStep, hour: datetime) -> None:
        if at == step:
            raise Killed(at)

    with pytest.raises(Killed):
        rotate_and_export(AFTER_CLOSE + timedelta(hours=1), after_step=die)
    with time_machine.travel(AFTER_CLOSE + timedelta(hours=1, minutes=1), tick=False):
        parquet_export.export()

    row = DatasetHour.objects.get()
    assert (row.state, row.rows) == (DatasetHourState.EXPORTED, 23)
    files = DatasetFile.objects.all()
    assert [(f.content, f.state) for f in files.order_by("content")] == [
        (DatasetFileContent.DEMAND_MINUTES, DatasetFileState.CURRENT),
        (DatasetFileContent.READINGS, DatasetFileState.CURRENT),
    ]
    # The prefixes hold exactly the current version: nothing planned, nothing obsolete.
    archive = store.open_archive()
    listed = {
        key
        for prefix in (parquet.prefix(), parquet.summary_prefix())
        for key, _ in archive.keys(prefix)
    }
    assert listed == {f.key for f in files}
    assert len(dataset_rows()) == 23
    assert sum(row["readings"] for row in summary_rows()) == 23


def test_a_reading_repeated_in_a_late_part_is_exported_once(any_archive: Any) -> None:
    # The same reading twice: once in the hour file, once more in a late part after the seal.
    write(demand_readings("00a1", BOUNDARY, 3))
    with time_machine.travel(AFTER_CLOSE, tick=False):
        assert rotation.rotate().ok
    write(demand_readings("00a1", BOUNDARY, 1, demand_kw=lambda n: 9.0))
    report = rotate_and_export(AFTER_CLOSE + timedelta(hours=1))

    assert (report.rows, report.duplicates) == (3, 1)
    row = DatasetHour.objects.get()
    assert (row.rows, row.duplicates, row.source_files) == (3, 1, 2)
    # The copy of the hour file itself is kept, not the late one.
    assert sorted(r["demand_kw"] for r in dataset_rows()) == [1.0, 1.25, 1.5]


def test_a_purged_household_leaves_the_dataset_at_the_next_export(any_archive: Any) -> None:
    from ingestion.purging import purge_user_data

    write(demand_readings("00a1", BOUNDARY, 5) + demand_readings("0b02", BOUNDARY, 4))
    rotate_and_export(AFTER_CLOSE)

    assert purge_user_data("00a1").parquet_hours == 1
    with time_machine.travel(AFTER_CLOSE + timedelta(hours=1), tick=False):
        assert parquet_export.export().exported == 1

    assert {row["cloud_id"] for row in dataset_rows()} == {"0b02"}
    assert DatasetHour.objects.get().rows == 4
