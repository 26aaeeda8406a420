"""The one definition of readings and ticks expected (ingestion.expected): from when a user was
added and the poller began, at the meter's cadence, minus pauses; used by every figure."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from pytest_django.fixtures import Settings

from ingestion import expected
from ingestion.console import dashboard
from ingestion.models import Tick
from tests.factories import EagleUserFactory, FetchStateFactory, TickFactory
from users.models import ConnectionType, Pause

NOW = datetime(2026, 3, 8, 14, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def cadences(settings: Settings) -> None:
    settings.INGEST_POLL_SECONDS = 6.0
    settings.INGEST_METER_SECONDS = 10.0
    settings.INGEST_SHARDS = 1


def test_it_expects_one_reading_per_meter_period_from_when_the_user_was_added() -> None:
    TickFactory(scheduled_at=NOW - timedelta(days=1))
    user = EagleUserFactory(created_at=NOW - timedelta(minutes=20))

    assert expected.expected_readings(user, NOW - HOUR, NOW) == 120
    assert expected.expected_readings(user, NOW - 2 * HOUR, NOW - HOUR) == 0


def test_it_expects_nothing_of_a_polled_user_before_the_pollers_first_tick() -> None:
    user = EagleUserFactory(created_at=NOW - timedelta(days=1))
    push = EagleUserFactory(created_at=NOW - timedelta(days=1), connection_type=ConnectionType.PUSH)
    assert expected.expected_readings(user, NOW - HOUR, NOW) == 0

    TickFactory(scheduled_at=NOW - timedelta(minutes=2))

    assert expected.expected_readings(user, NOW - HOUR, NOW) == 12
    # A push user sends its readings itself: the poller has nothing to do with it.
    assert expected.expected_readings(push, NOW - HOUR, NOW) == 360


def test_a_suspension_is_a_pause_and_stays_one_after_the_user_resumes() -> None:
    TickFactory(scheduled_at=NOW - timedelta(days=1))
    user = EagleUserFactory(created_at=NOW - timedelta(days=1))
    with time_machine.travel(NOW - timedelta(minutes=40), tick=False):
        user.suspend("the household is away")
    with time_machine.travel(NOW - timedelta(minutes=30), tick=False):
        assert expected.expected_readings(user, NOW - HOUR, NOW) == 120  # 20 min before it
        user.activate()

    assert list(Pause.objects.values_list("started_at", "ended_at")) == [
        (NOW - timedelta(minutes=40), NOW - timedelta(minutes=30))
    ]
    user.refresh_from_db()
    assert expected.expected_spans(user, NOW - HOUR, NOW) == [
        (NOW - HOUR, NOW - timedelta(minutes=40)),
        (NOW - timedelta(minutes=30), NOW),
    ]
    assert expected.expected_readings(user, NOW - HOUR, NOW) == 300


def test_the_fleets_figure_is_the_sum_of_the_users_figures() -> None:
    polling_start = NOW - timedelta(minutes=50)
    TickFactory(scheduled_at=polling_start)
    users = [
        EagleUserFactory(created_at=NOW - timedelta(days=2)),
        EagleUserFactory(created_at=NOW - timedelta(minutes=7)),
        EagleUserFactory(created_at=NOW - timedelta(hours=3)),
    ]
    Pause.objects.create(
        user=users[2], started_at=NOW - timedelta(minutes=90), ended_at=NOW - timedelta(minutes=25)
    )
    EagleUserFactory(is_active=False, created_at=NOW - timedelta(days=2))

    fleet = expected.fleet_expected_readings(NOW - HOUR, NOW, polling_start)

    assert fleet == sum(expected.expected_readings(u, NOW - HOUR, NOW) for u in users)
    assert fleet == 300 + 42 + 150


def test_ticks_are_expected_on_the_grid_from_the_first_tick_once_their_slot_is_over() -> None:
    first = NOW - timedelta(minutes=2)
    assert expected.expected_ticks(NOW - HOUR, NOW, None) == 0
    assert expected.expected_ticks(NOW - HOUR, NOW, first) == 20
    assert expected.expected_ticks(NOW - HOUR, NOW + timedelta(seconds=5), first) == 20
    assert expected.expected_ticks(NOW - HOUR, NOW - timedelta(hours=2), first) == 0


def ticks_since(start: datetime, end: datetime, readings: int) -> None:
    """A tick on time every 6 s from `start` until `end`, each writing `readings` readings."""
    count = int((end - start).total_seconds() // 6)
    Tick.objects.bulk_create(
        TickFactory.build(scheduled_at=start + timedelta(seconds=6 * k), readings_written=readings)
        for k in range(count)
    )


def test_a_system_started_two_minutes_ago_is_all_green() -> None:
    # The households were imported, then the poller began: every tick on time, a reading from
    # each of the 5 meters every 10 s (3 polls in 5 find a new one).
    with time_machine.travel(NOW - timedelta(minutes=2, seconds=3), tick=False):
        users = EagleUserFactory.create_batch(5)
    for user in users:
        FetchStateFactory(user=user, last_success_at=NOW - timedelta(seconds=6))
    ticks_since(NOW - timedelta(minutes=2), NOW, readings=3)
    TickFactory(scheduled_at=NOW, readings_written=0)  # running

    summary = dashboard.fleet_summary(NOW)

    assert (summary.readings_expected, summary.ticks_expected) == (60, 20)
    assert summary.readings_last_hour >= summary.readings_expected
    levels = [summary.users_level, summary.readings_level, summary.ticks_level]
    assert levels + [summary.archive_level, summary.incidents_level] == ["ok"] * 5


def test_a_poller_that_stopped_half_an_hour_ago_turns_readings_and_ticks_red() -> None:
    with time_machine.travel(NOW - timedelta(days=1), tick=False):
        EagleUserFactory.create_batch(5)
    TickFactory(scheduled_at=NOW - timedelta(days=1))
    ticks_since(NOW - HOUR, NOW - timedelta(minutes=30), readings=3)

    summary = dashboard.fleet_summary(NOW)

    assert summary.readings_expected == 5 * 360
    assert summary.ticks_missing == 300
    assert (summary.readings_level, summary.ticks_level) == ("problem", "problem")
