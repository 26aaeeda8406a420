"""GET /api/fleet/readings/aggregate (from the Parquet dataset) gives the numbers computed from the
JSON-lines archive; GET /api/users/{cloud_id}/readings?format=parquet serves a Parquet file, from
the dataset for the hours it holds as they are and from JSON lines for the others, with the same
rows either way."""

from __future__ import annotations

import io
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import time_machine
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from ingestion import parquet, retrieval
from ingestion.archive import rotation, store
from ingestion.models import HourFile
from tests.factories import EagleUserFactory
from tests.fleet_dataset import (
    AFTER_CLOSE,
    BOUNDARY,
    archived_records,
    poll_across_the_hour,
    rotate_and_export,
)
from tests.hour_files import demand_readings, write

URL = "/api/fleet/readings/aggregate"

pytestmark = pytest.mark.django_db


def percentile(values: list[float], share: float) -> float:
    """Linear interpolation between closest ranks, as DuckDB's quantile_cont."""
    ordered = sorted(values)
    position = share * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def expected_minutes() -> dict[str, dict[str, float]]:
    """Per minute: each household's mean demand, then across the households."""
    readings: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for record in archived_records():
        if record["record_type"] == "demand":
            minute = record["meter_timestamp"] // 60 * 60
            readings[minute][record["cloud_id"]].append(record["demand_kw"])
    expected = {}
    for minute, households in readings.items():
        means = [sum(values) / len(values) for values in households.values()]
        start = datetime.fromtimestamp(minute, BOUNDARY.tzinfo).strftime("%Y-%m-%dT%H:%M:%SZ")
        expected[start] = {
            "households": len(means),
            "readings": sum(len(values) for values in households.values()),
            "mean_kw": sum(means) / len(means),
            "total_kw": sum(means),
            "p5_kw": percentile(means, 0.05),
            "p50_kw": percentile(means, 0.5),
            "p95_kw": percentile(means, 0.95),
        }
    return expected


def test_it_gives_the_fleet_numbers_computed_from_json_lines(
    settings: Settings, any_archive: Any, viewer_client: APIClient
) -> None:
    poll_across_the_hour(settings)
    rotate_and_export(AFTER_CLOSE)
    expected = expected_minutes()

    response = viewer_client.get(
        URL, {"start": "2026-09-21T09:40:00Z", "end": "2026-09-21T10:05:00Z", "interval": "1m"}
    )

    assert response.status_code == 200, response.content
    document = response.json()
    assert (document["source"], document["hours_in_range"], document["hours_exported"]) == (
        "parquet",
        2,
        2,
    )
    results = document["results"]
    assert [r["start"] for r in results][:2] == ["2026-09-21T09:40:00Z", "2026-09-21T09:41:00Z"]
    assert len(results) == 25
    assert results[0]["households"] == 0 and results[0]["mean_kw"] is None
    found = {r["start"]: r for r in results if r["households"]}
    assert set(found) == set(expected)
    for start, numbers in expected.items():
        for name, value in numbers.items():
            assert found[start][name] == pytest.approx(value, abs=1e-6), (start, name)


def test_it_refuses_a_bad_interval_and_needs_a_sign_in(viewer_client: APIClient) -> None:
    range_ = {"start": "2026-09-21T09:00:00Z", "end": "2026-09-21T10:00:00Z"}
    response = viewer_client.get(URL, {**range_, "interval": "7m"})
    assert response.status_code == 400
    assert "interval" in response.json()["detail"]
    assert APIClient().get(URL, range_).status_code == 401


def test_readings_come_as_one_parquet_file_in_the_dataset_columns(
    any_archive: Any, viewer_client: APIClient
) -> None:
    EagleUserFactory(cloud_id="000a1b")
    write(demand_readings("000a1b", BOUNDARY, 700))
    rotate_and_export(AFTER_CLOSE)

    response = viewer_client.get(
        "/api/users/000a1b/readings",
        {"start": "2026-09-21T10:00:00Z", "end": "2026-09-21T11:00:00Z", "format": "parquet"},
    )

    assert response.status_code == 200
    assert response["Content-Type"] == "application/vnd.apache.parquet"
    assert (
        'filename="000a1b-20260921T100000Z-20260921T110000Z.parquet"'
        in (response["Content-Disposition"])
    )
    table = pq.read_table(io.BytesIO(response.content))
    assert table.num_rows == 600
    assert table.column_names[:5] == [
        "record_type",
        "cloud_id",
        "meter_time",
        "received_at",
        "source",
    ]
    assert {"demand_kw", "delivered_kwh", "price", "tier", "raw"} <= set(table.column_names)
    assert set(table["cloud_id"].to_pylist()) == {"000a1b"}
    times = table["meter_time"].to_pylist()
    assert times == sorted(times) and times[0] == BOUNDARY


def parquet_readings(client: APIClient, cloud_id: str, start: datetime, end: datetime) -> pa.Table:
    response = client.get(
        f"/api/users/{cloud_id}/readings",
        {"start": start.isoformat(), "end": end.isoformat(), "format": "parquet"},
    )
    assert response.status_code == 200, response.content
    return pq.read_table(io.BytesIO(response.content))


def json_lines_readings(cloud_id: str, start: datetime, end: datetime) -> pa.Table:
    """The file the JSON-lines path makes of the same range, read back."""
    table = parquet.readings_table(retrieval.iter_readings(cloud_id, start, end))
    return pq.read_table(io.BytesIO(parquet.parquet_bytes(table)))


def test_parquet_readings_of_exported_hours_come_from_the_dataset_with_the_json_lines_rows(
    settings: Settings, any_archive: Any, viewer_client: APIClient
) -> None:
    poll_across_the_hour(settings)
    rotate_and_export(AFTER_CLOSE)
    cloud_id = HourFile.objects.order_by("cloud_id").values_list("cloud_id", flat=True)[0]
    # Readings of the next hour, still in an open hour file: not in the dataset.
    later = BOUNDARY + timedelta(hours=1)
    write(demand_readings(cloud_id, later, 5))
    start, end = BOUNDARY - timedelta(minutes=30), later + timedelta(minutes=30)
    expected = json_lines_readings(cloud_id, start, end)
    assert set(expected["record_type"].to_pylist()) == {"demand", "summation", "price"}

    # The exported hours' JSON lines are gone from the archive: only the dataset has them.
    archive = store.open_archive()
    for key in HourFile.objects.filter(hour__lt=later).values_list("key", flat=True):
        archive.delete(key)
    served = parquet_readings(viewer_client, cloud_id, start, end)

    assert served.num_rows == expected.num_rows > 5
    assert served.equals(expected)
    assert served["meter_time"].to_pylist()[-5:] == [
        later + timedelta(seconds=6 * n) for n in range(5)
    ]


def test_an_hour_with_a_late_part_not_exported_yet_comes_from_json_lines(
    settings: Settings, any_archive: Any, viewer_client: APIClient
) -> None:
    EagleUserFactory(cloud_id="000a1b")
    write(demand_readings("000a1b", BOUNDARY, 20))
    rotate_and_export(AFTER_CLOSE)
    # A late part of the exported hour, shipped and verified; the dataset has yet to catch up.
    write(demand_readings("000a1b", BOUNDARY + timedelta(minutes=30), 3))
    with time_machine.travel(AFTER_CLOSE + timedelta(hours=1), tick=False):
        assert rotation.rotate().conflicts == 0
    start, end = BOUNDARY, BOUNDARY + timedelta(hours=1)

    served = parquet_readings(viewer_client, "000a1b", start, end)

    assert served.num_rows == 23
    assert served.equals(json_lines_readings("000a1b", start, end))
