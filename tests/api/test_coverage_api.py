"""GET /api/users/{cloud_id}/coverage: readings expected and present per hour, gaps and causes."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from rest_framework.test import APIClient

from ingestion.models import Incident, IncidentState
from ingestion.records import FailureClass
from tests.factories import EagleUserFactory, logged_since
from tests.hour_files import demand_readings, ship_hour, write

CLOUD_ID = "00ff01"
NINE = datetime(2026, 3, 8, 9, tzinfo=UTC)
URL = f"/api/users/{CLOUD_ID}/coverage"


@time_machine.travel(datetime(2026, 3, 9, tzinfo=UTC), tick=False)
def test_an_injected_outage_shows_as_a_gap_with_its_cause(
    viewer_client: APIClient, db, s3_archive
) -> None:
    user = logged_since(CLOUD_ID, NINE - timedelta(days=1))
    # The gateway is unreachable from 09:40:00 to 10:15:00; before and after, a reading every 6 s.
    outage = (NINE + timedelta(minutes=40), NINE + timedelta(minutes=75))
    write(
        r
        for r in demand_readings(CLOUD_ID, NINE, 1200)
        if not outage[0] <= r.meter_time < outage[1]
    )
    ship_hour(CLOUD_ID, NINE, compressed=True)
    incident = Incident.objects.create(
        user=user,
        failure_class=FailureClass.GATEWAY_UNREACHABLE,
        state=IncidentState.OPEN,
        opened_at=outage[0],
        last_seen_at=outage[1] - timedelta(seconds=6),
    )

    response = viewer_client.get(
        URL, {"start": "2026-03-08T09:00:00Z", "end": "2026-03-08T11:00:00Z", "gap": 30}
    )

    assert response.status_code == 200
    document = response.json()
    assert document["gaps"] == [
        {
            "start": "2026-03-08T09:39:54Z",
            "end": "2026-03-08T10:15:00Z",
            "seconds": 2106.0,
            "failure_classes": ["gateway_unreachable"],
            "incident_ids": [incident.id],
        }
    ]
    nine, ten = document["hours"]
    # Expected at the meter's cadence (10 s), whatever the poll's; polled every 6 s here.
    assert (nine["expected"], nine["present"]) == (360, 400)
    assert (ten["expected"], ten["present"]) == (360, 450)
    assert ten["covered_seconds"] == 3600 - 15 * 60
    assert document["present"] == 850
    assert document["cadence_seconds"] == 10


@time_machine.travel(datetime(2026, 3, 9, tzinfo=UTC), tick=False)
def test_a_full_hour_has_no_gaps(viewer_client: APIClient, db) -> None:
    logged_since(CLOUD_ID, NINE - timedelta(days=1))
    write(demand_readings(CLOUD_ID, NINE, 600, step_seconds=10))

    document = viewer_client.get(
        URL, {"start": "2026-03-08T09:00:00Z", "end": "2026-03-08T10:00:00Z"}
    ).json()

    assert document["gaps"] == []
    assert (document["expected"], document["present"], document["coverage"]) == (360, 360, 1.0)


@time_machine.travel(datetime(2026, 3, 9, tzinfo=UTC), tick=False)
def test_hours_before_the_user_was_added_are_neither_expected_nor_gaps(
    viewer_client: APIClient, db
) -> None:
    logged_since(CLOUD_ID, NINE + timedelta(minutes=30))
    write(demand_readings(CLOUD_ID, NINE + timedelta(minutes=30), 180, step_seconds=10))

    document = viewer_client.get(
        URL, {"start": "2026-03-08T08:00:00Z", "end": "2026-03-08T10:00:00Z"}
    ).json()

    assert document["gaps"] == []
    eight, nine = document["hours"]
    assert (eight["expected"], eight["present"], eight["coverage"]) == (0, 0, None)
    assert (nine["expected"], nine["present"], nine["coverage"]) == (180, 180, 1.0)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"start": "2026-03-08", "end": "2026-03-09", "gap": "0"}, "gap"),
        ({"start": "2026-01-01", "end": "2026-03-01"}, "31 days"),
        ({"start": "2026-03-08"}, "end"),
    ],
)
def test_bad_queries_get_400(viewer_client: APIClient, db: None, query: Any, message: Any) -> None:
    EagleUserFactory(cloud_id=CLOUD_ID)

    response = viewer_client.get(URL, query)

    assert response.status_code == 400
    assert message in response.json()["detail"]


def test_it_needs_a_token(db: None) -> None:
    assert APIClient().get(URL, {"start": "2026-03-08", "end": "2026-03-09"}).status_code == 401
