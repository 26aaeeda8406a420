"""Incidents: one open per user and failure class, opened and refreshed in bulk by the poller,
resolved when fetching works again or by an operator; and their admin."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from pytest_django.fixtures import Settings

from ingestion.models import (
    AUTO_RESOLUTION,
    FetchState,
    Incident,
    IncidentSighting,
    IncidentState,
    PollLease,
)
from tests.factories import EagleUserFactory, IncidentFactory, TickFactory
from tests.polling import polling_run

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def sighting(user_id: int, failure_class: str = "timeout", **over: object) -> IncidentSighting:
    fields: dict = {
        "user_id": user_id,
        "failure_class": failure_class,
        "opened_at": T0,
        "seen_at": T0,
        "occurrences": 1,
        "message": "demand: no reply within 4 s",
        **over,
    }
    return IncidentSighting(**fields)


def test_a_sighting_opens_an_incident_and_later_ones_refresh_it() -> None:
    user = EagleUserFactory()
    Incident.objects.record_sightings([sighting(user.pk, occurrences=3)])
    later = T0 + timedelta(seconds=12)
    Incident.objects.record_sightings(
        [sighting(user.pk, seen_at=later, opened_at=later, message="demand: again")]
    )
    incident = Incident.objects.get()
    assert incident.state == IncidentState.OPEN
    assert (incident.opened_at, incident.last_seen_at, incident.occurrences) == (T0, later, 4)
    assert incident.message == "demand: again"


def test_sightings_of_one_pair_in_one_tick_are_merged_and_other_pairs_kept_apart() -> None:
    first, second = EagleUserFactory(), EagleUserFactory()
    Incident.objects.record_sightings(
        [
            sighting(first.pk, message="demand: no reply"),
            sighting(first.pk, message="summation: no reply", opened_at=T0 - timedelta(seconds=6)),
            sighting(first.pk, "http_error"),
            sighting(second.pk),
        ]
    )
    incidents = {(i.user_id, i.failure_class): i for i in Incident.objects.all()}
    assert set(incidents) == {
        (first.pk, "timeout"),
        (first.pk, "http_error"),
        (second.pk, "timeout"),
    }
    merged = incidents[(first.pk, "timeout")]
    assert merged.occurrences == 2 and merged.opened_at == T0 - timedelta(seconds=6)


def test_resolving_pairs_closes_only_those_and_a_new_failure_opens_a_new_incident() -> None:
    user = EagleUserFactory()
    Incident.objects.record_sightings([sighting(user.pk), sighting(user.pk, "http_error")])
    Incident.objects.resolve_pairs({(user.pk, "timeout")}, T0 + timedelta(minutes=1))
    resolved = Incident.objects.get(failure_class="timeout")
    assert resolved.state == IncidentState.RESOLVED
    assert resolved.resolved_at == T0 + timedelta(minutes=1)
    assert resolved.resolution == AUTO_RESOLUTION
    assert Incident.objects.get(failure_class="http_error").state == IncidentState.OPEN
    Incident.objects.record_sightings([sighting(user.pk, seen_at=T0 + timedelta(minutes=2))])
    assert Incident.objects.filter(failure_class="timeout").count() == 2
    assert Incident.objects.open().filter(failure_class="timeout").get().occurrences == 1


def test_an_operator_resolves_open_incidents_by_hand(operator: User) -> None:
    open_one = IncidentFactory()
    done = IncidentFactory(state=IncidentState.RESOLVED, resolution="earlier")
    resolved = Incident.objects.filter(pk__in=[open_one.pk, done.pk]).resolve(operator, "fixed")
    assert resolved == 1
    open_one.refresh_from_db()
    done.refresh_from_db()
    assert (open_one.state, open_one.resolved_by, open_one.resolution) == (
        IncidentState.RESOLVED,
        operator,
        "fixed",
    )
    assert done.resolution == "earlier"


def test_transient_failures_open_an_incident_only_when_they_persist(
    settings: Settings,
) -> None:
    settings.INGEST_INCIDENT_AFTER_FAILURES = 3
    settings.INGEST_REQUEST_TIMEOUT = 2.0
    with polling_run(settings, users=2) as run:
        # HTML error pages: no backoff, so a failure every tick.
        run.sim.set_fault("000001", "html")
        run.tick()
        run.tick()
        assert not Incident.objects.exists()
        run.sim.clear_faults()
        run.tick()
        run.sim.set_fault("000001", "html")
        for _ in range(3):
            run.tick()
        incident = Incident.objects.get()
        assert (incident.failure_class, incident.occurrences) == ("malformed_reply", 3)
        assert "demand: " in incident.message and "<html>" in incident.raw_reply
        run.sim.clear_faults()
        run.tick()
    incident.refresh_from_db()
    assert incident.state == IncidentState.RESOLVED


def test_a_failing_extra_record_type_does_not_flap_with_working_demand(
    settings: Settings,
) -> None:
    settings.INGEST_INCIDENT_AFTER_FAILURES = 1
    settings.INGEST_EXTRA_POLL_SECONDS = 6
    settings.INGEST_REQUEST_TIMEOUT = 2.0
    with polling_run(settings, users=4) as run:
        # A meter that offers no price: every price fetch fails while demand works.
        no_price = next(g for g in run.sim.gateways.values() if not g.meter.offers_price)
        cloud_id = no_price.meter.cloud_id
        FetchState.objects.filter(user__cloud_id=cloud_id).update(extra_record_types=["price"])
        run.poller.load_users()
        for _ in range(4):
            run.tick()
    (incident,) = Incident.objects.filter(user__cloud_id=cloud_id)
    assert incident.state == IncidentState.OPEN and incident.occurrences == 4
    assert incident.message.startswith("price: ")


# --- Admin -------------------------------------------------------------------------------------


def test_the_incident_list_filters_by_state_class_and_user(admin_client: Client) -> None:
    mine = IncidentFactory(failure_class="bad_credentials", message="refused")
    other = IncidentFactory(failure_class="timeout", state=IncidentState.RESOLVED)
    url = reverse("admin:ingestion_incident_changelist")

    def listed(query: str) -> set[int]:
        response = admin_client.get(url + query)
        assert response.status_code == 200, query
        return {incident.pk for incident in response.context["cl"].result_list}

    assert listed("") == {mine.pk, other.pk}
    assert listed("?state__exact=open") == {mine.pk}
    assert listed("?state__exact=resolved") == {other.pk}
    assert listed("?failure_class__exact=bad_credentials") == {mine.pk}
    assert listed(f"?user__id__exact={mine.user_id}") == {mine.pk}
    assert listed(f"?q={mine.user.cloud_id}") == {mine.pk}


def test_the_resolve_action_resolves_the_selected_open_incidents(
    admin_client: Client, admin_user: Any
) -> None:
    incident = IncidentFactory()
    response = admin_client.post(
        reverse("admin:ingestion_incident_changelist"),
        {"action": "resolve", "_selected_action": [incident.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert "1 incidents resolved." in response.content.decode()
    incident.refresh_from_db()
    assert incident.state == IncidentState.RESOLVED and incident.resolved_by == admin_user


def test_fetch_state_tick_and_lease_pages_are_read_only_but_extra_types_are_editable(
    admin_client: Client,
) -> None:
    state = FetchState.objects.create(user=EagleUserFactory())
    TickFactory(scheduled_at=T0, late=True)
    PollLease.objects.create(shard=0, holder="window@host:1:abc")
    for name in ("fetchstate", "tick", "polllease"):
        response = admin_client.get(reverse(f"admin:ingestion_{name}_changelist"))
        assert response.status_code == 200, name
    assert admin_client.get(reverse("admin:ingestion_tick_add")).status_code == 403
    change = reverse("admin:ingestion_fetchstate_change", args=[state.pk])
    response = admin_client.post(change, {"extra_record_types": '["summation", "tariff"]'})
    assert "Unknown: tariff" in response.content.decode()
    response = admin_client.post(change, {"extra_record_types": '["summation"]'})
    assert response.status_code == 302
    state.refresh_from_db()
    assert state.extra_record_types == ["summation"]
