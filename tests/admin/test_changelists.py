"""Every admin page an operator reaches from the index answers, with a fleet's data in it."""

import re

import pytest
from django.contrib import admin
from django.test import Client
from django.urls import reverse

from ingestion.eagle.simulator import Simulator
from ingestion.polling.schedules import register_schedules
from tests.admin.conftest import Fleet, build_fleet
from tests.factories import OperatorFactory


@pytest.fixture
def fleet(db: None, simulator: Simulator, settings_for_console: None) -> Fleet:
    return build_fleet(simulator, week_for_failing=False)


@pytest.fixture
def superuser_client(db: None) -> Client:
    client = Client()
    client.force_login(OperatorFactory(is_superuser=True))
    return client


def test_it_serves_every_changelist_to_a_superuser(fleet: Fleet, superuser_client: Client) -> None:
    register_schedules()
    names = []
    for model in admin.site._registry:
        opts = model._meta
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        response = superuser_client.get(url)
        assert response.status_code == 200, f"{url}: {response.status_code}"
        names.append(opts.label)
    assert {
        "users.EagleUser",
        "ingestion.Incident",
        "ingestion.HourFile",
        "django_q.Schedule",
    } <= set(names)


def test_it_labels_the_polling_and_rotation_schedules_in_django_q2s_admin(
    db: None, superuser_client: Client
) -> None:
    register_schedules()

    page = superuser_client.get(reverse("admin:django_q_schedule_changelist")).content.decode()

    assert "Polling, shard 0: runs the 6-second ticks of each minute" in page
    assert "Rotation: seals closed hours and ships them to the archive" in page


def test_it_shows_the_fleet_dashboard_as_the_admin_index(
    fleet: Fleet, superuser_client: Client
) -> None:
    response = superuser_client.get(reverse("admin:index"))

    assert response.status_code == 200
    summary = response.context["fleet"]
    assert (summary.users_total, summary.users_logging, summary.users_suspended) == (10, 6, 1)
    assert {c.key: c.count for c in summary.users_failing} == {
        "bad_credentials": 1,
        "gateway_unreachable": 1,
    }
    assert summary.oldest_unshipped == fleet.failed_upload
    page = response.content.decode()
    assert '6 <span class="rl-unit">of 10 logging</span>' in page
    assert "Bad credentials" in page and "Gateway unreachable" in page
    assert reverse("admin:console_fleet") in page
    # The models stay reachable from the index.
    assert reverse("admin:users_eagleuser_changelist") in page


def test_it_shows_a_users_console_above_its_form(fleet: Fleet, superuser_client: Client) -> None:
    user = fleet.bad_credentials
    response = superuser_client.get(reverse("admin:users_eagleuser_change", args=[user.pk]))

    assert response.status_code == 200
    page = response.content.decode()
    assert "Failing: Bad credentials" in page
    for action in ("check-credentials", "fetch-now", "suspend", "rotate-now"):
        assert reverse("admin:console_user_action", args=[user.pk, action]) in page
    hours = re.findall(r'<td class="rl-cell rl-cov-(\w+)"', page)
    assert len([state for state in hours if state != "outside"]) == 7 * 24
    assert user.eagle_password not in page
    adding = superuser_client.get(reverse("admin:users_eagleuser_add"))
    assert adding.status_code == 200 and b"user-console" not in adding.content
