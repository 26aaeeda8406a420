"""Nothing answers a stranger with the list of cloud ids, or tells whether one exists.

The probe found cloud ids three ways: a push to an unknown id answered 404 before the token was
checked, anonymous /healthz listed the most overdue users, and /metrics listed them all.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.core.checks import run_checks
from django.test import Client
from pytest_django.fixtures import Settings

from ingestion.models import HourFileState
from tests.factories import EagleUserFactory, OperatorFactory
from tests.hour_files import manifest_row
from tests.push_uploads import fragment, uploader_xml
from users.models import ConnectionType

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 8, 12, 30, tzinfo=UTC)
KNOWN = "00a1b2"
UNKNOWN = "0badbad"


@pytest.fixture
def push_user() -> str:
    user = EagleUserFactory(cloud_id=KNOWN, connection_type=ConnectionType.PUSH, eagle_password="")
    return user.issue_push_token()


def push(cloud_id: str, **headers: str) -> Any:
    now = int(time.time())
    body = uploader_xml(fragment("demand", now - 60, (900,)), sent_at=now)
    return Client().post(f"/api/push/{cloud_id}", body, content_type="text/xml", **headers)


@pytest.mark.parametrize(
    ("credentials", "status"),
    [
        ({}, 401),
        ({"HTTP_AUTHORIZATION": "Bearer rlp_not-a-token"}, 403),
        ({"HTTP_X_PUSH_TOKEN": "rlp_not-a-token"}, 403),
    ],
)
def test_a_push_answers_the_same_for_a_known_and_an_unknown_cloud_id(
    push_user: str, credentials: dict[str, str], status: int
) -> None:
    known, unknown = push(KNOWN, **credentials), push(UNKNOWN, **credentials)

    assert known.status_code == unknown.status_code == status
    assert known.json()["detail"].replace(KNOWN, "<id>") == unknown.json()["detail"].replace(
        UNKNOWN, "<id>"
    )


def test_a_push_with_a_valid_token_of_another_user_is_refused_alike(push_user: str) -> None:
    assert push(UNKNOWN, HTTP_AUTHORIZATION=f"Bearer {push_user}").status_code == 403
    assert push(KNOWN, HTTP_AUTHORIZATION=f"Bearer {push_user}").status_code == 202


@pytest.fixture
def overdue_users() -> None:
    for cloud_id in ("00c0ff", "00beef"):
        manifest_row(cloud_id, NOW - timedelta(hours=5), state=HourFileState.FAILED)


def healthz(client: Client) -> Any:
    with time_machine.travel(NOW, tick=False):
        return client.get("/healthz")


def test_anonymous_healthz_shows_only_statuses_and_counts(overdue_users: None) -> None:
    response = healthz(Client())

    body = response.content.decode()
    assert "00c0ff" not in body and "00beef" not in body
    checks = response.json()["checks"]
    for result in checks.values():
        assert {type(value) for key, value in result.items() if key != "status"} <= {int, float}
    assert checks["archive_freshness"]["status"] == "error"
    assert checks["archive_freshness"]["age_seconds"] == 5 * 3600


def test_staff_see_healthz_in_full(overdue_users: None) -> None:
    client = Client()
    client.force_login(OperatorFactory())

    freshness = healthz(client).json()["checks"]["archive_freshness"]

    assert {user["cloud_id"] for user in freshness["users"]} == {"00c0ff", "00beef"}
    assert "over the" in freshness["error"]


def test_metrics_are_closed_without_a_token_when_debug_is_off(
    overdue_users: None, settings: Settings
) -> None:
    settings.METRICS_TOKEN = ""

    response = Client().get("/metrics")

    assert response.status_code == 403
    assert "METRICS_TOKEN" in response.content.decode()
    assert "00c0ff" not in response.content.decode()


def test_metrics_with_their_token_keep_what_prometheus_needs(
    overdue_users: None, settings: Settings
) -> None:
    settings.METRICS_TOKEN = "scrape-secret"

    with time_machine.travel(NOW, tick=False):
        response = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret")

    assert response.status_code == 200
    assert 'rainlog_archive_user_oldest_unshipped_age_seconds{cloud_id="00c0ff"}' in (
        response.content.decode()
    )


def test_the_deploy_check_warns_when_metrics_have_no_token(settings: Settings) -> None:
    settings.METRICS_TOKEN = ""
    assert "api.W001" in {message.id for message in run_checks(include_deployment_checks=True)}

    settings.METRICS_TOKEN = "scrape-secret"
    assert "api.W001" not in {message.id for message in run_checks(include_deployment_checks=True)}
