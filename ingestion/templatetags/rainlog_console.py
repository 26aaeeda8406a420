"""Template helpers of the operators' console: one user's console panels, numbers, states."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import template
from django.utils import timezone

from ingestion.console import dashboard
from rainlog.display import STATUS_ICONS
from users.models import EagleUser

register = template.Library()


@register.inclusion_tag("admin/rainlog/user_console.html", takes_context=True)
def user_console(context: template.Context, user: EagleUser) -> dict[str, Any]:
    """The console above a user's change form: state, actions, charts, coverage, files."""
    request = context["request"]
    now = timezone.now()
    cells = dashboard.coverage_strip(user, now)
    return {
        "request": request,
        "csrf_token": context.get("csrf_token"),
        "user_obj": user,
        "state": dashboard.user_state(user),
        "can_change": request.user.has_perm("users.change_eagleuser"),
        "today": now.date(),
        "coverage_days": dashboard.coverage_days(cells),
        "coverage_totals": [
            (state, dashboard.COVERAGE_LABELS[state], count)
            for state, count in dashboard.coverage_totals(cells).items()
        ],
        "coverage_hours": range(0, 24, 3),
        "incidents": dashboard.recent_incidents(user),
        "hour_files": dashboard.recent_hour_files(user),
    }


@register.inclusion_tag("admin/rainlog/status.html")
def status(level: str, text: str = "") -> dict[str, str]:
    """An icon and a word for ok / warning / problem, then the text."""
    icon, word = STATUS_ICONS[level]
    return {"level": level, "icon": f"admin/img/{icon}", "word": word, "text": text}


@register.filter
def thousands(value: int | float | None) -> str:
    """12345 -> "12,345"; None -> "-"."""
    if value is None:
        return "-"
    return f"{value:,.0f}"


@register.filter
def percent(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1%}"


@register.filter
def duration(value: timedelta | None) -> str:
    """A short age: 45 s, 12 min, 3 h 20 min, 2 d 4 h."""
    if value is None:
        return "-"
    seconds = max(0, int(value.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"
