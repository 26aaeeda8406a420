"""The console's views behind the pages: chart data, CSV export and the per-user actions."""

import csv
import io
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from ingestion import hourfiles
from ingestion.eagle.simulator import Simulator
from ingestion.hourfiles import HourFileWriter
from ingestion.models import HourFile, HourFileState
from ingestion.records import Reading, Source
from tests.admin.conftest import NOW, Fleet, build_fleet, demand_kw
from tests.factories import EagleUserFactory, HourFileFactory, OperatorFactory
from users.models import EagleUser

TODAY = NOW.date().isoformat()


@pytest.fixture
def fleet(db: None, simulator: Simulator, settings_for_console: None) -> Fleet:
    return build_fleet(simulator, week_for_failing=False)


@pytest.fixture
def fleet_with_a_week(db: None, simulator: Simulator, settings_for_console: None) -> Fleet:
    return build_fleet(simulator, week_for_failing=True)


@pytest.fixture
def operator_client(db: None) -> Client:
    client = Client()
    client.force_login(OperatorFactory(is_superuser=True))
    return client


def action_url(user: EagleUser, action: str) -> str:
    return reverse("admin:console_user_action", args=[user.pk, action])


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_it_serves_the_fleet_charts_data(fleet: Fleet, operator_client: Client) -> None:
    body = operator_client.get(reverse("admin:console_fleet")).json()

    minutes = body["ticks"]
    assert len(minutes["t"]) == len(minutes["readings"]) == 24 * 60
    # 6 logging households: 3 or 4 new readings per tick, 10 ticks a minute.
    assert set(minutes["readings"][-60:]) <= {36, 35, 37}
    # The poller's 15-minute outage 7 h ago is a gap, not zero readings.
    assert minutes["readings"].count(None) == 15 and 0 not in minutes["readings"]
    demand = body["demand"]
    assert (demand["households_sampled"], demand["households_logging"]) == (4, 6)
    assert len(demand["t"]) == 96 and None not in demand["fleet_kw"][-90:-1]
    hour = operator_client.get(reverse("admin:console_fleet"), {"window": "1h"}).json()
    assert len(hour["ticks"]["t"]) == 60 and len(hour["demand"]["t"]) == 60
    assert operator_client.get(reverse("admin:console_fleet"), {"window": "2d"}).status_code == 400


def test_it_serves_one_users_demand_for_a_day_with_export_below_zero(
    fleet: Fleet, operator_client: Client
) -> None:
    user = fleet.logging[0]  # every third household has solar panels
    url = reverse("admin:console_user_demand", args=[user.pk])

    body = operator_client.get(url, {"day": TODAY}).json()

    assert body["day"] == TODAY
    assert len(body["t"]) == (13 * 3600 + 20 * 60) // 10
    assert body["demand_kw"][0] == demand_kw(0, body["t"][0])
    assert min(body["demand_kw"]) < 0 < max(body["demand_kw"])
    assert operator_client.get(url, {"day": "15/01/2030"}).status_code == 400


def test_it_serves_a_window_of_demand_ending_now_with_a_break_in_each_gap(
    fleet_with_a_week: Fleet, operator_client: Client
) -> None:
    user = fleet_with_a_week.bad_credentials  # no reading since it broke, 3 h 10 min ago
    url = reverse("admin:console_user_demand", args=[user.pk])

    body = operator_client.get(url, {"window": "6h"}).json()

    assert body["window"] == "6h" and body["end"].startswith("2030-01-15T13:20")
    breaks = [t for t, kw in zip(body["t"], body["demand_kw"], strict=True) if kw is None]
    assert breaks == []  # the readings stop, and the chart's range goes on to now
    # From 6 h before now (the clock runs on) to when it broke, one reading every 10 s.
    broke = NOW - timedelta(hours=3, minutes=10)
    start = datetime.fromisoformat(body["start"])
    assert abs(len(body["t"]) - (broke - start).total_seconds() // 10) <= 1
    week = operator_client.get(url, {"window": "7d"}).json()
    # The outage two days ago (30 minutes without a reading) is one break in the line.
    assert week["demand_kw"].count(None) == 1


def test_it_exports_whole_days_of_readings_as_csv(fleet: Fleet, operator_client: Client) -> None:
    user = fleet.logging[2]
    yesterday = (NOW - timedelta(days=1)).date().isoformat()
    url = reverse("admin:console_user_export", args=[user.pk])

    response = operator_client.get(url, {"start": yesterday, "end": TODAY})

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv"
    assert f"rainlog-{user.cloud_id}-{yesterday}-{TODAY}.csv" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    # From 25 h ago (yesterday 12:20) to now, one reading every 10 s, archived or on disk.
    assert len(rows) == 25 * 360
    assert rows[0]["meter_time"] == "2030-01-14T12:20:02Z"
    assert float(rows[0]["demand_kw"]) == demand_kw(2, int(rows[0]["meter_timestamp"]))
    assert {row["record_type"] for row in rows} == {"demand"}
    timestamps = [int(row["meter_timestamp"]) for row in rows]
    assert timestamps == sorted(set(timestamps))


def test_it_refuses_exports_it_cannot_serve_with_a_reason(
    fleet: Fleet, operator_client: Client
) -> None:
    url = reverse("admin:console_user_export", args=[fleet.logging[0].pk])
    too_long = operator_client.get(url, {"start": "2029-11-01", "end": TODAY})
    backwards = operator_client.get(url, {"start": TODAY, "end": "2030-01-01"})

    assert too_long.status_code == backwards.status_code == 400
    assert b"readings API" in too_long.content
    assert b"comes before" in backwards.content


def test_it_checks_credentials_and_fetches_now_against_the_gateway(
    fleet: Fleet, operator_client: Client
) -> None:
    healthy, broken = fleet.logging[3], fleet.unreachable

    fetched = operator_client.post(action_url(healthy, "fetch-now"), follow=True)
    failed = operator_client.post(action_url(broken, "fetch-now"), follow=True)
    checked = operator_client.post(action_url(healthy, "check-credentials"), follow=True)

    assert fetched.redirect_chain[-1][0] == reverse(
        "admin:users_eagleuser_change", args=[healthy.pk]
    )
    assert f"{healthy.cloud_id}: fetched demand demand_kw" in messages_of(fetched)[0]
    assert "Gateway unreachable" in messages_of(failed)[0]
    assert messages_of(checked)[0].startswith(f"{healthy.cloud_id}: OK: credentials accepted")
    for response in (fetched, failed, checked):
        assert healthy.eagle_password not in response.content.decode()


def test_it_rotates_the_closed_hours_of_one_user_only(at_now: Any, operator_client: Client) -> None:
    hour = hourfiles.hour_floor(NOW) - timedelta(hours=2)
    chosen, other = EagleUserFactory(), EagleUserFactory()
    with HourFileWriter() as writer:
        for user in (chosen, other):
            writer.append(
                Reading(
                    user.cloud_id,
                    "demand",
                    int(hour.timestamp()) + 10 * k,
                    hour,
                    Source.CLOUD,
                    {"demand_kw": 1.0},
                )
                for k in range(30)
            )

    response = operator_client.post(action_url(chosen, "rotate-now"), follow=True)

    assert messages_of(response)[0].startswith(f"{chosen.cloud_id}: rotation: 1 shipped")
    shipped = HourFile.objects.get(cloud_id=chosen.cloud_id)
    assert (shipped.state, shipped.line_count) == (HourFileState.VERIFIED, 30)
    assert not HourFile.objects.filter(
        cloud_id=other.cloud_id, state=HourFileState.VERIFIED
    ).exists()


def test_it_suspends_and_resumes_with_the_operators_name_as_reason(fleet: Fleet) -> None:
    operator = OperatorFactory(is_superuser=True, username="ada")
    client = Client()
    client.force_login(operator)
    user = fleet.logging[4]

    suspended = client.post(action_url(user, "suspend"), follow=True)
    user.refresh_from_db()
    assert (user.is_active, user.suspended_reason) == (False, "Suspended by ada in the console.")
    assert "suspended: it is no longer polled" in messages_of(suspended)[0]
    again = client.post(action_url(user, "suspend"), follow=True)
    assert "already suspended" in messages_of(again)[0]

    client.post(action_url(user, "resume"))
    user.refresh_from_db()
    assert user.is_active and user.suspended_reason == ""


def test_it_lets_only_operators_who_may_change_users_act(fleet: Fleet) -> None:
    reader = OperatorFactory()
    reader.user_permissions.add(
        Permission.objects.get(codename="view_eagleuser"),
        Permission.objects.get(codename="view_tick"),
    )
    client = Client()
    client.force_login(reader)
    user = fleet.logging[0]

    assert client.post(action_url(user, "suspend")).status_code == 403
    user.refresh_from_db()
    assert user.is_active
    page = client.get(reverse("admin:users_eagleuser_change", args=[user.pk]))
    assert page.status_code == 200
    assert action_url(user, "suspend") not in page.content.decode()
    assert client.get(reverse("admin:console_user_demand", args=[user.pk])).status_code == 200
    assert client.get(reverse("admin:console_fleet")).status_code == 200


def test_it_answers_only_posts_for_actions_and_knows_them_by_name(
    fleet: Fleet, operator_client: Client
) -> None:
    user = fleet.logging[0]
    assert operator_client.get(action_url(user, "suspend")).status_code == 405
    assert operator_client.post(action_url(user, "delete-everything")).status_code == 400


def test_it_explains_a_day_it_cannot_read_from_the_archive(operator_client: Client) -> None:
    # The manifest says verified, but the object is not in the archive (and not on disk).
    lost = HourFileFactory(state=HourFileState.VERIFIED, line_count=360)
    url = reverse("admin:console_user_demand", args=[lost.user.pk])

    response = operator_client.get(url, {"day": lost.hour.date().isoformat()})

    assert response.status_code == 503
    assert lost.key in response.json()["error"]
