"""Admin for incidents, fetch state, ticks and shard leases.

Incidents are opened, refreshed and resolved by the poller; operators read them and resolve them
by hand when the cause is dealt with. Fetch state, ticks and leases are the poller's records and
are read-only here, except which extra record types a user's gateway is asked for.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils.text import Truncator

from ingestion.admin.hour_files import CappedCountPaginator
from ingestion.models import FetchState, Incident, IncidentQuerySet, PollLease, Tick
from rainlog import display

# Users offered in the incidents' "user" filter: those with the most open incidents.
USERS_IN_FILTER = 20


class ReadOnlyAdmin(admin.ModelAdmin):
    """The poller's own records: viewable, never added, edited or deleted by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class IncidentUserFilter(admin.SimpleListFilter):
    """By user; offers the users with the most open incidents (any user id works in the URL)."""

    title = "user"
    parameter_name = "user__id__exact"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        rows = (
            Incident.objects.open()
            .values("user_id", "user__cloud_id")
            .annotate(n=Count("pk"))
            .order_by("-n", "user__cloud_id")[:USERS_IN_FILTER]
        )
        choices = [(str(row["user_id"]), row["user__cloud_id"]) for row in rows]
        selected = self.value()
        if selected and selected.isdigit() and selected not in {pk for pk, _ in choices}:
            choices.insert(0, (selected, f"user #{selected}"))
        return choices

    def queryset(self, request: HttpRequest, queryset: QuerySet[Incident]) -> QuerySet[Incident]:
        value = self.value()
        if value and value.isdigit():
            return queryset.filter(user_id=int(value))
        return queryset


INCIDENT_FIELDS = (
    "user",
    "shard",
    "failure_class",
    "state",
    "opened_at",
    "last_seen_at",
    "occurrences",
    "message",
    "raw_reply",
    "resolved_at",
    "resolved_by",
    "resolution",
)


@admin.register(Incident)
class IncidentAdmin(admin.ModelAdmin):
    list_display = [
        "cloud_id",
        "failure_class",
        "state",
        "opened_at",
        "last_seen_at",
        "occurrences",
        "short_message",
        "resolved_at",
    ]
    list_filter = ["state", "failure_class", IncidentUserFilter]
    list_select_related = ["user"]
    search_fields = ["user__cloud_id"]
    paginator = CappedCountPaginator
    show_full_result_count = False
    actions = ["resolve"]
    fields = INCIDENT_FIELDS
    readonly_fields = INCIDENT_FIELDS

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="cloud id", ordering="user__cloud_id")
    def cloud_id(self, incident: Incident) -> str:
        return incident.subject

    @admin.display(description="message")
    def short_message(self, incident: Incident) -> str:
        return Truncator(incident.message).chars(100)

    @admin.action(description="Resolve the selected incidents", permissions=["change"])
    def resolve(self, request: HttpRequest, queryset: QuerySet[Incident]) -> None:
        assert isinstance(queryset, IncidentQuerySet)
        resolved = queryset.resolve(
            by=request.user if isinstance(request.user, AbstractBaseUser) else None,
            resolution=f"Resolved by {request.user} in the admin.",
        )
        skipped = queryset.count() - resolved
        self.message_user(request, f"{resolved} incidents resolved.", messages.SUCCESS)
        if skipped > 0:
            self.message_user(request, f"{skipped} were resolved already.", messages.INFO)


class FailingFilter(admin.SimpleListFilter):
    title = "health"
    parameter_name = "failing"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Failing now"), ("backoff", "Backing off"), ("no", "Fetching fine")]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[FetchState]
    ) -> QuerySet[FetchState]:
        if self.value() == "yes":
            return queryset.filter(consecutive_failures__gt=0)
        if self.value() == "backoff":
            return queryset.filter(next_attempt_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(consecutive_failures=0)
        return queryset


FETCH_STATE_FIELDS = (
    "user",
    "extra_record_types",
    "total_events_logged",
    "first_timestamp",
    "last_timestamp",
    "extra_timestamps",
    "last_attempt_at",
    "last_success_at",
    "consecutive_failures",
    "next_attempt_at",
    "last_error_class",
    "last_error",
    "last_error_at",
)


@admin.register(FetchState)
class FetchStateAdmin(admin.ModelAdmin):
    list_display = [
        "cloud_id",
        "last_success_at",
        "last_attempt_at",
        "consecutive_failures",
        "last_error_class",
        "next_attempt_at",
        "total_events_logged",
        "extra_record_types",
    ]
    list_filter = [FailingFilter, "last_error_class"]
    list_select_related = ["user"]
    search_fields = ["user__cloud_id"]
    paginator = CappedCountPaginator
    show_full_result_count = False
    fields = FETCH_STATE_FIELDS
    # Only the record types asked for are an operator's choice; the rest is the poller's record.
    readonly_fields = [name for name in FETCH_STATE_FIELDS if name != "extra_record_types"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="cloud id", ordering="user__cloud_id")
    def cloud_id(self, state: FetchState) -> str:
        return state.user.cloud_id


@admin.register(Tick)
class TickAdmin(ReadOnlyAdmin):
    list_display = [
        "scheduled_at",
        "shard",
        "users_due",
        "users_polled",
        "readings_written",
        "failures",
        "on_time",
        "seconds",
        "holder",
    ]
    list_filter = ["late", "shard"]
    paginator = CappedCountPaginator
    show_full_result_count = False

    @admin.display(description="on time", ordering="late")
    def on_time(self, tick: Tick) -> str:
        """Late: finished after the next tick was due, or some due users were not fetched."""
        return display.status("problem", "Late") if tick.late else display.status("ok", "On time")

    @admin.display(description="done after (s)")
    def seconds(self, tick: Tick) -> str:
        return f"{(tick.finished_at - tick.scheduled_at).total_seconds():.2f}"


@admin.register(PollLease)
class PollLeaseAdmin(ReadOnlyAdmin):
    list_display = ["shard", "holder", "expires_at", "successor", "last_tick_at"]
