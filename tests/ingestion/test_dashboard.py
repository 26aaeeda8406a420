"""The console's figures: users by state, the last hour, per-minute series, coverage, demand."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_q.models import Schedule, Task
from pytest_django.fixtures import Settings

from ingestion import hourfiles
from ingestion.console import dashboard
from ingestion.hourfiles import HourFileWriter
from ingestion.models import HourFileState, IncidentState
from ingestion.polling.schedules import register_schedules
from ingestion.records import FailureClass, Reading, Source
from tests.factories import (
    EagleUserFactory,
    FetchStateFactory,
    HourFileFactory,
    IncidentFactory,
    TickFactory,
)

NOW = datetime(2026, 3, 8, 14, 20, tzinfo=UTC)


def logging_user(**fields: Any) -> Any:
    user = EagleUserFactory(**fields)
    FetchStateFactory(user=user, last_success_at=NOW - timedelta(seconds=6))
    return user


def failing_user(failure_class: FailureClass) -> Any:
    user = EagleUserFactory()
    FetchStateFactory(
        user=user,
        last_success_at=NOW - timedelta(hours=2),
        consecutive_failures=40,
        last_error_class=failure_class,
    )
    IncidentFactory(user=user, failure_class=failure_class)
    return user


def demand_readings(cloud_id: str, start: datetime, minutes: int, kw: float) -> list[Reading]:
    return [
        Reading(
            cloud_id=cloud_id,
            record_type="demand",
            meter_timestamp=int((start + timedelta(seconds=10 * k)).timestamp()),
            received_at=start,
            source=Source.SIMULATOR,
            values={"demand_kw": kw},
        )
        for k in range(minutes * 6)
    ]


@pytest.mark.django_db
def test_it_counts_each_user_once_under_its_state_and_failure_class() -> None:
    logging_user()
    logging_user()
    failing_user(FailureClass.BAD_CREDENTIALS)
    failing_user(FailureClass.TIMEOUT)
    failing_user(FailureClass.TIMEOUT)
    # Fetching works again but its incident is not resolved yet: still failing, by the incident.
    recovering = logging_user()
    IncidentFactory(user=recovering, failure_class=FailureClass.METER_NOT_JOINED)
    EagleUserFactory(is_active=False, suspended_reason="moved out")
    FetchStateFactory(user=EagleUserFactory())  # never fetched yet

    with time_machine.travel(NOW, tick=False):
        summary = dashboard.fleet_summary()

    assert summary.users_total == 8
    assert summary.users_logging == 2
    assert summary.users_waiting == 1
    assert summary.users_suspended == 1
    assert [(c.key, c.count) for c in summary.users_failing] == [
        ("timeout", 2),
        ("bad_credentials", 1),
        ("meter_not_joined", 1),
    ]
    assert summary.users_polled == 7
    assert summary.open_incidents_total == 4


@pytest.mark.django_db
def test_it_compares_the_last_hours_readings_and_ticks_with_what_was_expected(
    settings: Settings,
) -> None:
    settings.INGEST_POLL_SECONDS = 6.0
    settings.INGEST_METER_SECONDS = 10.0
    settings.INGEST_SHARDS = 1
    with time_machine.travel(NOW - timedelta(days=1), tick=False):
        for _ in range(3):
            logging_user()
    for k in range(590):
        TickFactory(
            scheduled_at=NOW - timedelta(seconds=6 * (k + 1)),
            readings_written=2,
            late=k < 4,
        )
    TickFactory(scheduled_at=NOW - timedelta(hours=1, seconds=6), readings_written=1000)

    with time_machine.travel(NOW, tick=False):
        summary = dashboard.fleet_summary()

    assert summary.readings_last_hour == 1180
    assert summary.readings_expected == 3 * 360
    assert (summary.ticks_expected, summary.ticks_recorded) == (600, 590)
    assert (summary.ticks_on_time, summary.ticks_late, summary.ticks_missing) == (586, 4, 10)
    assert summary.ticks_level == "warning"


@pytest.mark.django_db
def test_it_reports_the_oldest_unshipped_hour_and_its_age(settings: Settings) -> None:
    settings.ARCHIVE_FRESHNESS_ALERT_SECONDS = 3 * 3600
    user = logging_user()
    HourFileFactory(user=user, hour=NOW.replace(hour=9, minute=0), state=HourFileState.VERIFIED)
    oldest = HourFileFactory(
        user=user, hour=NOW.replace(hour=10, minute=0), state=HourFileState.FAILED
    )
    HourFileFactory(user=user, hour=NOW.replace(hour=14, minute=0), state=HourFileState.OPEN)

    with time_machine.travel(NOW, tick=False):
        summary = dashboard.fleet_summary()

    assert summary.oldest_unshipped == oldest
    assert summary.oldest_unshipped_age == timedelta(hours=4, minutes=20)  # since it began
    assert summary.archive_level == "problem"  # older than ARCHIVE_FRESHNESS_ALERT_SECONDS


@pytest.mark.django_db
def test_it_computes_the_summary_in_the_same_number_of_queries_for_any_fleet_size() -> None:
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured, time_machine.travel(NOW, tick=False):
            dashboard.fleet_summary()
        return len(captured)

    TickFactory(scheduled_at=NOW - timedelta(days=1))
    logging_user()
    failing_user(FailureClass.TIMEOUT)
    few = queries()
    for _ in range(20):
        logging_user()
        failing_user(FailureClass.HTTP_ERROR)
    assert queries() == few == 9


@pytest.mark.django_db
def test_it_sums_readings_and_late_ticks_per_minute_with_gaps_where_no_tick_ran() -> None:
    minute = NOW - timedelta(minutes=5)
    for second in range(0, 60, 6):
        TickFactory(scheduled_at=minute + timedelta(seconds=second), readings_written=3)
    TickFactory(scheduled_at=minute + timedelta(minutes=1), readings_written=0, late=True)

    series = dashboard.tick_series(NOW)

    assert len(series.times) == 24 * 60 and series.bucket_seconds == 60
    assert series.times[-1] == int((NOW - timedelta(minutes=1)).timestamp())
    index = series.times.index(int(minute.timestamp()))
    # A minute whose tick found nothing new is a zero; one in which no tick ran is no value.
    assert series.readings[index : index + 3] == [30, 0, None]
    assert series.late_ticks[index : index + 3] == [0, 1, None]
    assert series.readings[0] is None


@pytest.mark.django_db
def test_a_week_is_summed_in_ten_minute_buckets() -> None:
    TickFactory(scheduled_at=NOW - timedelta(days=6, minutes=3), readings_written=5)
    TickFactory(scheduled_at=NOW - timedelta(days=6, minutes=9), readings_written=4)

    series = dashboard.tick_series(NOW, dashboard.WINDOWS["7d"])

    assert len(series.times) == 7 * 24 * 6 and series.bucket_seconds == 600
    assert [value for value in series.readings if value is not None] == [9]


@pytest.mark.django_db
def test_it_draws_each_hour_of_the_week_as_complete_partial_missing_or_unshipped(
    settings: Settings,
) -> None:
    settings.INGEST_METER_SECONDS = 10.0
    TickFactory(scheduled_at=NOW - timedelta(days=30))  # polling began long before
    with time_machine.travel(NOW - timedelta(days=3, hours=2), tick=False):
        user = EagleUserFactory()
    this_hour = hourfiles.hour_floor(NOW)

    def shipped(hours_ago: int, lines: int, first_second: int = 3, last_second: int = 3595) -> Any:
        hour = this_hour - timedelta(hours=hours_ago)
        return HourFileFactory(
            user=user,
            hour=hour,
            state=HourFileState.VERIFIED,
            line_count=lines,
            first_reading_at=hour + timedelta(seconds=first_second),
            last_reading_at=hour + timedelta(seconds=last_second),
        )

    shipped(5, 360)
    shipped(4, 200)  # an outage in the middle: too few lines
    shipped(3, 360, first_second=900)  # started a quarter of an hour late
    HourFileFactory(
        user=user,
        hour=this_hour - timedelta(hours=2),
        state=HourFileState.VERIFIED,
        line_count=300,
        first_reading_at=this_hour - timedelta(hours=2),
        last_reading_at=this_hour - timedelta(hours=1, seconds=1),
    )
    HourFileFactory(
        user=user,
        hour=this_hour - timedelta(hours=2),
        part=1,
        state=HourFileState.FAILED,
        line_count=60,
    )
    HourFileFactory(user=user, hour=this_hour, state=HourFileState.OPEN)

    cells = dashboard.coverage_strip(user, NOW)

    assert len(cells) == 7 * 24
    assert cells[-1].hour == this_hour
    states = {cell.hour: cell.state for cell in cells}
    assert states[this_hour - timedelta(hours=5)] == dashboard.COMPLETE
    assert states[this_hour - timedelta(hours=4)] == dashboard.PARTIAL
    assert states[this_hour - timedelta(hours=3)] == dashboard.PARTIAL
    assert states[this_hour - timedelta(hours=2)] == dashboard.UNSHIPPED  # its late part failed
    assert states[this_hour - timedelta(hours=1)] == dashboard.MISSING
    assert states[this_hour] == dashboard.UNSHIPPED
    totals = dashboard.coverage_totals(cells)
    # Added 3 days and 2 hours ago: the hours before are not the user's to miss.
    assert totals[dashboard.NOT_LOGGED] == 7 * 24 - (3 * 24 + 3)
    assert totals[dashboard.MISSING] == 3 * 24 + 3 - 5
    days = dashboard.coverage_days(cells)
    assert [sum(1 for cell in hours if cell) for _, hours in days] == [
        9,
        24,
        24,
        24,
        24,
        24,
        24,
        15,
    ]
    assert days[0][1][14] is None and days[0][1][15] == cells[0]
    assert days[-1][1][14] == cells[-1] and days[-1][1][15] is None


@pytest.mark.django_db
def test_it_estimates_fleet_demand_from_a_sample_scaled_to_the_logging_households(
    settings: Settings,
) -> None:
    settings.CONSOLE_DEMAND_SAMPLE = 2
    users = [logging_user() for _ in range(4)]
    sample = dashboard.demand_sample(2)
    assert sample == dashboard.demand_sample(2)  # the same households every time
    quarter = datetime(2026, 3, 8, 13, 0, tzinfo=UTC)
    with HourFileWriter() as writer:
        writer.append(demand_readings(sample[0].cloud_id, quarter, 15, 2.0))
        writer.append(demand_readings(sample[1].cloud_id, quarter, 15, -1.0))
        # Outside the sample: never read.
        other = next(u for u in users if u not in sample)
        writer.append(demand_readings(other.cloud_id, quarter, 15, 100.0))

    series = dashboard.fleet_demand(NOW)
    hour = dashboard.fleet_demand(NOW, dashboard.WINDOWS["1h"])

    assert len(hour.times) == 60 and hour.fleet_kw.count(None) == 60  # 13:21 to 14:20: none
    assert (series.households_sampled, series.households_logging) == (2, 4)
    assert len(series.times) == 24 * 4
    assert series.times[-1] == int(datetime(2026, 3, 8, 14, 15, tzinfo=UTC).timestamp())
    index = series.times.index(int(quarter.timestamp()))
    # Mean of the households' averages (2 kW and -1 kW) times the 4 logging households.
    assert series.fleet_kw[index] == pytest.approx(2.0)
    assert series.fleet_kw[index + 1] is None


@pytest.mark.django_db
def test_it_says_in_words_what_state_one_user_is_in() -> None:
    assert dashboard.user_state(logging_user()).label == "Logging"
    failing = failing_user(FailureClass.BAD_CREDENTIALS)
    assert dashboard.user_state(failing).label == "Failing: Bad credentials"
    failing.suspend("Bad credentials, 5 times in a row.")
    state = dashboard.user_state(failing)
    assert (state.key, state.label) == (
        dashboard.SUSPENDED,
        "Suspended: Bad credentials, 5 times in a row.",
    )
    assert failing.incidents.get().state == IncidentState.OPEN


@pytest.mark.django_db
def test_it_labels_rainlogs_own_schedules_and_counts_task_outcomes() -> None:
    register_schedules()
    Schedule.objects.create(name="someone-elses", func="math.floor", args="1")

    def task(name: str, hours_ago: float, success: bool) -> Task:
        stopped = NOW - timedelta(hours=hours_ago)
        return Task.objects.create(
            id=name,
            name=name,
            func="ingestion.tasks.rotate_hourly",
            started=stopped,
            stopped=stopped,
            success=success,
        )

    task("rotation-1", 2, True)
    task("rotation-2", 1, False)
    task("poll-1", 0.1, True)
    task("long-ago", 30, False)
    Schedule.objects.filter(name="rotate-hourly").update(task="rotation-2")
    Schedule.objects.filter(name="poll-shard-0").update(task="poll-1")

    with time_machine.travel(NOW, tick=False):
        jobs = dashboard.job_summary()

    rows = {row.schedule.name: row for row in jobs.schedules}
    assert rows["poll-shard-0"].role.startswith("Polling, shard 0")
    assert rows["rotate-hourly"].role.startswith("Rotation")
    assert rows["someone-elses"].role == ""
    assert (rows["poll-shard-0"].last_success, rows["rotate-hourly"].last_success) == (True, False)
    assert rows["deliver-incident-reports"].last_success is None
    assert (jobs.queued, jobs.successes, jobs.failures) == (0, 2, 1)
