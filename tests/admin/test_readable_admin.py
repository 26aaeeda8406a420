"""The admin says what it means: icons that match their words, titles that name the household,
one way of writing a time, sizes for people, links that lead somewhere, and an icon of its own."""

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.urls import reverse

from ingestion.models import HourFileState
from ingestion.records import FailureClass
from tests.factories import (
    EagleUserFactory,
    FetchStateFactory,
    HourFileFactory,
    IncidentFactory,
    OperatorFactory,
    TickFactory,
)

pytestmark = pytest.mark.django_db
MOMENT = datetime(2026, 3, 8, 9, 5, 7, tzinfo=UTC)


@pytest.fixture
def client() -> Client:
    client = Client()
    client.force_login(OperatorFactory(is_superuser=True))
    return client


def row_of(html: str, text: str) -> str:
    """The changelist row (<tr>…</tr>) holding `text`."""
    start = html.rindex("<tr", 0, html.index(text))
    return html[start : html.index("</tr>", start)]


def cell(row: str, field: str) -> str:
    start = row.index(f'class="field-{field}"')
    return row[start : row.index("</td>", start)]


def test_the_users_health_column_shows_failing_users_with_a_problem_icon(client: Client) -> None:
    healthy = EagleUserFactory(cloud_id="00aa01")
    FetchStateFactory(user=healthy, last_success_at=MOMENT)
    failing = EagleUserFactory(cloud_id="00aa02")
    FetchStateFactory(user=failing, consecutive_failures=3, last_error_class=FailureClass.TIMEOUT)

    html = client.get(reverse("admin:users_eagleuser_changelist")).content.decode()

    assert "icon-yes.svg" in cell(row_of(html, "00aa01"), "failing")
    assert "OK" in cell(row_of(html, "00aa01"), "failing")
    failing_cell = cell(row_of(html, "00aa02"), "failing")
    assert "icon-no.svg" in failing_cell and "Failing" in failing_cell


def test_the_ticks_list_says_on_time_or_late_with_the_matching_icon(client: Client) -> None:
    TickFactory(scheduled_at=MOMENT, late=False)
    TickFactory(scheduled_at=MOMENT + timedelta(seconds=6), late=True)

    html = client.get(reverse("admin:ingestion_tick_changelist")).content.decode()

    on_time = cell(row_of(html, "2026-03-08 09:05:07 UTC"), "on_time")
    late = cell(row_of(html, "2026-03-08 09:05:13 UTC"), "on_time")
    assert "icon-yes.svg" in on_time and "On time" in on_time
    assert "icon-no.svg" in late and "Late" in late


def test_an_incident_is_titled_with_the_cloud_id_not_the_database_id(client: Client) -> None:
    incident = IncidentFactory(
        user=EagleUserFactory(cloud_id="00beef"), failure_class=FailureClass.UNKNOWN_CLOUD_ID
    )

    html = client.get(reverse("admin:ingestion_incident_change", args=[incident.pk])).content
    assert str(incident) == "Unknown cloud id for 00beef"
    assert b"Unknown cloud id for 00beef" in html


def test_times_are_written_one_way_and_sizes_for_people(client: Client) -> None:
    user = EagleUserFactory(cloud_id="00aa03")
    FetchStateFactory(user=user, last_success_at=MOMENT, last_timestamp=MOMENT.timestamp())
    HourFileFactory(
        user=user,
        hour=MOMENT.replace(minute=0, second=0),
        state=HourFileState.VERIFIED,
        size=1_234_567,
    )

    users = client.get(reverse("admin:users_eagleuser_changelist")).content.decode()
    files = client.get(reverse("admin:ingestion_hourfile_changelist")).content.decode()

    assert users.count("2026-03-08 09:05:07 UTC") == 2  # last reading, last success
    assert "None" not in row_of(users, "00aa03")
    assert "1.2 MB" in row_of(files, "00aa03")


def test_view_site_and_the_site_root_lead_to_the_console(client: Client) -> None:
    page = client.get(reverse("admin:users_eagleuser_changelist")).content.decode()

    assert f'href="{reverse("admin:index")}">View site' in page.replace("\n", "").replace("  ", "")
    assert client.get("/").url == reverse("admin:index")


def test_every_admin_page_has_rainlogs_icon(client: Client) -> None:
    page = client.get(reverse("admin:index")).content.decode()

    assert 'rel="icon" href="/static/rainlog/favicon.svg"' in page
    assert Client().get("/favicon.ico").url == "/static/rainlog/favicon.svg"


def test_the_api_root_lists_its_routes_without_a_token() -> None:
    response = Client().get("/api/")

    assert response.status_code == 200
    document = response.json()
    assert document["links"]["token"] == "http://testserver/api/auth/token/"
    assert document["links"]["users"].startswith("http://testserver/api/users")
    assert document["user_routes"]["readings"] == "http://testserver/api/users/{cloud_id}/readings"
