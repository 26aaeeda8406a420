"""GET /api/status/: the fleet at a glance for operators and viewers."""

from datetime import UTC, datetime, timedelta

import time_machine
from rest_framework.test import APIClient

from ingestion.models import HourFileState, Incident, Tick
from ingestion.records import FailureClass
from tests.factories import EagleUserFactory
from tests.hour_files import manifest_row

NOW = datetime(2026, 3, 8, 12, 30, tzinfo=UTC)


@time_machine.travel(NOW, tick=False)
def test_it_reports_users_readings_ticks_incidents_and_the_oldest_unshipped_hour(
    viewer_client: APIClient, db
) -> None:
    with time_machine.travel(NOW - timedelta(days=1), tick=False):
        healthy, failing, _ = EagleUserFactory.create_batch(3)
    failing.suspend("bad credentials")
    Incident.objects.create(user=healthy, failure_class=FailureClass.TIMEOUT)
    Incident.objects.create(user=failing, failure_class=FailureClass.BAD_CREDENTIALS)
    for n in range(5):
        scheduled = NOW - timedelta(seconds=6 * (n + 1))
        Tick.objects.create(
            scheduled_at=scheduled,
            started_at=scheduled,
            finished_at=scheduled + timedelta(seconds=1),
            readings_written=2,
            late=n == 0,
        )
    manifest_row("002738", datetime(2026, 3, 8, 9, tzinfo=UTC), state=HourFileState.FAILED)
    manifest_row("002738", datetime(2026, 3, 8, 12, tzinfo=UTC))

    response = viewer_client.get("/api/status/")

    assert response.status_code == 200
    status = response.json()
    assert status["users"]["total"] == 3 and status["users"]["suspended"] == 1
    assert status["readings_last_hour"] == 10
    # Polling began 30 s ago: 3 readings expected of each of the 2 active users, 5 ticks.
    assert status["readings_expected_last_hour"] == 2 * 3
    assert status["ticks_last_hour"] == {
        "expected": 5,
        "recorded": 5,
        "on_time": 4,
        "late": 1,
        "missing": 0,
    }
    assert status["open_incidents_by_class"] == {"bad_credentials": 1, "timeout": 1}
    oldest = status["oldest_unshipped_hour"]
    assert (oldest["hour"], oldest["state"]) == ("2026-03-08T09:00:00Z", "failed")
    # Since the hour began, like every freshness figure.
    assert oldest["age_seconds"] == 3.5 * 3600


def test_it_needs_a_token(db: None) -> None:
    assert APIClient().get("/api/status/").status_code == 401
