"""Live fetches (`/api/event/{id}?fresh=1`) are limited per household and wait for suspension and
backoff.

The probe's viewer fetched without limit, each fetch sending the stored credentials and ignoring
suspension: enough to get a household's Rainforest account locked.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from pytest_django.fixtures import Settings
from pytest_httpserver import HTTPServer

from ingestion.models import FetchState
from tests.factories import OperatorFactory, ViewerFactory
from users.models import ConnectionType, EagleUser

pytestmark = pytest.mark.django_db

REFUSAL = "<Error><Text>Invalid user name or password</Text></Error>"


@pytest.fixture
def gateway(httpserver: HTTPServer) -> Iterator[HTTPServer]:
    """A legacy gateway that refuses every login: each request it gets is one the account saw."""
    httpserver.expect_request("/cgi-bin/post_manager").respond_with_data(
        REFUSAL, content_type="text/xml"
    )
    yield httpserver


def household(gateway: HTTPServer, cloud_id: str) -> EagleUser:
    user = EagleUser.objects.create(
        cloud_id=cloud_id,
        eagle_password="household-password",
        connection_type=ConnectionType.LEGACY,
        gateway_address=f"http://127.0.0.1:{gateway.port}",
    )
    user.ensure_fetch_state()
    return user


def signed_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_live_fetches_of_one_household_are_limited_whoever_asks(
    gateway: HTTPServer, settings: Settings
) -> None:
    limit = int(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["live_fetch"].split("/")[0])
    household(gateway, "00f001")
    household(gateway, "00f002")
    viewer, operator = signed_in(ViewerFactory()), signed_in(OperatorFactory())

    answers = [viewer.get("/api/event/00f001?fresh=1").status_code for _ in range(limit)]
    over = operator.get("/api/event/00f001?fresh=1")

    assert answers == [502] * limit
    assert over.status_code == 429
    assert "Retry-After" in over
    assert len(gateway.log) == limit
    # Another household has its own allowance.
    assert viewer.get("/api/event/00f002?fresh=1").status_code == 502


def test_a_suspended_household_is_not_fetched(gateway: HTTPServer) -> None:
    user = household(gateway, "00f003")
    user.suspend("Too many refused logins.")

    response = signed_in(ViewerFactory()).get("/api/event/00f003?fresh=1")

    assert response.status_code == 409
    assert "suspended" in response.json()["detail"]
    assert gateway.log == []


def test_a_household_polling_backs_off_from_is_not_fetched(gateway: HTTPServer) -> None:
    user = household(gateway, "00f004")
    FetchState.objects.filter(pk=user.pk).update(
        consecutive_failures=3, next_attempt_at=timezone.now() + timedelta(minutes=4)
    )

    response = signed_in(OperatorFactory()).get("/api/event/00f004?fresh=1")

    assert response.status_code == 409
    assert "left alone until" in response.json()["detail"]
    assert gateway.log == []


def test_a_household_whose_backoff_has_passed_is_fetched_again(gateway: HTTPServer) -> None:
    user = household(gateway, "00f005")
    FetchState.objects.filter(pk=user.pk).update(
        consecutive_failures=3, next_attempt_at=timezone.now() - timedelta(seconds=1)
    )

    assert signed_in(ViewerFactory()).get("/api/event/00f005?fresh=1").status_code == 502
    assert len(gateway.log) == 1
