"""The operators' console inside the admin: chart data, per-user actions, labelled job schedules.

Views here are thin: they parse the request, call one function of `ingestion` or `users`, and
answer with JSON, a CSV download or a message on the user's page. The pages themselves are
templates (`admin/rainlog/dashboard.html`, `admin/users/eagleuser/change_form.html`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django_q.admin import ScheduleAdmin
from django_q.models import Schedule

from ingestion import readings_csv, retrieval
from ingestion.archive import rotation
from ingestion.console import dashboard
from ingestion.eagle.client import fetch_now
from ingestion.records import FetchFailure, iso_utc
from users.credentials import check_credentials
from users.models import EagleUser

# The longest export one click may ask for; longer ranges belong to the readings API.
MAX_EXPORT_DAYS = 31
DAY = timedelta(days=1)


def urls(site: admin.AdminSite) -> list[URLPattern]:
    return [
        path("console/fleet.json", site.admin_view(fleet_series), name="console_fleet"),
        path(
            "console/users/<int:pk>/demand.json",
            site.admin_view(user_demand),
            name="console_user_demand",
        ),
        path(
            "console/users/<int:pk>/readings.csv",
            site.admin_view(user_export),
            name="console_user_export",
        ),
        path(
            "console/users/<int:pk>/<slug:action>/",
            site.admin_view(user_action),
            name="console_user_action",
        ),
    ]


def _require(request: HttpRequest, permission: str) -> None:
    if not request.user.has_perm(permission):
        raise PermissionDenied


def _parse_day(text: str | None, default: date) -> date:
    """A YYYY-MM-DD day; ValueError with a message for anything else."""
    if not text:
        return default
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a day (YYYY-MM-DD)") from None
    if not retrieval.EARLIEST.date() <= day < retrieval.LATEST.date():
        raise ValueError(f"{text!r} is outside 2000-01-01 to 2099-12-31")
    return day


# --- Chart data ---------------------------------------------------------------------------------


def _window(request: HttpRequest) -> tuple[str, dashboard.Window]:
    """The chart window asked for (`?window=1h|6h|24h|7d`); ValueError for anything else."""
    name = request.GET.get("window") or dashboard.DEFAULT_WINDOW
    if name not in dashboard.WINDOWS:
        raise ValueError(f"window {name!r}: choose one of {', '.join(dashboard.WINDOWS)}")
    return name, dashboard.WINDOWS[name]


@require_GET
def fleet_series(request: HttpRequest) -> JsonResponse:
    """Readings and late ticks, and estimated fleet demand, over a window ending now."""
    _require(request, "ingestion.view_tick")
    try:
        name, window = _window(request)
    except ValueError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    now = timezone.now()
    ticks = dashboard.tick_series(now, window)
    demand = dashboard.fleet_demand(now, window)
    return JsonResponse(
        {
            "generated_at": iso_utc(now),
            "window": name,
            "start": iso_utc(now - window.length),
            "end": iso_utc(now),
            "ticks": {
                "t": ticks.times,
                "readings": ticks.readings,
                "late_ticks": ticks.late_ticks,
                "bucket_seconds": ticks.bucket_seconds,
            },
            "demand": {
                "t": demand.times,
                "fleet_kw": demand.fleet_kw,
                "measured": demand.measured,
                "bucket_seconds": demand.bucket_seconds,
                "households_sampled": demand.households_sampled,
                "households_logging": demand.households_logging,
            },
        }
    )


@require_GET
def user_demand(request: HttpRequest, pk: int) -> JsonResponse:
    """One user's demand readings over a window ending now (`?window=`, default 24h), or over one
    UTC day (`?day=YYYY-MM-DD`); null points where readings are missing (gaps)."""
    _require(request, "users.view_eagleuser")
    user = get_object_or_404(EagleUser, pk=pk)
    now = timezone.now()
    try:
        if request.GET.get("day"):
            day = _parse_day(request.GET["day"], now.date())
            start, end, window = dashboard.day_start(day), dashboard.day_start(day) + DAY, None
        else:
            window, chosen = _window(request)
            start, end = now - chosen.length, now
    except ValueError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    try:
        points = dashboard.user_demand(user, start, end)
    except retrieval.ArchiveReadError as exc:
        return JsonResponse({"error": str(exc)}, status=503)
    return JsonResponse(
        {
            "cloud_id": user.cloud_id,
            "window": window,
            "day": start.date().isoformat() if window is None else None,
            "start": iso_utc(start),
            "end": iso_utc(end),
            "t": [t for t, _ in points],
            "demand_kw": [kw for _, kw in points],
        }
    )


# --- Export -------------------------------------------------------------------------------------


@require_GET
def user_export(request: HttpRequest, pk: int) -> HttpResponseBase:
    """The user's readings of whole UTC days `?start=` to `?end=` (inclusive) as a CSV download."""
    _require(request, "users.view_eagleuser")
    user = get_object_or_404(EagleUser, pk=pk)
    today = timezone.now().date()
    try:
        first = _parse_day(request.GET.get("start"), today)
        last = _parse_day(request.GET.get("end"), first)
    except ValueError as exc:
        return HttpResponseBadRequest(str(exc))
    if last < first:
        return HttpResponseBadRequest("The last day comes before the first.")
    if (last - first).days >= MAX_EXPORT_DAYS:
        return HttpResponseBadRequest(
            f"At most {MAX_EXPORT_DAYS} days per export: use the readings API for longer ranges."
        )
    start, end = dashboard.day_start(first), dashboard.day_start(last + timedelta(days=1))
    records = retrieval.iter_readings(user.cloud_id, start, end)
    response = StreamingHttpResponse(readings_csv.csv_lines(records), content_type="text/csv")
    name = f"rainlog-{user.cloud_id}-{first.isoformat()}-{last.isoformat()}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


# --- Actions ------------------------------------------------------------------------------------

Outcome = tuple[int, str]


def _check_credentials(request: HttpRequest, user: EagleUser) -> Outcome:
    check = check_credentials(user)
    return (messages.SUCCESS if check.ok else messages.WARNING), check.describe()


def _fetch_now(request: HttpRequest, user: EagleUser) -> Outcome:
    result = fetch_now(user)
    if isinstance(result, FetchFailure):
        return messages.WARNING, (
            f"{user.cloud_id}: fetch failed: {result.failure_class.label}: {result.message}"
        )
    values = ", ".join(f"{name} {value}" for name, value in result.values.items())
    age = (timezone.now() - result.meter_time).total_seconds()
    return messages.SUCCESS, (
        f"{user.cloud_id}: fetched {result.record_type} {values} "
        f"(meter time {iso_utc(result.meter_time)}, {age:.0f} s ago). "
        "Shown only: the poller records readings."
    )


def _suspend(request: HttpRequest, user: EagleUser) -> Outcome:
    if not user.is_active:
        return messages.INFO, f"{user.cloud_id} was already suspended."
    reason = request.POST.get("reason", "").strip()
    user.suspend(reason or f"Suspended by {request.user.get_username()} in the console.")
    return messages.SUCCESS, f"{user.cloud_id} suspended: it is no longer polled."


def _resume(request: HttpRequest, user: EagleUser) -> Outcome:
    if user.is_active:
        return messages.INFO, f"{user.cloud_id} was already active."
    user.activate()
    return messages.SUCCESS, f"{user.cloud_id} resumed: it is polled again from the next minute."


def _rotate_now(request: HttpRequest, user: EagleUser) -> Outcome:
    report = rotation.rotate(cloud_id=user.cloud_id)
    return (messages.SUCCESS if report.ok else messages.WARNING), (
        f"{user.cloud_id}: rotation: {report.summary()}"
    )


ACTIONS: dict[str, Callable[[HttpRequest, EagleUser], Outcome]] = {
    "check-credentials": _check_credentials,
    "fetch-now": _fetch_now,
    "suspend": _suspend,
    "resume": _resume,
    "rotate-now": _rotate_now,
}


@require_POST
def user_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    """Run one console action on one user, then back to its page with the outcome as a message."""
    _require(request, "users.change_eagleuser")
    run = ACTIONS.get(action)
    if run is None:
        return HttpResponseBadRequest(f"unknown action {action!r}")
    user = get_object_or_404(EagleUser, pk=pk)
    level, message = run(request, user)
    messages.add_message(request, level, message)
    return HttpResponseRedirect(reverse("admin:users_eagleuser_change", args=[user.pk]))


# --- django-q2 schedules, with what each one is for ---------------------------------------------


class LabelledScheduleAdmin(ScheduleAdmin):
    list_display = ("id", "name", "role", *ScheduleAdmin.list_display[2:])

    @admin.display(description="role")
    def role(self, schedule: Schedule) -> str:
        return dashboard.schedule_role(schedule) or "-"


admin.site.unregister(Schedule)
admin.site.register(Schedule, LabelledScheduleAdmin)
