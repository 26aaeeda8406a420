"""GET /api/event/{cloud_id} from the latest readings the poller keeps in Redis: the same JSON as
from the hour files, without a query; the files answer when Redis is down, when the reading's file
is gone, and for deleted users. Without REDIS_URL nothing is cached."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from django.db import connection
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from ingestion.archive import rotation
from ingestion.hourfiles import HourFileWriter
from ingestion.models import FetchState
from ingestion.polling.latest import cached_record, latest_record, remember_written
from ingestion.purging import remove_user
from ingestion.records import Reading, Source
from tests.conftest import RedisServer
from tests.polling import PollingRun, polling_run
from users.models import EagleUser

pytestmark = pytest.mark.django_db

CLOUD_IDS = ["000001", "000002"]


@contextmanager
def statements() -> Iterator[list[str]]:
    """The SQL statements run meanwhile."""
    seen: list[str] = []

    def record(execute: Any, sql: str, *args: Any) -> Any:
        seen.append(sql)
        return execute(sql, *args)

    with connection.execute_wrapper(record):
        yield seen


def answers(client: APIClient, settings: Settings, url: str) -> tuple[dict[str, Any], list[str]]:
    """(status and body of the answer, with the statements it ran), after checking that the hour
    files alone give the same answer at the same moment."""
    with statements() as run:
        cached = client.get(url)
    redis_url = settings.REDIS_URL
    settings.REDIS_URL = ""
    from_files = client.get(url)
    settings.REDIS_URL = redis_url
    assert (cached.status_code, cached.json()) == (from_files.status_code, from_files.json())
    return {"status": cached.status_code, **cached.json()}, run


def user_queries(sql: list[str]) -> list[str]:
    return [statement for statement in sql if "users_eagleuser" in statement]


def ticks(run: PollingRun, count: int) -> None:
    for _ in range(count):
        run.tick()


def test_the_latest_readings_come_from_the_cache_without_a_query_and_equal_the_files(
    settings: Settings, redis_cache: RedisServer, viewer_client: APIClient
) -> None:
    with polling_run(settings, users=2) as run:
        FetchState.objects.filter(user__cloud_id="000001").update(extra_record_types=["summation"])
        run.poller.load_users()
        ticks(run, 12)
        for cloud_id in CLOUD_IDS:
            body, statements = answers(viewer_client, settings, f"/api/event/{cloud_id}")
            assert body["status"] == 200 and body["source"] == "log"
            assert body["reading"] == latest_record(cloud_id)
            assert user_queries(statements) == []
        body, statements = answers(viewer_client, settings, "/api/event/000001?type=summation")
        assert body["reading"]["record_type"] == "summation"
        assert user_queries(statements) == []
        # A type never logged for the user: the files say so, as before.
        body, _ = answers(viewer_client, settings, "/api/event/000002?type=summation")
        assert (body["status"], body["code"]) == (404, "no_reading")


def test_a_suspended_users_reading_is_served_until_the_rotation_ships_its_file(
    settings: Settings, redis_cache: RedisServer, viewer_client: APIClient
) -> None:
    with polling_run(settings, users=2) as run:
        ticks(run, 3)
        EagleUser.objects.get(cloud_id="000001").suspend("moved house")
        ticks(run, 2)
        body, statements = answers(viewer_client, settings, "/api/event/000001")
        assert body["status"] == 200 and user_queries(statements) == []
        assert body["reading"] == latest_record("000001")
        # The hour is over: the rotation ships its files and removes them from disk.
        run.move_to((run.clock.now // 3600 + 1) * 3600 + settings.ROTATE_GRACE_SECONDS + 6)
        run.tick()
        report = rotation.rotate()
        assert report.ok and report.local_deleted == 2, report.summary()
        assert redis.Redis.from_url(redis_cache.url).exists("rainlog:latest:000001:demand")
        body, _ = answers(viewer_client, settings, "/api/event/000001")
        assert (body["status"], body["code"]) == (404, "no_reading")
        # The polled user's newest reading is in the new hour's file, and cached.
        body, statements = answers(viewer_client, settings, "/api/event/000002")
        assert body["status"] == 200 and user_queries(statements) == []


def test_the_files_answer_while_redis_is_down_and_polling_goes_on(
    settings: Settings,
    redis_cache: RedisServer,
    viewer_client: APIClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with polling_run(settings, users=2) as run:
        ticks(run, 2)
        cached = viewer_client.get("/api/event/000001").json()
        redis_cache.stop()
        with caplog.at_level(logging.ERROR, logger="ingestion.polling.latest"):
            written = 0
            for _ in range(3):
                report = run.tick()
                assert report.users_polled == 2
                written += report.readings_written
                response = viewer_client.get("/api/event/000001")
                assert response.status_code == 200
                assert response.json()["reading"] == latest_record("000001")
        assert (
            written
            and response.json()["reading"]["meter_timestamp"] > cached["reading"]["meter_timestamp"]
        )
    outages = [r for r in caplog.records if "cannot be reached" in r.getMessage()]
    assert len(outages) == 1


def test_purging_a_user_clears_its_cached_readings(
    settings: Settings, redis_cache: RedisServer, viewer_client: APIClient
) -> None:
    with polling_run(settings, users=2) as run:
        ticks(run, 2)
        assert cached_record("000001") is not None
        remove_user(EagleUser.objects.get(cloud_id="000001"), purge=True)
    assert redis.Redis.from_url(redis_cache.url).keys("*000001*") == [
        b"rainlog:latest:000001:deleted"
    ]
    body, _ = answers(viewer_client, settings, "/api/event/000001")
    assert (body["status"], body["code"]) == (404, "not_found")


def test_a_deleted_user_is_not_served_what_the_poller_writes_before_it_notices(
    settings: Settings, redis_cache: RedisServer, viewer_client: APIClient
) -> None:
    with polling_run(settings, users=2) as run:
        ticks(run, 2)
        user = EagleUser.objects.get(cloud_id="000001")
        remove_user(user, purge=False)
        newest = latest_record("000001")
        assert newest is not None
        # The poller writes a reading fetched before the deletion reached it.
        late = Reading(
            cloud_id="000001",
            record_type="demand",
            meter_timestamp=newest["meter_timestamp"] + 1,
            received_at=datetime.fromtimestamp(run.clock.now, UTC),
            source=Source.CLOUD,
            values={"demand_kw": 1.0},
        )
        with HourFileWriter() as writer:
            readings = [late]
            remember_written(readings, writer.append(readings))
        body, _ = answers(viewer_client, settings, "/api/event/000001")
        assert (body["status"], body["code"]) == (404, "not_found")
        # The cloud_id taken again: its readings are cached again.
        account = run.sim.accounts()[0]
        EagleUser.objects.create(
            cloud_id="000001", email=account["user_email"], eagle_password=account["user_pw"]
        )
        ticks(run, 1)
        body, statements = answers(viewer_client, settings, "/api/event/000001")
        assert body["status"] == 200 and user_queries(statements) == []


def test_without_redis_nothing_is_cached_and_the_files_answer(
    settings: Settings, viewer_client: APIClient
) -> None:
    assert not settings.REDIS_URL
    with polling_run(settings, users=1) as run:
        ticks(run, 2)
        with statements() as run:
            response = viewer_client.get("/api/event/000001")
    assert response.json()["reading"] == latest_record("000001")
    assert user_queries(run)
