"""Querying the Parquet dataset in place: `manage.py query` gives the numbers computed from the
JSON-lines archive, and DuckDB, pyarrow and pandas read cloud_id as a string."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import duckdb
import pandas
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from django.core.management import CommandError, call_command
from pytest_django.fixtures import Settings

from ingestion import parquet, parquet_query
from ingestion.archive import store
from ingestion.models import DatasetFile, DatasetFileContent
from tests.fleet_dataset import (
    AFTER_CLOSE,
    BOUNDARY,
    archived_records,
    poll_across_the_hour,
    rotate_and_export,
)
from tests.hour_files import demand_readings, write

pytestmark = pytest.mark.django_db


def query(*args: str) -> str:
    out = StringIO()
    call_command("query", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_query_gives_the_numbers_computed_from_json_lines(
    settings: Settings, any_archive: Any
) -> None:
    poll_across_the_hour(settings)
    rotate_and_export(AFTER_CLOSE)
    expected: dict[str, list[float]] = defaultdict(list)
    for record in archived_records():
        if record["record_type"] == "demand":
            expected[record["cloud_id"]].append(record["demand_kw"])

    output = query(
        "SELECT cloud_id, count(*) AS readings, sum(demand_kw) AS kw FROM demand "
        "GROUP BY cloud_id ORDER BY cloud_id",
        "--format",
        "csv",
    )

    rows = list(csv.DictReader(io.StringIO(output)))
    assert [row["cloud_id"] for row in rows] == sorted(expected)
    for row in rows:
        values = expected[row["cloud_id"]]
        assert int(row["readings"]) == len(values)
        assert float(row["kw"]) == pytest.approx(sum(values))


def test_query_prints_a_table_and_writes_csv_and_parquet_files(tmp_path: Path) -> None:
    write(demand_readings("000001", AFTER_CLOSE.replace(minute=0) - parquet.hourfiles.HOUR, 3))
    rotate_and_export(AFTER_CLOSE)
    sql = "SELECT cloud_id, demand_kw, date FROM demand ORDER BY meter_time"

    table = query(sql, "--max-rows", "2")
    assert table.splitlines()[0].split() == ["cloud_id", "demand_kw", "date"]
    assert table.splitlines()[2].split() == ["000001", "1", "2026-09-21"]
    assert "(3 rows, 1 not shown)" in table

    query(sql, "--output", str(tmp_path / "out.csv"))
    assert (tmp_path / "out.csv").read_text().splitlines()[1] == '"000001",1,2026-09-21'
    query(sql, "--output", str(tmp_path / "out.parquet"))
    assert pq.read_table(tmp_path / "out.parquet")["cloud_id"].to_pylist() == ["000001"] * 3


def test_one_households_rows_are_its_json_lines_readings_in_meter_time_order(
    settings: Settings, any_archive: Any
) -> None:
    poll_across_the_hour(settings)
    rotate_and_export(AFTER_CLOSE)
    cloud_id = min(r["cloud_id"] for r in archived_records())
    expected = sorted(
        (record["meter_timestamp"], record["demand_kw"])
        for record in archived_records()
        if record["record_type"] == "demand" and record["cloud_id"] == cloud_id
    )
    start = BOUNDARY - timedelta(hours=1)

    table = parquet_query.household_rows("demand", cloud_id, start, BOUNDARY + timedelta(hours=1))

    assert table.schema == parquet.arrow_schema("demand")
    assert set(table["cloud_id"].to_pylist()) == {cloud_id}
    rows = [
        (int(at.timestamp()), kw)
        for at, kw in zip(
            table["meter_time"].to_pylist(), table["demand_kw"].to_pylist(), strict=True
        )
    ]
    assert rows == expected
    assert any(at < BOUNDARY.timestamp() for at, _ in rows)
    assert any(at >= BOUNDARY.timestamp() for at, _ in rows)
    later = parquet_query.household_rows(
        "demand", cloud_id, BOUNDARY, BOUNDARY + timedelta(hours=1)
    )
    assert later["meter_time"].to_pylist() == [
        at for at in table["meter_time"].to_pylist() if at >= BOUNDARY
    ]
    assert parquet_query.household_rows("demand", "ffffff", start, BOUNDARY).num_rows == 0


def test_a_bad_query_is_a_clear_error() -> None:
    with pytest.raises(CommandError, match="the query failed: .*no_such_column"):
        query("SELECT no_such_column FROM demand")
    with pytest.raises(CommandError, match="--format parquet needs --output"):
        query("SELECT 1", "--format", "parquet")


def test_duckdb_pyarrow_and_pandas_read_cloud_id_as_a_string(any_archive: Any) -> None:
    write(demand_readings("000001", AFTER_CLOSE.replace(minute=0) - parquet.hourfiles.HOUR, 3))
    rotate_and_export(AFTER_CLOSE)
    filesystem, root = store.open_archive().arrow_filesystem()
    prefix = f"{root}/{parquet.prefix()}"

    dataset = ds.dataset(prefix, filesystem=filesystem, format="parquet", partitioning="hive")
    table = dataset.to_table()
    assert str(table.schema.field("cloud_id").type) == "string"
    assert table["cloud_id"].to_pylist() == ["000001"] * 3

    frame = pandas.read_parquet(prefix, filesystem=filesystem)
    assert frame["cloud_id"].tolist() == ["000001"] * 3
    assert pandas.api.types.is_string_dtype(frame["cloud_id"])
    assert str(frame["meter_time"].dt.tz) == "UTC"

    connection = duckdb.connect(config={"autoinstall_known_extensions": False})
    connection.register("demand", dataset)
    assert connection.sql("SELECT typeof(cloud_id), cloud_id FROM demand LIMIT 1").fetchall() == [
        ("VARCHAR", "000001")
    ]
    if any_archive == "local":
        # DuckDB's own reader over the Hive layout, as the docs show.
        rows = duckdb.sql(
            f"SELECT typeof(cloud_id), cloud_id, record_type FROM read_parquet("
            f"'{prefix}/*/*/*.parquet', hive_partitioning = true) LIMIT 1"
        ).fetchall()
        assert rows == [("VARCHAR", "000001", "demand")]


def readings_answer(
    start: datetime, end: datetime, interval: timedelta
) -> list[parquet_query.FleetBucket]:
    with parquet_query.open_dataset(start, end, ["demand"]) as dataset:
        return parquet_query.fleet_demand_of(dataset, start, end, interval)


def assert_same_buckets(
    got: list[parquet_query.FleetBucket], expected: list[parquet_query.FleetBucket]
) -> None:
    assert [(b.start, b.households, b.readings) for b in got] == [
        (b.start, b.households, b.readings) for b in expected
    ]
    for a, b in zip(got, expected, strict=True):
        assert (a.mean_kw, a.total_kw) == (pytest.approx(b.mean_kw), pytest.approx(b.total_kw))
        assert a.percentiles_kw == pytest.approx(b.percentiles_kw)


@pytest.mark.parametrize(
    ("start", "end", "interval"),
    [
        (BOUNDARY - timedelta(hours=1), BOUNDARY + timedelta(hours=1), timedelta(minutes=15)),
        (BOUNDARY - timedelta(hours=1), BOUNDARY + timedelta(hours=1), timedelta(minutes=1)),
        (BOUNDARY - timedelta(minutes=1), BOUNDARY + timedelta(minutes=1), timedelta(minutes=1)),
        (BOUNDARY - timedelta(hours=1), BOUNDARY + timedelta(hours=1), timedelta(days=1)),
    ],
    ids=["15m", "1m", "two-minutes-across-the-hour", "1d"],
)
def test_fleet_demand_from_the_summary_equals_the_readings_answer(
    settings: Settings, start: datetime, end: datetime, interval: timedelta
) -> None:
    poll_across_the_hour(settings)
    rotate_and_export(AFTER_CLOSE)

    assert parquet_query.summary_answers(start, end, interval)
    buckets = parquet_query.fleet_demand(start, end, interval)

    assert max(b.households for b in buckets) == 4
    assert_same_buckets(buckets, readings_answer(start, end, interval))


def test_fleet_demand_reads_the_readings_where_the_summary_cannot_answer(
    settings: Settings,
) -> None:
    poll_across_the_hour(settings)
    rotate_and_export(AFTER_CLOSE)
    start, end = BOUNDARY - timedelta(hours=1), BOUNDARY + timedelta(hours=1)
    quarter = timedelta(minutes=15)

    # Not whole minutes: a minute of the summary would straddle a bucket or the range's ends.
    assert not parquet_query.summary_answers(start, end, timedelta(seconds=90))
    assert not parquet_query.summary_answers(BOUNDARY - timedelta(seconds=30), end, quarter)
    part = (BOUNDARY - timedelta(seconds=30), BOUNDARY + timedelta(seconds=12))
    seconds = parquet_query.fleet_demand(*part, timedelta(seconds=6))
    assert sum(b.readings for b in seconds) == sum(
        1
        for r in archived_records()
        if r["record_type"] == "demand"
        and part[0].timestamp() <= r["meter_timestamp"] < part[1].timestamp()
    )
    assert_same_buckets(seconds, readings_answer(*part, timedelta(seconds=6)))

    # An hour exported before the summary existed has none until it is exported again.
    DatasetFile.objects.filter(
        content=DatasetFileContent.DEMAND_MINUTES, dataset_hour__hour=BOUNDARY
    ).delete()
    assert not parquet_query.summary_answers(start, end, quarter)
    assert parquet_query.summary_answers(start, BOUNDARY, quarter)
    assert_same_buckets(
        parquet_query.fleet_demand(start, end, quarter), readings_answer(start, end, quarter)
    )
