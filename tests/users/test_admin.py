"""The EAGLE users admin: list, search and filters, a password that is set but never shown, and the
activate / suspend / check credentials / purge actions."""

from collections.abc import Iterator

import pytest
from django.contrib.admin.models import DELETION, LogEntry
from django.test import Client
from pytest_django.fixtures import Settings

from ingestion import hourfiles
from ingestion.eagle.simulator import Simulator
from ingestion.models import FetchState, HourFile
from tests.factories import EagleUserFactory
from users.models import ConnectionType, EagleUser

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/users/eagleuser/"
PASSWORD = "hunter2-eagle-password"


def change_url(user: EagleUser) -> str:
    return f"{CHANGELIST}{user.pk}/change/"


def form_data(user: EagleUser, **over: object) -> dict:
    data = {
        "email": user.email,
        "eagle_password": "",
        "connection_type": user.connection_type,
        "gateway_address": user.gateway_address,
        "meter_mac": user.meter_mac,
        "is_active": "on" if user.is_active else "",
        "suspended_reason": user.suspended_reason,
    }
    data.update(over)
    return {name: value for name, value in data.items() if value is not None}


@pytest.fixture
def krum() -> EagleUser:
    user = EagleUserFactory(
        cloud_id="002738", email="viktor.krum@durmstrang.edu", eagle_password=PASSWORD
    )
    FetchState.objects.create(user=user, total_events_logged=2725, consecutive_failures=3)
    return user


def test_the_list_shows_fetch_metadata_and_searches_by_cloud_id_and_email(
    admin_client: Client, krum: EagleUser
) -> None:
    EagleUserFactory(cloud_id="00a1f0", email="fleur@beauxbatons.fr")

    page = admin_client.get(CHANGELIST).content.decode()
    assert "002738" in page and "00a1f0" in page and "2725" in page
    assert PASSWORD not in page

    by_id = admin_client.get(CHANGELIST, {"q": "2738"}).content.decode()
    assert "002738" in by_id and "00a1f0" not in by_id
    by_email = admin_client.get(CHANGELIST, {"q": "beauxbatons"}).content.decode()
    assert "00a1f0" in by_email and "002738" not in by_email


@pytest.mark.parametrize(
    ("query", "shown", "hidden"),
    [
        ({"fetching": "failing"}, "002738", "00a1f0"),
        ({"fetching": "healthy"}, "00a1f0", "002738"),
        ({"state": "suspended"}, "00a1f0", "002738"),
        ({"connection_type__exact": "eagle200"}, "00a1f0", "002738"),
    ],
)
def test_the_list_filters_by_fetching_state_and_connection_type(
    admin_client: Client, krum: EagleUser, query: dict, shown: str, hidden: str
) -> None:
    other = EagleUserFactory(
        cloud_id="00a1f0", connection_type=ConnectionType.EAGLE200, gateway_address="10.0.0.2"
    )
    other.suspend("moved out")
    page = admin_client.get(CHANGELIST, query).content.decode()
    assert shown in page and hidden not in page


def test_the_change_form_never_shows_the_password(admin_client: Client, krum: EagleUser) -> None:
    response = admin_client.get(change_url(krum))
    assert response.status_code == 200
    assert PASSWORD not in response.content.decode()


def test_saving_with_an_empty_password_field_keeps_the_stored_one(
    admin_client: Client, krum: EagleUser
) -> None:
    response = admin_client.post(change_url(krum), form_data(krum, email="krum@bulgaria.example"))
    assert response.status_code == 302
    krum.refresh_from_db()
    assert (krum.email, krum.eagle_password) == ("krum@bulgaria.example", PASSWORD)
    change = LogEntry.objects.get(object_id=str(krum.pk)).get_change_message()
    assert "Email" in change and "password" not in change.lower()


def test_typing_a_password_replaces_the_stored_one(admin_client: Client, krum: EagleUser) -> None:
    response = admin_client.post(change_url(krum), form_data(krum, eagle_password="new-one"))
    assert response.status_code == 302
    krum.refresh_from_db()
    assert krum.eagle_password == "new-one"


def test_adding_a_user_creates_its_fetch_state_and_requires_a_password(
    admin_client: Client,
) -> None:
    fields = {"cloud_id": "002738", "email": "a@example.org", "connection_type": "cloud"}
    refused = admin_client.post(f"{CHANGELIST}add/", {**fields, "is_active": "on"})
    assert refused.status_code == 200 and not EagleUser.objects.exists()

    added = admin_client.post(
        f"{CHANGELIST}add/", {**fields, "is_active": "on", "eagle_password": "secret-pw"}
    )
    assert added.status_code == 302
    user = EagleUser.objects.get(cloud_id="002738")
    assert user.eagle_password == "secret-pw"
    assert FetchState.objects.filter(user=user).exists()


def test_unticking_active_records_when_the_user_was_suspended(
    admin_client: Client, krum: EagleUser
) -> None:
    admin_client.post(change_url(krum), form_data(krum, is_active=""))
    krum.refresh_from_db()
    assert not krum.is_active
    assert krum.suspended_at is not None and krum.suspended_reason


def test_the_suspend_and_activate_actions(admin_client: Client, krum: EagleUser) -> None:
    admin_client.post(CHANGELIST, {"action": "suspend_users", "_selected_action": [krum.pk]})
    krum.refresh_from_db()
    assert not krum.is_active and "admin" in krum.suspended_reason

    admin_client.post(CHANGELIST, {"action": "activate_users", "_selected_action": [krum.pk]})
    krum.refresh_from_db()
    assert krum.is_active and krum.suspended_at is None


@pytest.fixture
def sim(settings: Settings) -> Iterator[Simulator]:
    with Simulator(users=2) as simulator:
        settings.EAGLE_CLOUD_URL = simulator.cloud_url
        yield simulator


def test_the_check_credentials_action_reports_each_classified_result(
    admin_client: Client, sim: Simulator
) -> None:
    good, bad = sim.accounts()
    users = [
        EagleUser.objects.upsert(
            good["cloud_id"], {"email": good["user_email"], "eagle_password": good["user_pw"]}
        )[0],
        EagleUser.objects.upsert(
            bad["cloud_id"], {"email": bad["user_email"], "eagle_password": "wrong-password"}
        )[0],
    ]
    response = admin_client.post(
        CHANGELIST,
        {"action": "check_user_credentials", "_selected_action": [u.pk for u in users]},
        follow=True,
    )
    messages = [str(m) for m in response.context["messages"]]
    assert any(m.startswith(f"{good['cloud_id']}: OK: credentials accepted") for m in messages)
    assert any(m.startswith(f"{bad['cloud_id']}: bad_credentials:") for m in messages)
    assert "wrong-password" not in response.content.decode()


def test_the_purge_action_asks_first_then_removes_the_user_and_its_data(
    admin_client: Client, krum: EagleUser
) -> None:
    hour = hourfiles.parse_hour_label("2026-03-08-09")
    local = hourfiles.local_path("002738", hour)
    local.parent.mkdir(parents=True)
    local.write_text("{}\n")
    HourFile.objects.create(
        cloud_id="002738", user=krum, hour=hour, local_path=str(local), key="k/002738"
    )
    selection = {"action": "delete_and_purge", "_selected_action": [krum.pk]}

    confirmation = admin_client.post(CHANGELIST, selection)
    assert confirmation.status_code == 200
    assert "1 hour file in the manifest" in confirmation.content.decode()
    assert EagleUser.objects.exists() and local.exists()

    admin_client.post(CHANGELIST, {**selection, "confirm": "yes"})
    assert not EagleUser.objects.exists()
    assert not local.exists() and not HourFile.objects.exists()
    assert LogEntry.objects.filter(action_flag=DELETION, object_id=str(krum.pk)).exists()
