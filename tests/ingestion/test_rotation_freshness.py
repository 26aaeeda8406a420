"""Freshness: the age of the oldest unshipped hour, overall and per user, and /healthz."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth.models import User
from django.test import Client
from pytest_django.fixtures import Settings

from ingestion.models import HourFile, HourFileState
from tests.hour_files import manifest_row

NOW = datetime(2026, 3, 8, 12, 30, tzinfo=UTC)

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(client: Client, operator: User) -> Client:
    """Signed-in staff: anonymous callers of /healthz get no cloud ids."""
    client.force_login(operator)
    return client


def healthz(client: Client) -> tuple[int, dict]:
    with time_machine.travel(NOW, tick=False):
        response = client.get("/healthz")
    return response.status_code, response.json()["checks"]["archive_freshness"]


def test_oldest_unshipped_is_the_oldest_hour_not_verified(db: None) -> None:
    manifest_row("0001", datetime(2026, 3, 8, 7, tzinfo=UTC), state=HourFileState.VERIFIED)
    manifest_row("0001", datetime(2026, 3, 8, 9, tzinfo=UTC), state=HourFileState.CONFLICT)
    manifest_row("0002", datetime(2026, 3, 8, 10, tzinfo=UTC), state=HourFileState.FAILED)

    assert HourFile.objects.oldest_unshipped() == datetime(2026, 3, 8, 9, tzinfo=UTC)
    assert HourFile.objects.oldest_unshipped("0002") == datetime(2026, 3, 8, 10, tzinfo=UTC)
    assert HourFile.objects.oldest_unshipped("0003") is None


def test_healthz_shows_the_lag_and_stays_green_below_the_threshold(client: Client) -> None:
    manifest_row("0001", datetime(2026, 3, 8, 11, tzinfo=UTC), state=HourFileState.SEALED)
    manifest_row("0002", datetime(2026, 3, 8, 10, tzinfo=UTC), state=HourFileState.FAILED)

    status, freshness = healthz(client)

    assert status == 200
    assert freshness["status"] == "ok"
    assert freshness["oldest_unshipped_hour"] == "2026-03-08T10:00:00Z"
    assert freshness["age_seconds"] == 2.5 * 3600
    assert [u["cloud_id"] for u in freshness["users"]] == ["0002", "0001"]
    assert freshness["users"][1] == {
        "cloud_id": "0001",
        "oldest_unshipped_hour": "2026-03-08T11:00:00Z",
        "age_seconds": 1.5 * 3600,
    }


def test_healthz_turns_red_past_the_threshold(client: Client, settings: Settings) -> None:
    settings.ARCHIVE_FRESHNESS_ALERT_SECONDS = 3 * 3600
    manifest_row("0001", NOW - timedelta(hours=3, minutes=31), state=HourFileState.SEALED)

    with time_machine.travel(NOW, tick=False):
        response = client.get("/healthz")

    assert response.status_code == 503
    freshness = response.json()["checks"]["archive_freshness"]
    assert freshness["status"] == "error"
    assert "over the 10800 s allowed" in freshness["error"]
    assert response.json()["checks"]["database"]["status"] == "ok"
