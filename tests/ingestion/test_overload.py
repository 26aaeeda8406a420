"""A poller over capacity: it sends only what it can fetch within a tick (its measured
throughput), lets the users who waited go first, counts every skipped poll, and tells the
operator (an incident, /healthz, the dashboard)."""

from collections.abc import Iterator

import pytest
from django.test import Client
from pytest_django.fixtures import Settings

from ingestion.console import dashboard
from ingestion.models import FetchState, Incident, IncidentState, Tick
from ingestion.polling.engine import TickReport, dispatch_budget
from ingestion.records import FailureClass
from tests.polling import START, PollingRun, duplicates, logged_keys, polling_run
from users.models import EagleUser

pytestmark = pytest.mark.django_db

USERS = 16
# Two requests at a time, each answered after 0.1 s, in a 1-second tick whose requests start
# within 0.7 s: 10 to 14 fetches per tick, fewer than the 16 users and more than half of them.
LATENCY = 0.1


@pytest.fixture
def overloaded(settings: Settings) -> Iterator[PollingRun]:
    settings.INGEST_POLL_SECONDS = 1.0
    settings.INGEST_CONCURRENCY = 2
    settings.INGEST_REQUEST_TIMEOUT = 5.0
    settings.INGEST_INCIDENT_AFTER_FAILURES = 3
    with polling_run(settings, users=USERS, latency=LATENCY) as run:
        yield run


def attempted_at() -> dict[str, float]:
    """Each user's last fetch (unix seconds); never fetched counts as fetched in the first tick."""
    return {
        cloud_id: attempt.timestamp() if attempt else START + 1.0
        for cloud_id, attempt in FetchState.objects.values_list("user__cloud_id", "last_attempt_at")
    }


def test_it_sends_only_what_it_can_fetch_in_the_tick_and_every_request_is_answered_in_it(
    overloaded: PollingRun,
) -> None:
    run = overloaded
    run.tick()
    for _ in range(4):
        sent_before = run.sim.requests
        report = run.tick()
        assert report.capacity is not None and report.capacity < USERS
        assert report.users_skipped > 0
        assert report.users_polled + report.users_skipped == report.users_due == USERS
        # Nothing left awaiting its reply: every request sent was answered within the tick.
        assert report.in_flight == 0
        assert run.sim.requests - sent_before == report.users_polled


def test_a_cold_poller_sends_until_its_dispatch_deadline_to_measure_its_throughput(
    overloaded: PollingRun,
) -> None:
    report = overloaded.tick()
    # Two requests at a time: more than a few rounds means it kept sending through the tick.
    assert report.users_polled >= 8
    assert report.users_polled + report.users_skipped == USERS
    assert report.capacity is not None and report.capacity >= 8


def test_a_low_estimate_does_not_hold_back_requests_the_tick_has_time_for(
    overloaded: PollingRun, settings: Settings
) -> None:
    run = overloaded
    run.tick()
    run.poller.throughput.restore(3, dispatch_budget(settings.INGEST_POLL_SECONDS))
    report = run.tick()
    assert report.users_polled >= 8
    assert report.users_polled + report.users_skipped == USERS
    assert report.in_flight == 0


def test_no_user_waits_two_ticks_in_a_row_and_no_reply_is_thrown_away(
    overloaded: PollingRun,
) -> None:
    run = overloaded
    reports = fair_ticks(run)
    while reports[-1].in_flight:
        reports.append(run.tick())
    served = run.served()
    assert sum(report.users_skipped for report in reports) > 0
    logged = logged_keys()
    assert duplicates(logged) == []
    assert set(logged) == served


def fair_ticks(run: PollingRun) -> list[TickReport]:
    """Ten ticks, checking after each that every user was polled in it or in the one before."""
    reports = []
    for _ in range(10):
        reports.append(run.tick())
        polled_since = run.clock.now - 1.0
        waited = [c for c, at in attempted_at().items() if at < polled_since]
        assert waited == [], f"not polled in this tick nor the one before: {waited}"
    return reports


def test_a_restarted_poller_starts_from_the_capacity_its_shard_last_measured(
    overloaded: PollingRun, settings: Settings
) -> None:
    run = overloaded
    for _ in range(3):
        measured = run.tick().capacity
    assert measured is not None and measured > settings.INGEST_CONCURRENCY
    assert Tick.objects.order_by("-scheduled_at")[0].capacity == measured
    run.restart()
    # A cold poller would have no estimate and send until its dispatch deadline.
    restored = run.poller.throughput.fetches_within(dispatch_budget(settings.INGEST_POLL_SECONDS))
    assert restored is not None and abs(restored - measured) <= 1


def test_each_skipped_poll_is_recorded_per_tick_and_per_user(overloaded: PollingRun) -> None:
    run = overloaded
    reports = [run.tick() for _ in range(5)]
    skipped = sum(report.users_skipped for report in reports)
    assert skipped > 0
    ticks = Tick.objects.order_by("scheduled_at")
    assert [tick.users_skipped for tick in ticks] == [r.users_skipped for r in reports]
    assert [tick.capacity for tick in ticks][1:] == [r.capacity for r in reports][1:]
    assert all(tick.late for tick in ticks if tick.users_skipped)
    states = FetchState.objects.all()
    assert sum(state.skipped_polls for state in states) == skipped
    assert all(state.last_skipped_at for state in states if state.skipped_polls)


def test_it_opens_an_over_capacity_incident_and_resolves_it_when_the_load_fits_again(
    overloaded: PollingRun,
) -> None:
    run = overloaded
    for _ in range(2):
        run.tick()
    assert not Incident.objects.exists()
    run.tick()
    incident = Incident.objects.get()
    assert (incident.failure_class, incident.shard, incident.user) == (
        FailureClass.OVER_CAPACITY,
        0,
        None,
    )
    assert f"{USERS} users due" in incident.message and "INGEST_SHARDS" in incident.message
    run.tick()
    incident.refresh_from_db()
    assert incident.occurrences == 2 and incident.state == IncidentState.OPEN

    for user in EagleUser.objects.order_by("cloud_id")[: USERS // 2]:
        user.suspend("moved house")
    for _ in range(2):
        assert run.tick().users_skipped == 0
    assert Incident.objects.get().state == IncidentState.OPEN
    run.tick()
    incident.refresh_from_db()
    assert incident.state == IncidentState.RESOLVED
    assert "Every due user polled" in incident.resolution


def test_healthz_and_the_dashboard_show_the_load_the_capacity_and_what_to_do(
    overloaded: PollingRun, client: Client, operator: object
) -> None:
    run = overloaded
    for _ in range(3):
        report = run.tick()

    anonymous = client.get("/healthz")
    assert anonymous.status_code == 200
    assert anonymous.json()["status"] == "warning"
    figures = anonymous.json()["checks"]["poller_capacity"]
    assert figures == {
        "status": "warning",
        "pollers": 1,
        "users_due": USERS,
        "users_skipped": report.users_skipped,
        "capacity": report.capacity,
    }

    client.force_login(operator)  # type: ignore[arg-type]
    details = client.get("/healthz").json()["checks"]["poller_capacity"]
    [poller] = details["by_poller"]
    assert poller["shards"] == [0] and poller["users_due"] == USERS
    assert poller["capacity"] == report.capacity
    assert "Over capacity" in details["advice"] and "INGEST_SHARDS" in details["advice"]

    summary = dashboard.fleet_summary()
    assert summary.pollers_level == "problem"
    assert (summary.pollers_users_due, summary.pollers_capacity) == (USERS, report.capacity)
    page = client.get("/admin/").content.decode()
    assert "Poller capacity" in page and "Over capacity" in page


def test_a_poller_within_capacity_skips_nothing_and_reports_itself_healthy(
    settings: Settings, client: Client
) -> None:
    settings.INGEST_POLL_SECONDS = 1.0
    with polling_run(settings, users=4, latency=LATENCY) as run:
        reports = [run.tick() for _ in range(3)]
        assert {report.users_skipped for report in reports} == {0}
        assert not any(report.late for report in reports)
        check = client.get("/healthz").json()["checks"]["poller_capacity"]
    assert check["status"] == "ok" and check["users_skipped"] == 0
    assert not Incident.objects.exists()
