"""GET /api/users/{cloud_id}/readings: any range, from disk and archive, as JSON lines, CSV or JSON."""

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rest_framework.test import APIClient

from ingestion import hourfiles
from tests.factories import EagleUserFactory
from tests.hour_files import demand_readings, ship_hour, write

CLOUD_ID = "002738"
NINE = datetime(2026, 3, 8, 9, tzinfo=UTC)
URL = f"/api/users/{CLOUD_ID}/readings"


@pytest.fixture
def three_hours(db: None, s3_archive: str) -> Any:
    """09:00-12:00 every 6 s: 09 archived plain, 10 archived gzip, 11 still on disk."""
    EagleUserFactory(cloud_id=CLOUD_ID)
    readings = demand_readings(CLOUD_ID, NINE, count=1800)
    write(readings)
    ship_hour(CLOUD_ID, NINE)
    ship_hour(CLOUD_ID, NINE + timedelta(hours=1), compressed=True)
    return readings


def body(response: Any) -> bytes:
    return b"".join(response.streaming_content)


def test_json_lines_stream_everything_written_across_archived_and_local_hours(
    viewer_client: APIClient, three_hours
) -> None:
    response = viewer_client.get(
        URL, {"start": "2026-03-08T09:00:00Z", "end": "2026-03-08T12:00Z", "format": "jsonl"}
    )

    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-ndjson"
    assert response.streaming
    records = [json.loads(line) for line in body(response).decode().splitlines()]
    assert [r["meter_timestamp"] for r in records] == [r.meter_timestamp for r in three_hours]
    assert [r["demand_kw"] for r in records] == [r.values["demand_kw"] for r in three_hours]
    assert records[0]["meter_time"] == "2026-03-08T09:00:00Z"


def test_csv_parses_with_the_csv_module_and_matches_what_was_written(
    viewer_client: APIClient, three_hours
) -> None:
    start, end = int(NINE.timestamp()) + 3000, int(NINE.timestamp()) + 4200  # unix seconds
    response = viewer_client.get(URL, {"start": start, "end": end, "format": "csv"})

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(body(response).decode())))
    expected = [r for r in three_hours if start <= r.meter_timestamp < end]
    assert len(rows) == len(expected) == 200
    assert [int(row["meter_timestamp"]) for row in rows] == [r.meter_timestamp for r in expected]
    assert [float(row["demand_kw"]) for row in rows] == [r.values["demand_kw"] for r in expected]
    assert json.loads(rows[0]["raw"]) == expected[0].raw
    assert rows[0]["other_values"] == ""


def test_the_accept_header_chooses_the_format(viewer_client: APIClient, three_hours) -> None:
    query = {"start": "2026-03-08T11:00:00Z", "end": "2026-03-08T11:01:00Z"}

    as_csv = viewer_client.get(URL, query, HTTP_ACCEPT="text/csv")
    as_json = viewer_client.get(URL, query, HTTP_ACCEPT="application/json")

    assert as_csv["Content-Type"].startswith("text/csv")
    assert as_json["Content-Type"] == "application/json"
    assert as_json.json()["count"] == 10


def test_paged_json_pages_through_a_range(viewer_client: APIClient, three_hours) -> None:
    query = {"start": "2026-03-08T09:00:00Z", "end": "2026-03-08T12:00:00Z", "format": "json"}

    first = viewer_client.get(URL, query).json()
    second = viewer_client.get(URL, {**query, "page": 2}).json()

    assert first["count"] == 1800
    assert len(first["results"]) == 100
    assert "page=2" in first["next"]
    assert second["results"][0]["meter_timestamp"] == three_hours[100].meter_timestamp


def test_a_range_too_long_for_paged_json_says_so_and_points_at_the_streaming_forms(
    viewer_client: APIClient, three_hours
) -> None:
    response = viewer_client.get(
        URL, {"start": "2026-03-01T00:00:00Z", "end": "2026-03-08T00:00:00Z", "format": "json"}
    )

    assert response.status_code == 400
    assert "jsonl" in response.json()["detail"] and "csv" in response.json()["detail"]


def test_offsets_and_unix_seconds_name_the_same_instant(
    viewer_client: APIClient, three_hours: Any
) -> Any:
    # 11:00Z as +02:00, with the "+" left unencoded (it arrives as a space), and as unix seconds.
    start = "2026-03-08T13:00:00+02:00"
    end = str(int((NINE + timedelta(hours=2, minutes=1)).timestamp()))

    response = viewer_client.get(f"{URL}?start={start}&end={end}&format=json")

    assert response.status_code == 200, response.content
    assert response.json()["count"] == 10


def test_local_times_follow_the_zone_across_a_dst_change(viewer_client: APIClient, db) -> None:
    EagleUserFactory(cloud_id=CLOUD_ID)
    # US clocks go forward at 2026-03-08 02:00 local time, 07:00 UTC in New York.
    around = datetime(2026, 3, 8, 6, 59, 54, tzinfo=UTC)
    write(demand_readings(CLOUD_ID, around, count=2))

    response = viewer_client.get(
        URL,
        {
            "start": "2026-03-08T01:00",
            "end": "2026-03-08T04:00",
            "tz": "America/New_York",
            "format": "jsonl",
        },
    )

    records = [json.loads(line) for line in body(response).decode().splitlines()]
    assert [r["meter_time"] for r in records] == ["2026-03-08T06:59:54Z", "2026-03-08T07:00:00Z"]
    assert [r["meter_time_local"] for r in records] == [
        "2026-03-08T01:59:54-05:00",
        "2026-03-08T03:00:00-04:00",
    ]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"end": "2026-03-08T10:00:00Z"}, "start"),
        ({"start": "yesterday", "end": "2026-03-08T10:00:00Z"}, "neither ISO 8601"),
        ({"start": "2026-03-08T10:00:00Z", "end": "2026-03-08T09:00:00Z"}, "after start"),
        ({"start": "1772960400000", "end": "1772964000000"}, "milliseconds"),
        ({"start": "2026-03-08", "end": "2026-03-09", "tz": "Mars/Olympus"}, "time zone"),
        ({"start": "2026-03-08", "end": "2026-03-09", "format": "xml"}, "format"),
    ],
)
def test_bad_ranges_get_400_with_a_message(
    viewer_client: APIClient, three_hours, query: dict, message: str
) -> None:
    response = viewer_client.get(URL, query)

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert message in response.json()["detail"]


def test_record_type_filters(viewer_client: APIClient, three_hours) -> None:
    query = {"start": "2026-03-08T09:00:00Z", "end": "2026-03-08T10:00:00Z", "format": "json"}

    assert viewer_client.get(URL, {**query, "record_type": "demand"}).json()["count"] == 600
    assert viewer_client.get(URL, {**query, "record_type": "price"}).json()["count"] == 0


def test_an_unreadable_archive_is_a_503_not_an_empty_answer(
    viewer_client: APIClient, three_hours, s3_client, s3_archive
) -> None:
    s3_client.delete_object(Bucket=s3_archive, Key=hourfiles.archive_key(CLOUD_ID, NINE))

    response = viewer_client.get(URL, {"start": "2026-03-08T09:00:00Z", "end": "2026-03-08T10Z"})

    assert response.status_code == 503
    assert "cannot read archived" in response.json()["detail"]


def test_an_unknown_cloud_id_is_404_and_no_token_is_401(viewer_client: APIClient, db) -> None:
    query = {"start": "2026-03-08T09:00:00Z", "end": "2026-03-08T10:00:00Z"}

    assert viewer_client.get("/api/users/0abc/readings", query).status_code == 404
    assert APIClient().get(URL, query).status_code == 401
