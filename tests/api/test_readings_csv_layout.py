"""One CSV layout of readings: the API's format=csv and the console's export, whatever `tz`."""

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from ingestion.readings_csv import COLUMNS
from ingestion.records import Reading, Source
from tests.factories import EagleUserFactory, OperatorFactory
from tests.hour_files import demand_readings, write

CLOUD_ID = "00a1b2"
NINE = datetime(2026, 3, 8, 9, tzinfo=UTC)
URL = f"/api/users/{CLOUD_ID}/readings"
RANGE = {"start": "2026-03-08T09:00:00Z", "end": "2026-03-08T10:00:00Z", "format": "csv"}


def reading(record_type: str, minute: int, values: dict, raw: dict) -> Reading:
    meter_time = NINE + timedelta(minutes=minute, seconds=1)
    return Reading(
        cloud_id=CLOUD_ID,
        record_type=record_type,
        meter_timestamp=int(meter_time.timestamp()),
        received_at=meter_time + timedelta(seconds=1),
        source=Source.SIMULATOR,
        values=values,
        raw=raw,
    )


@pytest.fixture
def readings(db: None) -> Any:
    """Demand every 6 s, one summation, and one demand reading with a value of a newer format."""
    user = EagleUserFactory(cloud_id=CLOUD_ID)
    summation = reading(
        "summation",
        30,
        {"delivered_kwh": 1234.5, "received_kwh": 6.25},
        {"SummationDelivered": "0x0012d65a"},
    )
    newer = reading("demand", 45, {"demand_kw": 2.5, "power_factor": 0.97}, {"Demand": "0x0009c4"})
    write([*demand_readings(CLOUD_ID, NINE, count=10), summation, newer])
    return user


def rows_of(response: Any) -> tuple[list[str], list[dict[str, str]]]:
    text = b"".join(response.streaming_content).decode()
    reader = csv.DictReader(io.StringIO(text))
    return list(reader.fieldnames or []), list(reader)


def test_it_writes_the_same_columns_with_and_without_a_time_zone(
    viewer_client: APIClient, readings
) -> None:
    utc_header, utc_rows = rows_of(viewer_client.get(URL, RANGE))
    paris_header, paris_rows = rows_of(viewer_client.get(URL, {**RANGE, "tz": "Europe/Paris"}))

    assert utc_header == paris_header == list(COLUMNS)
    assert not any(name.endswith("_local") for name in utc_header)
    assert utc_rows[0]["meter_time"] == "2026-03-08T09:00:00Z"
    assert paris_rows[0]["meter_time"] == "2026-03-08T10:00:00+01:00"
    assert paris_rows[0]["received_at"] == "2026-03-08T10:00:01+01:00"
    assert [row["meter_timestamp"] for row in utc_rows] == [
        row["meter_timestamp"] for row in paris_rows
    ]


def test_it_puts_in_other_values_only_what_has_no_column_of_its_own(
    viewer_client: APIClient, readings
) -> None:
    _, rows = rows_of(viewer_client.get(URL, {**RANGE, "tz": "Europe/Paris"}))

    summation, newer = rows[-2], rows[-1]
    assert (summation["record_type"], summation["demand_kw"]) == ("summation", "")
    assert (summation["delivered_kwh"], summation["received_kwh"]) == ("1234.5", "6.25")
    assert summation["other_values"] == ""
    assert newer["demand_kw"] == "2.5"
    assert json.loads(newer["other_values"]) == {"power_factor": 0.97}
    assert json.loads(newer["raw"]) == {"Demand": "0x0009c4"}


def test_the_consoles_export_has_the_apis_layout_row_for_row(
    viewer_client: APIClient, readings
) -> None:
    console = Client()
    console.force_login(OperatorFactory(is_superuser=True))
    export = console.get(
        reverse("admin:console_user_export", args=[readings.pk]),
        {"start": "2026-03-08", "end": "2026-03-08"},
    )

    assert rows_of(export) == rows_of(viewer_client.get(URL, RANGE))
