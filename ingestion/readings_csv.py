"""THE CSV layout of readings, shared by the API (`format=csv`) and the console's export.

One header, the same for every request, every record type and every `tz` (docs/record-format.md,
"CSV"):

    cloud_id, record_type, meter_timestamp, meter_time, received_at, source,
    <every value any record type carries, in registration order>, other_values, raw

A value column is empty where the record's type has no such value. `other_values` holds, as a
JSON object, only the values of a record that have no column of their own (a newer format's,
say), so nothing is lost and nothing is written twice; `raw` is the meter's fields as JSON.
`meter_time` and `received_at` are ISO 8601 instants: in UTC (`Z`) by default, or with the UTC
offset of the zone asked for (`+01:00`), which names the same instant; `meter_timestamp` is
always Unix seconds.

Every cell goes through `cell()`, the one place that turns a value into CSV text; a text cell
that a spreadsheet would run as a formula gets a leading `'` there (`without_formula`).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, tzinfo
from typing import Any

import orjson

from ingestion.eagle.record_types import RECORD_TYPES
from ingestion.records import iso_local

META_COLUMNS = ("cloud_id", "record_type", "meter_timestamp", "meter_time", "received_at", "source")
VALUE_COLUMNS = tuple(
    dict.fromkeys(name for kind in RECORD_TYPES.values() for name in kind.value_schema)
)
COLUMNS = (*META_COLUMNS, *VALUE_COLUMNS, "other_values", "raw")
# Record keys that are neither a column nor a value (the version of the line's format).
NOT_VALUES = frozenset({*META_COLUMNS, "raw", "format_version"})


class _Line:
    """A file-like object whose write returns what it was given: csv.writer making one line."""

    def write(self, text: str) -> str:
        return text


_writer = csv.writer(_Line(), lineterminator="\n")


def cell(value: Any) -> str:
    """The CSV text of one value: empty for none, JSON for objects, else the value as text."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode() if value else ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return without_formula(str(value))


# A spreadsheet takes a cell starting with one of these for a formula (OWASP, "CSV Injection").
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def without_formula(text: str) -> str:
    """Text a spreadsheet shows as text: a leading quote before a formula trigger. Numbers (a
    negative demand) stay numbers."""
    if not text.startswith(FORMULA_TRIGGERS) or _is_number(text):
        return text
    return "'" + text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip() == text


def _in_zone(iso_time: Any, tz: tzinfo | None) -> Any:
    if tz is None or not isinstance(iso_time, str):
        return iso_time
    try:
        return iso_local(datetime.fromisoformat(iso_time), tz)
    except ValueError:
        return iso_time


def header_line() -> str:
    return _writer.writerow(COLUMNS)


def record_line(record: dict[str, Any], tz: tzinfo | None = None) -> str:
    """One reading as one CSV line (newline included), in the columns of COLUMNS."""
    other = {name: value for name, value in record.items() if name not in NOT_VALUES}
    values = [other.pop(name, None) for name in VALUE_COLUMNS]
    meter_time = record.get("meter_time")
    if tz is not None and isinstance(record.get("meter_timestamp"), int | float):
        meter_time = iso_local(datetime.fromtimestamp(record["meter_timestamp"], UTC), tz)
    row = [
        record.get("cloud_id"),
        record.get("record_type"),
        record.get("meter_timestamp"),
        meter_time,
        _in_zone(record.get("received_at"), tz),
        record.get("source"),
        *values,
        other,
        record.get("raw") or {},
    ]
    return _writer.writerow([cell(value) for value in row])


def csv_lines(records: Iterable[dict[str, Any]], tz: tzinfo | None = None) -> Iterator[str]:
    """The header line, then one line per record."""
    yield header_line()
    for record in records:
        yield record_line(record, tz)
