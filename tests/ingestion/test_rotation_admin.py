"""The hour files admin: list with freshness, filters, retry, download from the archive."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth.models import User
from django.test import Client

from ingestion import hourfiles
from ingestion.archive import rotation
from ingestion.models import HourFile, HourFileState
from tests.hour_files import demand_readings, manifest_row, write

NOW = datetime(2026, 3, 8, 12, 30, tzinfo=UTC)
HOUR = datetime(2026, 3, 8, 9, tzinfo=UTC)

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_(client: Client, operator: User) -> Client:
    operator.is_superuser = True
    operator.save()
    client.force_login(operator)
    return client


def test_the_list_shows_freshness_filters_and_retries(admin_client_: Client) -> None:
    failed = manifest_row("0001", datetime(2026, 3, 8, 9, tzinfo=UTC), state=HourFileState.FAILED)
    manifest_row("0002", datetime(2026, 3, 8, 9, tzinfo=UTC), state=HourFileState.VERIFIED)
    with time_machine.travel(NOW, tick=False):
        page = admin_client_.get(
            "/admin/ingestion/hourfile/?state__exact=failed&cloud_id__exact=0001"
        )
        assert page.status_code == 200
        assert b"Archive freshness" in page.content and b"3 h 30 min" in page.content
        assert page.context["cl"].result_count == 1
        response = admin_client_.post(
            "/admin/ingestion/hourfile/",
            {"action": "retry", "_selected_action": [failed.pk]},
            follow=True,
        )

    assert response.status_code == 200
    failed.refresh_from_db()
    assert failed.state == HourFileState.SEALED and failed.next_attempt_at is None


def test_a_verified_file_downloads_from_the_archive(admin_client_: Client, s3_archive: str) -> None:
    write(demand_readings("002738", HOUR, 5))
    data = hourfiles.local_path("002738", HOUR).read_bytes()
    with time_machine.travel(HOUR + timedelta(hours=1, minutes=5), tick=False):
        rotation.rotate()
    row = HourFile.objects.get()

    listing = admin_client_.get("/admin/ingestion/hourfile/?q=002738")
    assert f"/admin/ingestion/hourfile/{row.pk}/download/".encode() in listing.content
    response = admin_client_.get(f"/admin/ingestion/hourfile/{row.pk}/download/")

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == data
    assert "iseif-rainforest-002738-2026-03-08-09.jl" in response["Content-Disposition"]


def test_an_unshipped_file_has_nothing_to_download(admin_client_: Client) -> None:
    row = manifest_row("0001", HOUR, state=HourFileState.FAILED)
    assert admin_client_.get(f"/admin/ingestion/hourfile/{row.pk}/download/").status_code == 404


def test_a_row_opens_read_only(admin_client_: Client) -> None:
    row = manifest_row("0001", HOUR, state=HourFileState.FAILED)
    page = admin_client_.get(f"/admin/ingestion/hourfile/{row.pk}/change/")
    assert page.status_code == 200 and row.key.encode() in page.content
