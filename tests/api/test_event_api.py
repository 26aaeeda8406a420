"""GET /api/event/{cloud_id}: the latest logged reading with its age, or ?fresh=1 from the EAGLE."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from ingestion.eagle.simulator import Simulator
from ingestion.hourfiles import HourFileWriter
from ingestion.records import Reading, Source
from tests.factories import EagleUserFactory
from tests.polling import create_users
from users.models import ConnectionType

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)


def reading(
    cloud_id: str, moment: datetime, demand_kw: float, record_type: str = "demand"
) -> Reading:
    values = {"demand_kw": demand_kw} if record_type == "demand" else {"price": demand_kw}
    return Reading(
        cloud_id=cloud_id,
        record_type=record_type,
        meter_timestamp=int(moment.timestamp()),
        received_at=moment + timedelta(seconds=1),
        source=Source.CLOUD,
        values=values,
        raw={"Demand": "0x0004d2"},
    )


@pytest.fixture
def sim(settings: Settings) -> Iterator[Simulator]:
    settings.INGEST_REQUEST_TIMEOUT = 2.0
    with Simulator(users=2, seed=6, timeout_hold=1.0) as simulator:
        settings.EAGLE_CLOUD_URL = simulator.cloud_url
        create_users(simulator)
        yield simulator


def test_it_returns_the_newest_logged_reading_with_its_age(viewer_client: APIClient) -> None:
    user = EagleUserFactory(cloud_id="002738")
    with HourFileWriter() as writer:
        writer.append(
            [
                reading("002738", NOW - timedelta(hours=1, minutes=5), 9.0),
                reading("002738", NOW - timedelta(seconds=18), 1.25),
                reading("002738", NOW - timedelta(seconds=9), 1.5),
                reading("002738", NOW - timedelta(seconds=3), 7.5, record_type="price"),
            ]
        )
    with time_machine.travel(NOW, tick=False):
        response = viewer_client.get(f"/api/event/{user.cloud_id}")
    assert response.status_code == 200
    body = response.json()
    assert (body["cloud_id"], body["source"], body["age_seconds"]) == ("002738", "log", 9.0)
    assert body["reading"]["demand_kw"] == 1.5
    assert body["reading"]["meter_time"] == "2026-03-01T12:00:21Z"
    with time_machine.travel(NOW, tick=False):
        price = viewer_client.get(f"/api/event/{user.cloud_id}/?type=price").json()
    assert price["reading"]["price"] == 7.5 and price["age_seconds"] == 3.0


def test_it_says_so_when_nothing_is_logged_or_the_user_is_unknown(viewer_client: APIClient) -> None:
    EagleUserFactory(cloud_id="0000aa")
    response = viewer_client.get("/api/event/0000aa")
    assert response.status_code == 404
    assert "No demand reading of 0000aa" in response.json()["detail"]
    assert viewer_client.get("/api/event/0000ab").status_code == 404
    assert viewer_client.get("/api/event/0000aa?type=tariff").status_code == 400
    assert viewer_client.get("/api/event/0000aa?fresh=maybe").status_code == 400


def test_it_needs_a_signed_in_caller() -> None:
    EagleUserFactory(cloud_id="0000aa")
    assert APIClient().get("/api/event/0000aa").status_code in (401, 403)


def test_fresh_fetches_from_the_eagle_now_without_logging(
    sim: Simulator, viewer_client: APIClient, settings: Settings
) -> None:
    response = viewer_client.get("/api/event/000001?fresh=1")
    assert response.status_code == 200
    body = response.json()
    assert body["source"] == "gateway"
    served = {truth.meter_timestamp for truth in sim.ground_truth("000001", "demand")}
    assert body["reading"]["meter_timestamp"] in served
    assert 0 <= body["age_seconds"] < 15
    assert not list(settings.LOG_ROOT.glob("*/*.jl"))


def test_fresh_returns_the_classified_failure_without_the_password(
    sim: Simulator, viewer_client: APIClient
) -> None:
    sim.set_fault("000002", "bad_credentials")
    response = viewer_client.get("/api/event/000002?fresh=1")
    assert response.status_code == 502
    failure = response.json()["failure"]
    assert failure["failure_class"] == "bad_credentials"
    assert failure["label"] == "Bad credentials"
    password = sim.accounts()[1]["user_pw"]
    assert password not in response.content.decode()


def test_fresh_refuses_a_push_user(viewer_client: APIClient) -> None:
    EagleUserFactory(cloud_id="0000ac", connection_type=ConnectionType.PUSH)
    assert viewer_client.get("/api/event/0000ac?fresh=1").status_code == 409
