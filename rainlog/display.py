"""How the admin shows statuses, times and sizes, the same on every page and list."""

from __future__ import annotations

from datetime import UTC, datetime

from django.template.defaultfilters import filesizeformat
from django.templatetags.static import static
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.safestring import SafeString

EMPTY = "-"
# A status is the admin's own icon and a word, so that colour is never the only cue.
STATUS_ICONS = {
    "ok": ("icon-yes.svg", "OK"),
    "warning": ("icon-alert.svg", "Check"),
    "problem": ("icon-no.svg", "Problem"),
}


def status(level: str, word: str | None = None) -> SafeString:
    """The icon of `level` (ok, warning, problem) followed by `word` (by default the level's)."""
    icon, default = STATUS_ICONS[level]
    return format_html(
        '<span class="rl-status rl-{}"><img src="{}" alt="" width="13" height="13"> {}</span>',
        level,
        static(f"admin/img/{icon}"),
        word or default,
    )


def moment(value: datetime | float | None) -> str:
    """A time as the admin writes it (rainlog/formats: 2026-12-03 15:59:00 UTC); unix seconds too."""
    if value is None:
        return EMPTY
    if not isinstance(value, datetime):
        value = datetime.fromtimestamp(value, UTC)
    return date_format(value.astimezone(UTC), "DATETIME_FORMAT")


def size(value: int | None) -> str:
    """Bytes for people: 1.2 MB."""
    return EMPTY if value is None else str(filesizeformat(value)).replace("\xa0", " ")
