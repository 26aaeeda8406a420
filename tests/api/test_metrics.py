"""/metrics: Prometheus text with the archive's freshness and hour files by state."""

from datetime import UTC, datetime

import pytest
import time_machine
from django.test import Client
from pytest_django.fixtures import Settings

from ingestion.models import HourFileState
from tests.hour_files import manifest_row

NOW = datetime(2026, 3, 8, 12, 30, tzinfo=UTC)

pytestmark = pytest.mark.django_db


METRICS_TOKEN = "scrape-secret"


@pytest.fixture(autouse=True)
def metrics_token(settings: Settings) -> None:
    settings.METRICS_TOKEN = METRICS_TOKEN


def scrape(client: Client, **headers: str) -> tuple[int, str]:
    """What Prometheus gets, with its bearer token unless other headers are given."""
    headers = headers or {"Authorization": f"Bearer {METRICS_TOKEN}"}
    with time_machine.travel(NOW, tick=False):
        response = client.get("/metrics", headers=headers)
    return response.status_code, response.content.decode()


def samples(text: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_it_exposes_the_oldest_unshipped_hour_overall_and_per_user(client: Client) -> None:
    manifest_row("0001", datetime(2026, 3, 8, 9, tzinfo=UTC), state=HourFileState.FAILED)
    manifest_row("0001", datetime(2026, 3, 8, 11, tzinfo=UTC), state=HourFileState.SEALED)
    manifest_row("0002", datetime(2026, 3, 8, 11, tzinfo=UTC), state=HourFileState.CONFLICT)
    manifest_row("0003", datetime(2026, 3, 8, 8, tzinfo=UTC), state=HourFileState.VERIFIED)

    status, text = scrape(client)

    assert status == 200
    values = samples(text)
    assert values["rainlog_archive_oldest_unshipped_age_seconds"] == 3.5 * 3600
    assert (
        values['rainlog_archive_user_oldest_unshipped_age_seconds{cloud_id="0001"}'] == 3.5 * 3600
    )
    assert (
        values['rainlog_archive_user_oldest_unshipped_age_seconds{cloud_id="0002"}'] == 1.5 * 3600
    )
    assert 'rainlog_archive_user_oldest_unshipped_age_seconds{cloud_id="0003"}' not in values
    assert values['rainlog_archive_hour_files{state="failed"}'] == 1
    assert values['rainlog_archive_hour_files{state="sealed"}'] == 1
    assert values['rainlog_archive_hour_files{state="uploading"}'] == 0
    assert "# TYPE rainlog_archive_oldest_unshipped_age_seconds gauge" in text


def test_an_archive_with_nothing_unshipped_reports_zero(client: Client) -> None:
    manifest_row("0001", datetime(2026, 3, 8, 9, tzinfo=UTC), state=HourFileState.VERIFIED)
    _, text = scrape(client)
    assert samples(text)["rainlog_archive_oldest_unshipped_age_seconds"] == 0


def test_a_metrics_token_keeps_strangers_out(client: Client) -> None:
    assert client.get("/metrics").status_code == 401
    assert scrape(client, Authorization="Bearer wrong")[0] == 401
    status, text = scrape(client, Authorization="Bearer scrape-secret")
    assert status == 200 and "rainlog_archive_hour_files" in text
