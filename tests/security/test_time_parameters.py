"""Any out-of-range or unparsable time parameter gets a 400 with a message, never a 500.

The probe's `start=9999-12-31T23:59:59-01:00`, `0001-01-01T00:00:00+01:00` and `-99000000000`
made server errors on readings, aggregate and coverage, and in the console's CSV and demand JSON.
"""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from tests.factories import EagleUserFactory, OperatorFactory

pytestmark = pytest.mark.django_db

CLOUD_ID = "00d1e2"
HOSTILE_INSTANTS = [
    "9999-12-31T23:59:59-01:00",
    "0001-01-01T00:00:00+01:00",
    "0001-01-01T00:00:00",
    "9999-12-31T23:59:59",
    "-99000000000",
    "99999999999",
    "1e308",
    "nan",
    "-inf",
    "2026-02-30T00:00:00Z",
    "2026-03-08T10:00:00+25:00",
    "yesterday",
    "",
]
HOSTILE_DAYS = ["9999-12-31", "0001-01-01", "10000-01-01", "2026-13-01", "-1", "today"]
API_ROUTES = ["readings", "readings/aggregate", "coverage"]


@pytest.fixture
def client() -> Client:
    client = Client()
    client.force_login(OperatorFactory(is_superuser=True))
    return client


@pytest.fixture
def user_pk() -> int:
    return EagleUserFactory(cloud_id=CLOUD_ID).pk


@pytest.mark.parametrize("route", API_ROUTES)
@pytest.mark.parametrize("instant", HOSTILE_INSTANTS)
@pytest.mark.parametrize("tz", [None, "Pacific/Kiritimati"])
def test_the_api_answers_400_with_a_message_for_a_hostile_start(
    client: Client, user_pk: int, route: str, instant: str, tz: str | None
) -> None:
    query = {"start": instant, "end": "2026-03-08T12:00:00Z", **({"tz": tz} if tz else {})}

    response = client.get(f"/api/users/{CLOUD_ID}/{route}", query)

    assert response.status_code == 400, response.content
    assert "start" in response.content.decode()


@pytest.mark.parametrize("route", API_ROUTES)
@pytest.mark.parametrize("instant", HOSTILE_INSTANTS)
def test_the_api_answers_400_with_a_message_for_a_hostile_end(
    client: Client, user_pk: int, route: str, instant: str
) -> None:
    query = {"start": "2026-03-08T10:00:00Z", "end": instant}

    response = client.get(f"/api/users/{CLOUD_ID}/{route}", query)

    assert response.status_code == 400, response.content
    assert "end" in response.content.decode()


@pytest.mark.parametrize("day", HOSTILE_DAYS)
def test_the_console_demand_json_answers_400_with_a_message(
    client: Client, user_pk: int, day: str
) -> None:
    response = client.get(reverse("admin:console_user_demand", args=[user_pk]), {"day": day})

    assert response.status_code == 400
    assert repr(day) in response.json()["error"]


@pytest.mark.parametrize("day", HOSTILE_DAYS)
@pytest.mark.parametrize("parameter", ["start", "end"])
def test_the_console_csv_export_answers_400_with_a_message(
    client: Client, user_pk: int, day: str, parameter: str
) -> None:
    query = {"start": "2026-03-08", "end": "2026-03-08", parameter: day}

    response = client.get(reverse("admin:console_user_export", args=[user_pk]), query)

    assert response.status_code == 400
    assert repr(day) in response.content.decode()
