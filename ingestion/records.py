"""The record format: one JSON object per meter reading, one per line in the hour files.

Documented in docs/record-format.md and described by docs/record-format.schema.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from enum import StrEnum
from typing import Annotated, Any

import msgspec
import orjson

FORMAT_VERSION = 1


class Source(StrEnum):
    CLOUD = "cloud"
    EAGLE200 = "eagle200"
    LEGACY = "legacy"
    PUSH = "push"
    SIMULATOR = "simulator"


class FailureClass(StrEnum):
    """Why a fetch produced no new reading; each value is something an operator can act on."""

    BAD_CREDENTIALS = "bad_credentials"
    UNKNOWN_CLOUD_ID = "unknown_cloud_id"
    GATEWAY_UNREACHABLE = "gateway_unreachable"
    METER_NOT_JOINED = "meter_not_joined"
    TIMEOUT = "timeout"
    HTTP_ERROR = "http_error"
    MALFORMED_REPLY = "malformed_reply"
    SUSPICIOUS_READING = "suspicious_reading"
    STALE_READING = "stale_reading"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ").capitalize()


@dataclass(frozen=True, slots=True)
class FetchFailure:
    """A classified failure: what went wrong, a human message, and the reply that caused it."""

    failure_class: FailureClass
    message: str
    raw_reply: str = ""
    http_status: int | None = None
    # The decoded reading a STALE_READING or SUSPICIOUS_READING failure refused, for display.
    reading: Reading | None = None


@dataclass(frozen=True, slots=True)
class Reading:
    """One decoded meter reading of one record type (demand, summation, price, …)."""

    cloud_id: str
    record_type: str
    meter_timestamp: int
    received_at: datetime
    source: str
    values: dict[str, Any]
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def meter_time(self) -> datetime:
        return datetime.fromtimestamp(self.meter_timestamp, UTC)

    @property
    def dedup_key(self) -> tuple[str, str, int]:
        return (self.cloud_id, self.record_type, self.meter_timestamp)

    def to_record(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "record_type": self.record_type,
            "cloud_id": self.cloud_id,
            "meter_timestamp": self.meter_timestamp,
            "meter_time": iso_utc(self.meter_time),
            "received_at": iso_utc(self.received_at),
            "source": self.source,
            **self.values,
            "raw": self.raw,
        }

    def to_line(self) -> bytes:
        """The record as one newline-terminated JSON line."""
        return orjson.dumps(self.to_record()) + b"\n"


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z suffix, to the millisecond when there is a fraction."""
    moment = moment.astimezone(UTC)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_local(moment: datetime, tz: tzinfo) -> str:
    """ISO 8601 with the UTC offset `tz` has at that instant, to the millisecond when there is a
    fraction: each time converted on its own, so it is right on both sides of a DST change."""
    local = moment.astimezone(tz)
    return local.isoformat(timespec="milliseconds" if local.microsecond else "seconds")


def parse_line(line: bytes | str) -> dict[str, Any]:
    """One record from one line; raises ValueError on anything that is not a JSON object."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    return record


# --- Typed readings ----------------------------------------------------------------------------

# The typed columns of a reading, in order, as the columnar stores keep it (the SQL readings store's
# `readings` table; the Parquet export): meter_time in seconds, received_at in milliseconds.
TYPED_COLUMNS = (
    "cloud_id",
    "record_type",
    "meter_time",
    "received_at",
    "source",
    "demand_kw",
    "delivered_kwh",
    "received_kwh",
    "price",
    "currency",
    "tier",
    "format_version",
    "raw",
)
# The value fields that have a typed column of their own.
TYPED_VALUE_FIELDS = ("demand_kw", "delivered_kwh", "received_kwh", "price", "currency", "tier")


class TypedReading(msgspec.Struct, frozen=True):
    """One record with its fields typed: the row of TYPED_COLUMNS.

    `raw` stays the JSON text of the line's raw object, as written, so a store keeps it without
    parsing and re-serialising it. Value fields a record type does not carry are None; value
    fields with no typed column are not kept (the hour files keep everything).
    """

    cloud_id: str
    record_type: str
    meter_timestamp: Annotated[int, msgspec.Meta(ge=0, lt=2**40)]
    received_at: datetime
    source: str
    format_version: Annotated[int, msgspec.Meta(ge=0, lt=2**31)]
    demand_kw: float | None = None
    delivered_kwh: float | None = None
    received_kwh: float | None = None
    price: float | None = None
    currency: str | None = None
    tier: Annotated[int, msgspec.Meta(ge=0, lt=2**31)] | None = None
    raw: msgspec.Raw = msgspec.Raw(b"{}")

    @property
    def meter_time(self) -> datetime:
        return datetime.fromtimestamp(self.meter_timestamp, UTC)

    @property
    def received_at_ms(self) -> int:
        """received_at as Unix milliseconds (records carry milliseconds, no finer)."""
        return round(self.received_at.timestamp() * 1000)


_typed_decoder = msgspec.json.Decoder(TypedReading)
_typed_list_decoder = msgspec.json.Decoder(list[TypedReading])


def typed_reading(line: bytes) -> TypedReading:
    """One line of an hour file as a typed reading; ValueError if it is not a record whose fields
    have the types of the record format (a torn line, a value of the wrong type)."""
    try:
        return _typed_decoder.decode(line)
    except msgspec.DecodeError as exc:
        raise ValueError(str(exc)) from None


@dataclass(slots=True)
class TypedLines:
    """The typed readings of an hour file's content, and its lines that are not typed records as
    (line number, error)."""

    readings: list[TypedReading]
    malformed: list[tuple[int, str]] = field(default_factory=list)


def typed_readings(data: bytes) -> TypedLines:
    """Every line of an hour file's content (JSON lines) as typed readings, in file order.

    The lines are decoded as one JSON array, about twice as fast as line by line; only content
    with a bad line is decoded again line by line, to keep every good one.
    """
    lines = [line for line in data.splitlines() if line.strip()]
    try:
        readings = _typed_list_decoder.decode(b"[" + b",".join(lines) + b"]")
    except msgspec.DecodeError:
        pass
    else:
        # A line holding two objects (or two lines one) would shift the count: check it.
        if len(readings) == len(lines):
            return TypedLines(readings)
    result = TypedLines([])
    for line_number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            result.readings.append(typed_reading(line))
        except ValueError as exc:
            result.malformed.append((line_number, str(exc)))
    return result
