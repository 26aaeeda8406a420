"""GET /api/users/{cloud_id}/readings/aggregate: demand statistics and energy per interval."""

from datetime import UTC, datetime
from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.factories import EagleUserFactory
from tests.hour_files import demand_readings, ship_hour, write

CLOUD_ID = "0a1b2c"
NINE = datetime(2026, 3, 8, 9, tzinfo=UTC)
URL = f"/api/users/{CLOUD_ID}/readings/aggregate"


@pytest.fixture
def two_hours(db: None, s3_archive: str) -> Any:
    """09:00-11:00 every 6 s at 1.2 kW, then 3.6 kW; the first hour archived as gzip."""
    EagleUserFactory(cloud_id=CLOUD_ID)
    write(demand_readings(CLOUD_ID, NINE, 1200, demand_kw=lambda n: 1.2 if n < 600 else 3.6))
    ship_hour(CLOUD_ID, NINE, compressed=True)


def test_it_aggregates_per_hour_with_counts_and_trapezoid_energy(
    viewer_client: APIClient, two_hours
) -> None:
    response = viewer_client.get(
        URL, {"start": "2026-03-08T09:00:00Z", "end": "2026-03-08T11:00:00Z", "interval": "1h"}
    )

    assert response.status_code == 200
    document = response.json()
    assert document["energy_method"] == "trapezoid"
    nine, ten = document["results"]
    assert (nine["start"], nine["end"]) == ("2026-03-08T09:00:00Z", "2026-03-08T10:00:00Z")
    assert (nine["readings"], nine["avg_demand_kw"], nine["max_demand_kw"]) == (600, 1.2, 1.2)
    # The 6 s from 09:59:54 to 10:00:00 ramp from 1.2 to 3.6 kW.
    assert nine["energy_kwh"] == pytest.approx(1.2 * 3594 / 3600 + 2.4 * 6 / 3600)
    assert ten["readings"] == 600 and ten["min_demand_kw"] == 3.6
    # The last reading is at 10:59:54: nothing to integrate up to 11:00.
    assert ten["covered_seconds"] == pytest.approx(3594)


def test_empty_intervals_are_listed_with_no_demand(viewer_client: APIClient, two_hours) -> None:
    response = viewer_client.get(
        URL, {"start": "2026-03-08T11:00:00Z", "end": "2026-03-08T12:00:00Z", "interval": "15m"}
    )

    results = response.json()["results"]
    assert len(results) == 4
    assert all(r["readings"] == 0 and r["avg_demand_kw"] is None for r in results)
    assert results[0]["energy_kwh"] == 0


def test_daily_intervals_follow_local_midnight_and_show_local_bounds(
    viewer_client: APIClient, two_hours
) -> None:
    response = viewer_client.get(
        URL,
        {"start": "2026-03-07", "end": "2026-03-09", "interval": "1d", "tz": "America/New_York"},
    )

    first, second = response.json()["results"]
    assert first["start_local"] == "2026-03-07T00:00:00-05:00"
    assert second["start_local"] == "2026-03-08T00:00:00-05:00"
    assert second["end_local"] == "2026-03-09T00:00:00-04:00"
    assert second["readings"] == 1200


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"start": "2026-03-08", "end": "2026-03-09", "interval": "5m"}, "interval"),
        ({"start": "2026-01-01", "end": "2026-03-01", "interval": "1d"}, "31 days"),
        ({"start": "2026-03-09", "end": "2026-03-08"}, "after start"),
    ],
)
def test_bad_queries_get_400(
    viewer_client: APIClient, two_hours: Any, query: Any, message: Any
) -> None:
    response = viewer_client.get(URL, query)

    assert response.status_code == 400
    assert message in response.json()["detail"]


def test_it_needs_a_token(db: None) -> None:
    assert APIClient().get(URL, {"start": "2026-03-08", "end": "2026-03-09"}).status_code == 401
