"""Option values of the ingestion commands, parsed where a bad one gives a one-line CommandError
(an exception raised by an argparse `type=` function escapes Django as a traceback)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from django.core.management.base import CommandError


def time_option(name: str, text: str | None, parse: Callable[[str], datetime]) -> datetime | None:
    """`parse(text)`, None when the option was not given; CommandError naming the option."""
    if text is None:
        return None
    try:
        return parse(text)
    except ValueError as exc:
        raise CommandError(f"{name}: {exc}") from None
