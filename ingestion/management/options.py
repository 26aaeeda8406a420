"""Option values of the ingestion commands, parsed where a bad one gives a one-line CommandError
(an exception raised by an argparse `type=` function escapes Django as a traceback)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.core.management.base import CommandError, CommandParser

from ingestion import hourfiles


def time_option(name: str, text: str | None, parse: Callable[[str], datetime]) -> datetime | None:
    """`parse(text)`, None when the option was not given; CommandError naming the option."""
    if text is None:
        return None
    try:
        return parse(text)
    except ValueError as exc:
        raise CommandError(f"{name}: {exc}") from None


def add_hour_range_arguments(parser: CommandParser) -> None:
    """--since and --until: the hours a command works on (see `hour_range`)."""
    parser.add_argument(
        "--since",
        help="from this time on (included): YYYY-MM-DD-HH or ISO 8601, UTC unless an offset "
        "is given (default: every hour)",
    )
    parser.add_argument("--until", help="up to this time (excluded), in the same forms")


def hour_range(options: dict[str, Any]) -> tuple[datetime | None, datetime | None]:
    """(since, until) of `add_hour_range_arguments`; CommandError for a bad or empty range."""
    since = time_option("--since", options["since"], hourfiles.parse_utc_time)
    until = time_option("--until", options["until"], hourfiles.parse_utc_time)
    if since and until and until <= since:
        raise CommandError("--until must be after --since.")
    return since, until
