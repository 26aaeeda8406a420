"""GET /api/incidents/ (filterable) and POST /api/incidents/{id}/resolve (staff operators only)."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rest_framework.test import APIClient

from ingestion.models import Incident, IncidentState
from ingestion.records import FailureClass
from tests.factories import EagleUserFactory

NINE = datetime(2026, 3, 8, 9, tzinfo=UTC)


@pytest.fixture
def incidents(db: None) -> Any:
    alice, bob = EagleUserFactory(cloud_id="00a11c"), EagleUserFactory(cloud_id="00b0b0")
    return {
        "open": Incident.objects.create(
            user=alice,
            failure_class=FailureClass.TIMEOUT,
            opened_at=NINE,
            last_seen_at=NINE + timedelta(hours=2),
        ),
        "old": Incident.objects.create(
            user=alice,
            failure_class=FailureClass.GATEWAY_UNREACHABLE,
            state=IncidentState.RESOLVED,
            opened_at=NINE - timedelta(days=2),
            last_seen_at=NINE - timedelta(days=2),
            resolved_at=NINE - timedelta(days=1),
        ),
        "bob": Incident.objects.create(
            user=bob,
            failure_class=FailureClass.BAD_CREDENTIALS,
            opened_at=NINE + timedelta(hours=1),
            last_seen_at=NINE + timedelta(hours=1),
        ),
    }


def ids(response: Any) -> set[int]:
    assert response.status_code == 200, response.content
    return {incident["id"] for incident in response.json()["results"]}


def test_it_filters_by_user_class_state_and_time(viewer_client: APIClient, incidents) -> None:
    url = "/api/incidents/"
    assert ids(viewer_client.get(url)) == {i.id for i in incidents.values()}
    assert ids(viewer_client.get(url, {"cloud_id": "00a11c"})) == {
        incidents["open"].id,
        incidents["old"].id,
    }
    assert ids(viewer_client.get(url, {"failure_class": ["timeout", "bad_credentials"]})) == {
        incidents["open"].id,
        incidents["bob"].id,
    }
    assert ids(viewer_client.get(url, {"state": "resolved"})) == {incidents["old"].id}
    # Still open on 03-08: not the one resolved the day before.
    assert ids(viewer_client.get(url, {"since": "2026-03-08T00:00:00Z"})) == {
        incidents["open"].id,
        incidents["bob"].id,
    }
    # Opened before 09:30: the old one and alice's open one.
    assert ids(viewer_client.get(url, {"until": "2026-03-08T09:30:00Z"})) == {
        incidents["open"].id,
        incidents["old"].id,
    }
    assert viewer_client.get(url, {"failure_class": "gremlins"}).status_code == 400


def test_an_incident_shows_its_user_and_never_a_password(
    viewer_client: APIClient, incidents
) -> None:
    incident = incidents["bob"]

    document = viewer_client.get(f"/api/incidents/{incident.id}/").json()

    assert document["cloud_id"] == "00b0b0"
    assert document["failure_class"] == "bad_credentials"
    assert incident.user.eagle_password not in str(document)


def test_a_staff_operator_resolves_an_open_incident(
    operator_client: APIClient, operator, incidents
) -> None:
    incident = incidents["open"]

    response = operator_client.post(
        f"/api/incidents/{incident.id}/resolve", {"resolution": "gateway replaced"}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["state"] == "resolved"
    assert response.json()["resolved_by"] == operator.username
    incident.refresh_from_db()
    assert incident.state == IncidentState.RESOLVED and incident.resolved_at is not None
    assert incident.resolution == "gateway replaced"


def test_resolving_twice_is_a_409(operator_client: APIClient, incidents) -> None:
    response = operator_client.post(f"/api/incidents/{incidents['old'].id}/resolve")

    assert response.status_code == 409
    assert "already resolved" in response.json()["detail"]
    assert operator_client.post("/api/incidents/999999/resolve").status_code == 404


def test_viewers_may_not_resolve_and_strangers_may_not_look(
    viewer_client: APIClient, incidents
) -> None:
    incident = incidents["open"]

    assert viewer_client.post(f"/api/incidents/{incident.id}/resolve").status_code == 403
    assert APIClient().get("/api/incidents/").status_code == 401
    assert APIClient().post(f"/api/incidents/{incident.id}/resolve").status_code == 401
    incident.refresh_from_db()
    assert incident.state == IncidentState.OPEN
