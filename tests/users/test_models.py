"""EagleUser: creation and updates through upsert, validation, suspension, failing state, and the
password column that never holds the password in clear."""

from datetime import UTC, datetime

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.db import connection

from ingestion.models import FetchState, Incident, IncidentState
from ingestion.records import FailureClass
from tests.factories import EagleUserFactory
from users.models import DEFAULT_SUSPENDED_REASON, ConnectionType, EagleUser

pytestmark = pytest.mark.django_db

CLOUD_USER = {"email": "viktor.krum@durmstrang.edu", "eagle_password": "1234567"}


def test_it_stores_the_password_encrypted_in_its_column() -> None:
    EagleUser.objects.upsert("002738", CLOUD_USER)
    with connection.cursor() as cursor:
        cursor.execute("SELECT eagle_password FROM users_eagleuser WHERE cloud_id = %s", ["002738"])
        (stored,) = cursor.fetchone()
    assert "1234567" not in stored
    assert stored.startswith("gAAAAA")  # a Fernet token
    assert EagleUser.objects.get(cloud_id="002738").eagle_password == "1234567"


def test_it_keeps_leading_zeros_and_creates_the_fetch_state_with_the_user() -> None:
    user, created, _ = EagleUser.objects.upsert("002738", CLOUD_USER)
    assert created
    assert EagleUser.objects.get(cloud_id="002738").pk == user.pk
    assert not EagleUser.objects.filter(cloud_id="2738").exists()
    assert FetchState.objects.get(user=user).total_events_logged == 0


def test_applying_the_same_values_again_writes_nothing() -> None:
    with time_machine.travel(datetime(2026, 3, 1, tzinfo=UTC), tick=False):
        EagleUser.objects.upsert("002738", CLOUD_USER)
    with time_machine.travel(datetime(2026, 3, 2, tzinfo=UTC), tick=False):
        user, created, changed = EagleUser.objects.upsert("002738", CLOUD_USER)
    assert (created, changed) == (False, [])
    assert user.updated_at == datetime(2026, 3, 1, tzinfo=UTC)


def test_an_update_reports_and_saves_only_the_fields_that_changed() -> None:
    EagleUser.objects.upsert("002738", CLOUD_USER)
    _, created, changed = EagleUser.objects.upsert(
        "002738", {"email": "viktor.krum@durmstrang.edu", "eagle_password": "new-secret"}
    )
    assert (created, changed) == (False, ["eagle_password"])
    assert EagleUser.objects.get(cloud_id="002738").eagle_password == "new-secret"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"eagle_password": "x"}, "email"),
        ({"email": "a@example.org"}, "eagle_password"),
        ({"email": "not an address", "eagle_password": "x"}, "email"),
        (
            {"connection_type": ConnectionType.EAGLE200, "eagle_password": "install-code"},
            "gateway_address",
        ),
    ],
)
def test_it_refuses_a_user_that_could_not_be_polled(changes: dict, field: str) -> None:
    with pytest.raises(ValidationError) as raised:
        EagleUser.objects.upsert("002738", changes)
    assert field in raised.value.error_dict
    assert not EagleUser.objects.exists()


def test_a_push_user_needs_neither_email_nor_password() -> None:
    user, created, _ = EagleUser.objects.upsert("00a1b2", {"connection_type": ConnectionType.PUSH})
    assert created and user.connection_type == ConnectionType.PUSH


@pytest.mark.parametrize("cloud_id", ["", "00-27", "0027g8", "x" * 33, "1" * 33])
def test_it_refuses_a_bad_cloud_id(cloud_id: str) -> None:
    with pytest.raises(ValidationError):
        EagleUser.objects.upsert(cloud_id, CLOUD_USER)


def test_updating_a_missing_user_without_create_raises_does_not_exist() -> None:
    with pytest.raises(EagleUser.DoesNotExist):
        EagleUser.objects.upsert("002738", CLOUD_USER, create=False)
    assert not EagleUser.objects.exists()


def test_suspending_through_changes_records_when_and_why_and_activating_clears_it() -> None:
    EagleUser.objects.upsert("002738", CLOUD_USER)
    moment = datetime(2026, 3, 8, 10, tzinfo=UTC)
    with time_machine.travel(moment, tick=False):
        user, _, changed = EagleUser.objects.upsert("002738", {"is_active": False})
    assert set(changed) == {"is_active", "suspended_reason", "suspended_at"}
    assert (user.suspended_reason, user.suspended_at) == (DEFAULT_SUSPENDED_REASON, moment)
    user, _, _ = EagleUser.objects.upsert("002738", {"is_active": True})
    user.refresh_from_db()
    assert (user.is_active, user.suspended_reason, user.suspended_at) == (True, "", None)


def test_failing_means_failures_in_a_row_or_an_open_incident() -> None:
    healthy = EagleUserFactory(cloud_id="000001")
    healthy.ensure_fetch_state()
    failing = EagleUserFactory(cloud_id="000002")
    FetchState.objects.create(user=failing, consecutive_failures=3)
    with_incident = EagleUserFactory(cloud_id="000003")
    Incident.objects.create(user=with_incident, failure_class=FailureClass.BAD_CREDENTIALS)
    resolved = EagleUserFactory(cloud_id="000004")
    Incident.objects.create(
        user=resolved, failure_class=FailureClass.TIMEOUT, state=IncidentState.RESOLVED
    )
    without_state = EagleUserFactory(cloud_id="000005")

    assert set(EagleUser.objects.failing()) == {failing, with_incident}
    assert set(EagleUser.objects.healthy()) == {healthy, resolved, without_state}
