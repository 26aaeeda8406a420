"""Users as JSON lines, one object per line, imported and exported.

    {"cloud_id": "002738", "email": "viktor.krum@durmstrang.edu", "eagle_password": "1234567",
     "total_events_logged": 2725, "first_timestamp": 1443274732.39435, "last_timestamp": 1443277732.9}

The fields have the API's names (users/fields.py); the seed's `user_email` and `user_pw` are
accepted for `email` and `eagle_password`, so the seed's files import as they are. `cloud_id`,
`email` and `eagle_password` are required; the fetch metadata is optional, and so are the other
fields (`connection_type`, `gateway_address`, `meter_mac`, `is_active`, `suspended_reason`),
which an export writes so that nothing is lost on the way back in.

Importing is idempotent: a line whose values are already stored changes nothing. Fetch metadata
only ever moves forward (the larger count, the earlier first and the later last timestamp), so
re-importing an old file never undoes what the poller has logged since.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q

from ingestion.models import FetchState
from users.cloud_ids import cloud_id_validator, normalise_cloud_id
from users.fields import FieldConflictError, with_seed_names_replaced
from users.models import EagleUser

REQUIRED_FIELDS = ("cloud_id", "email", "eagle_password")
USER_FIELDS = EagleUser.EDITABLE_FIELDS
METADATA_FIELDS = ("total_events_logged", "first_timestamp", "last_timestamp")
KNOWN_FIELDS = {"cloud_id", *USER_FIELDS, *METADATA_FIELDS}
STRING_FIELDS = (
    "email",
    "eagle_password",
    "connection_type",
    "gateway_address",
    "meter_mac",
    "suspended_reason",
)


class Outcome(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    FAILED = "failed"


@dataclass(frozen=True)
class LineResult:
    line_number: int
    outcome: Outcome
    cloud_id: str = ""
    # The fields that changed, or why the line failed. Never a password.
    detail: str = ""

    def describe(self) -> str:
        subject = f" {self.cloud_id}" if self.cloud_id else ""
        detail = f": {self.detail}" if self.detail else ""
        return f"line {self.line_number}:{subject} {self.outcome}{detail}"


@dataclass
class ImportSummary:
    dry_run: bool = False
    counts: Counter[Outcome] = field(default_factory=Counter)
    failed_lines: list[int] = field(default_factory=list)
    interrupted_at: int | None = None

    def add(self, result: LineResult) -> None:
        self.counts[result.outcome] += 1
        if result.outcome is Outcome.FAILED:
            self.failed_lines.append(result.line_number)

    @property
    def changed(self) -> int:
        return self.counts[Outcome.CREATED] + self.counts[Outcome.UPDATED]

    def describe(self) -> str:
        total = sum(self.counts.values())
        parts = ", ".join(f"{self.counts[outcome]} {outcome}" for outcome in Outcome)
        text = f"{total} lines read: {parts}."
        if self.failed_lines:
            text += f" Failed lines: {', '.join(map(str, self.failed_lines))}."
        if self.interrupted_at is not None:
            text += f" Interrupted before line {self.interrupted_at}: the rest was not read."
        if self.dry_run:
            text += " Dry run: nothing was saved."
        elif not self.changed:
            text += " Nothing changed."
        return text


class LineError(ValueError):
    """A line that cannot be imported; the message says why, without any password."""


@dataclass(frozen=True)
class ParsedLine:
    cloud_id: str
    user_changes: dict[str, Any]
    metadata: dict[str, Any]
    ignored: list[str]


def _require_number(record: dict[str, Any], name: str, integer: bool) -> None:
    value = record.get(name)
    if value is None and not integer:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (integer and not isinstance(value, int))
        or value < 0
    ):
        kind = "a whole number" if integer else "a number of unix seconds"
        raise LineError(f"{name} must be {kind}, not {type(value).__name__}")


def parse_line(raw: bytes | str) -> ParsedLine:
    """The user and metadata changes one line asks for; LineError if it is not a valid line."""
    try:
        record = json.loads(raw.strip())
    except UnicodeDecodeError:
        raise LineError("not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise LineError(f"not JSON ({exc.msg} at character {exc.pos + 1})") from None
    except RecursionError:
        raise LineError("not JSON (nested too deeply)") from None
    if not isinstance(record, dict):
        raise LineError(f"not a JSON object but a {type(record).__name__}")
    try:
        record = with_seed_names_replaced(record)
    except FieldConflictError as exc:
        raise LineError(str(exc)) from None
    missing = [name for name in REQUIRED_FIELDS if name not in record]
    if missing:
        raise LineError(f"missing field {', '.join(missing)}")
    cloud_id = record["cloud_id"]
    if not isinstance(cloud_id, str):
        raise LineError("cloud_id must be a JSON string (a number would lose its leading zeros)")
    try:
        cloud_id = normalise_cloud_id(cloud_id)
    except ValueError:
        raise LineError(f"bad cloud_id {cloud_id[:40]!r}: {cloud_id_validator.message}") from None
    for name in STRING_FIELDS:
        if name in record and not isinstance(record[name], str):
            raise LineError(f"{name} must be a string")
        if "\x00" in record.get(name, ""):
            # The database cannot store it (the API's and the admin's forms refuse it too).
            raise LineError(f"{name} holds a NUL character")
    if "is_active" in record and not isinstance(record["is_active"], bool):
        raise LineError("is_active must be true or false")
    if "total_events_logged" in record:
        _require_number(record, "total_events_logged", integer=True)
    for name in ("first_timestamp", "last_timestamp"):
        _require_number(record, name, integer=False)
    return ParsedLine(
        cloud_id=cloud_id,
        user_changes={name: record[name] for name in USER_FIELDS if name in record},
        metadata={name: record[name] for name in METADATA_FIELDS if record.get(name) is not None},
        ignored=sorted(set(record) - KNOWN_FIELDS),
    )


def merge_fetch_metadata(user: EagleUser, metadata: dict[str, Any]) -> list[str]:
    """Move the user's fetch metadata forward to the given values; returns the fields changed.

    Each field is a conditional UPDATE, so a poller writing at the same time never loses counts.
    """
    user.ensure_fetch_state()
    state = FetchState.objects.filter(user=user)
    conditions = {
        "total_events_logged": lambda v: Q(total_events_logged__lt=v),
        "first_timestamp": lambda v: Q(first_timestamp__isnull=True) | Q(first_timestamp__gt=v),
        "last_timestamp": lambda v: Q(last_timestamp__isnull=True) | Q(last_timestamp__lt=v),
    }
    return [
        name
        for name, value in metadata.items()
        if state.filter(conditions[name](value)).update(**{name: value})
    ]


def _validation_message(exc: ValidationError) -> str:
    if not hasattr(exc, "error_dict"):
        return "; ".join(exc.messages)
    return "; ".join(f"{name}: {' '.join(messages)}" for name, messages in exc.message_dict.items())


def import_line(line_number: int, raw: bytes | str) -> LineResult:
    """Import one line in its own transaction: all of it is saved, or none of it."""
    try:
        parsed = parse_line(raw)
    except LineError as exc:
        return LineResult(line_number, Outcome.FAILED, detail=str(exc))
    try:
        with transaction.atomic():
            user, created, changed = EagleUser.objects.upsert(parsed.cloud_id, parsed.user_changes)
            changed += merge_fetch_metadata(user, parsed.metadata)
    except ValidationError as exc:
        return LineResult(line_number, Outcome.FAILED, parsed.cloud_id, _validation_message(exc))
    details = []
    if changed and not created:
        details.append(", ".join(changed))
    if parsed.ignored:
        details.append(f"ignored unknown fields {', '.join(parsed.ignored)}")
    if created:
        outcome = Outcome.CREATED
    else:
        outcome = Outcome.UPDATED if changed else Outcome.UNCHANGED
    return LineResult(line_number, outcome, parsed.cloud_id, "; ".join(details))


def import_users(
    lines: Iterable[bytes | str],
    *,
    dry_run: bool = False,
    summary: ImportSummary | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Iterator[LineResult]:
    """Import JSON lines one by one, yielding what each did; blank lines are skipped.

    A bad line is reported and the others go on. With `dry_run`, everything runs inside one
    transaction that is rolled back at the end, so the reports are exactly what a real run does.
    `should_stop` is asked before each line; lines already imported stay imported.
    """
    summary = summary if summary is not None else ImportSummary()
    summary.dry_run = dry_run
    with transaction.atomic() if dry_run else nullcontext():
        try:
            for line_number, raw in enumerate(lines, start=1):
                if not raw.strip():
                    continue
                if should_stop():
                    summary.interrupted_at = line_number
                    return
                result = import_line(line_number, raw)
                summary.add(result)
                yield result
        finally:
            if dry_run:
                transaction.set_rollback(True)


def export_record(user: EagleUser, with_password: bool) -> dict[str, Any]:
    state = getattr(user, "fetch_state", None)
    record: dict[str, Any] = {"cloud_id": user.cloud_id, "email": user.email}
    if with_password:
        record["eagle_password"] = user.eagle_password
    record.update(
        total_events_logged=state.total_events_logged if state else 0,
        first_timestamp=state.first_timestamp if state else None,
        last_timestamp=state.last_timestamp if state else None,
        connection_type=user.connection_type,
        gateway_address=user.gateway_address,
        meter_mac=user.meter_mac,
        is_active=user.is_active,
        suspended_reason=user.suspended_reason,
    )
    return record


def export_users(with_passwords: bool = False) -> Iterator[str]:
    """Every user as one JSON line (newline-terminated), in cloud_id order.

    Passwords are left out unless `with_passwords` is given: without them the file can be
    shared; with them it is a full backup and must be kept as carefully as the database.
    """
    users = EagleUser.objects.select_related("fetch_state").order_by("cloud_id")
    for user in users.iterator(chunk_size=1000):
        yield json.dumps(export_record(user, with_passwords), ensure_ascii=False) + "\n"
