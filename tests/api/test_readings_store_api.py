"""The API's readings, aggregates and coverage from the SQL readings store: the same answers as
from the hour files, for hours in the table, hours only in files, and ranges across both."""

import csv
import io
import math
import shutil
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from ingestion import readings_store
from ingestion.archive import rotation
from ingestion.records import Reading, Source
from tests.factories import EagleUserFactory
from tests.fleet_dataset import AFTER_CLOSE, poll_across_the_hour, rotate_and_export
from tests.hour_files import demand_readings, write

CLOUD_ID = "2a01"
NINE = datetime(2026, 3, 8, 9, tzinfo=UTC)
# Hours 09 to 11 are closed, shipped and loadable then; 12 is still being written.
ROTATION = datetime(2026, 3, 8, 12, 40, tzinfo=UTC)
BASE = f"/api/users/{CLOUD_ID}"

QUERIES = [
    (
        "readings",
        {"start": "2026-03-08T09:00:00Z", "end": "2026-03-08T12:30:00Z", "format": "jsonl"},
    ),
    ("readings", {"start": "2026-03-08T09:59:01Z", "end": "2026-03-08T12:00:00Z", "format": "csv"}),
    (
        "readings",
        {"start": "2026-03-08T10:00:00Z", "end": "2026-03-08T11:00:00Z", "record_type": "price"},
    ),
    (
        "readings",
        {"start": "2026-03-08T11:58:00Z", "end": "2026-03-08T12:02:00Z", "format": "json"},
    ),
    (
        "readings/aggregate",
        {"start": "2026-03-08T09:55:00Z", "end": "2026-03-08T10:35:00Z", "interval": "1m"},
    ),
    (
        "readings/aggregate",
        {"start": "2026-03-08T09:00:07Z", "end": "2026-03-08T12:30:00Z", "interval": "15m"},
    ),
    ("readings/aggregate", {"start": "2026-03-08T08:00:00Z", "end": "2026-03-08T13:00:00Z"}),
    (
        "readings/aggregate",
        {"start": "2026-03-07", "end": "2026-03-09", "interval": "1d", "tz": "America/New_York"},
    ),
    ("coverage", {"start": "2026-03-08T09:00:00Z", "end": "2026-03-08T12:30:00Z"}),
    ("coverage", {"start": "2026-03-08T09:30:30Z", "end": "2026-03-08T12:10:00Z", "gap": 20}),
]


def demand(n: int) -> float:
    return round(2.5 * math.sin(n / 37) + (n % 11) * 0.173 - 0.4, 3)


def extra_readings(record_type: str, values: dict[str, object], minutes: int) -> list[Reading]:
    return [
        Reading(
            cloud_id=CLOUD_ID,
            record_type=record_type,
            meter_timestamp=int((NINE + timedelta(minutes=m)).timestamp()),
            received_at=NINE + timedelta(minutes=m, seconds=1, milliseconds=250),
            source=Source.CLOUD,
            values=values,
            raw={"Zeta": "0x1", "Alpha": "a\\b", "Mid": [1, {"y": None}]},
        )
        for m in range(0, 215, minutes)
    ]


@pytest.fixture
def fleet_day(db: None, settings: Settings) -> Any:
    """09:00 to 12:30 every 6 s, with a five-minute outage at 10:20, prices and totals; the
    hours until 12:00 shipped to the (local) archive."""
    settings.READINGS_LOAD_WORKERS = 1
    EagleUserFactory(cloud_id=CLOUD_ID)
    readings = [
        reading
        for reading in demand_readings(CLOUD_ID, NINE, 2100, demand_kw=demand)
        if not 200 * 6 <= (reading.meter_timestamp - NINE.timestamp()) < 205 * 6
    ]
    write(readings)
    write(extra_readings("price", {"price": 0.0603, "currency": "USD", "tier": None}, 7))
    write(extra_readings("summation", {"delivered_kwh": 46873.298, "received_kwh": 0.5}, 5))
    with time_machine.travel(ROTATION, tick=False):
        assert rotation.rotate().ok
    return settings


def answers(client: APIClient) -> list[object]:
    results: list[object] = []
    for path, query in QUERIES:
        response = client.get(f"{BASE}/{path}", query)
        assert response.status_code == 200, (path, query, response.content[:300])
        body = b"".join(response.streaming_content) if response.streaming else response.content
        if query.get("format") == "csv":
            rows = list(csv.reader(io.StringIO(body.decode())))
            # jsonb keeps an object's keys in an order of its own: compare raw as data.
            results.append([rows[0]] + [row[:-1] + [orjson.loads(row[-1])] for row in rows[1:]])
        elif query.get("format") == "jsonl":
            results.append([orjson.loads(line) for line in body.splitlines()])
        else:
            results.append(orjson.loads(body))
    return results


def test_the_api_answers_the_same_from_the_table_as_from_the_files(
    fleet_day, viewer_client: APIClient
) -> None:
    from_files = answers(viewer_client)

    fleet_day.READINGS_STORE = "postgres"
    report = readings_store.run_pass(now=ROTATION)
    assert [load.hour.hour for load in report.loads] == [9, 10, 11]
    # The archive gone, only the table can answer for 09:00 to 12:00.
    shutil.rmtree(fleet_day.ARCHIVE_ROOT)
    from_table = answers(viewer_client)

    assert from_table == from_files
    # Demand every 6 s but the outage, prices every 7 and totals every 5 minutes, to 12:30.
    assert len(from_files[0]) == 2100 - 5 + 30 + 42


def test_hours_not_loaded_yet_are_read_from_files_beside_loaded_ones(
    fleet_day, viewer_client: APIClient
) -> None:
    from_files = answers(viewer_client)

    fleet_day.READINGS_STORE = "postgres"
    hours = readings_store.pending_hours(ROTATION)
    readings_store.load_pending([hours[1]], now=ROTATION)  # 10:00 only
    mixed = answers(viewer_client)

    assert mixed == from_files
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(DISTINCT date_trunc('hour', meter_time)) FROM readings")
        assert cursor.fetchone()[0] == 1


def test_readings_without_raw_in_the_table_come_from_files(
    fleet_day, viewer_client: APIClient
) -> None:
    from_files = answers(viewer_client)

    fleet_day.READINGS_STORE = "postgres"
    fleet_day.READINGS_KEEP_RAW = False
    readings_store.run_pass(now=ROTATION)

    assert answers(viewer_client) == from_files


FLEET_QUERIES = [
    {"start": "2026-09-21T09:40:00Z", "end": "2026-09-21T10:05:00Z", "interval": "1m"},
    {"start": "2026-09-21T09:00:00Z", "end": "2026-09-21T11:00:00Z", "interval": "15m"},
    {"start": "2026-09-21T09:59:30Z", "end": "2026-09-21T10:02:10Z", "interval": "1h"},
    {"start": "2026-09-21T00:00:00Z", "end": "2026-09-22T00:00:00Z", "interval": "1d"},
]


def fleet_answers(client: APIClient) -> list[dict[str, Any]]:
    documents = []
    for query in FLEET_QUERIES:
        response = client.get("/api/fleet/readings/aggregate", query)
        assert response.status_code == 200, (query, response.content[:300])
        documents.append(response.json())
    return documents


def test_the_fleet_aggregate_answers_the_same_from_the_table_in_one_query(
    settings: Settings, viewer_client: APIClient
) -> None:
    settings.READINGS_RETENTION_DAYS = 0
    settings.READINGS_LOAD_WORKERS = 1
    poll_across_the_hour(settings)
    rotate_and_export(AFTER_CLOSE)
    from_dataset = fleet_answers(viewer_client)

    settings.READINGS_STORE = "postgres"
    assert fleet_answers(viewer_client) == from_dataset  # nothing loaded yet: the dataset answers
    nine, ten = readings_store.pending_hours(AFTER_CLOSE)
    readings_store.load_pending([nine], now=AFTER_CLOSE)
    assert fleet_answers(viewer_client) == from_dataset  # 10:00 not loaded yet: the dataset
    readings_store.load_pending([ten], now=AFTER_CLOSE)
    with CaptureQueriesContext(connection) as queries:
        from_table = fleet_answers(viewer_client)

    assert {document["source"] for document in from_dataset} == {"parquet"}
    assert {document["source"] for document in from_table} == {"table"}
    assert [{**document, "source": "parquet"} for document in from_table] == from_dataset
    assert all(max(r["households"] for r in document["results"]) == 4 for document in from_table)
    table_queries = [q["sql"] for q in queries.captured_queries if "FROM readings\n" in q["sql"]]
    assert len(table_queries) == len(FLEET_QUERIES)
