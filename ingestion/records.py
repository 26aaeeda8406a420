"""The record format: one JSON object per meter reading, one per line in the hour files.

Documented in docs/record-format.md and described by docs/record-format.schema.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from enum import StrEnum
from typing import Any

import orjson

FORMAT_VERSION = 1


class Source(StrEnum):
    CLOUD = "cloud"
    EAGLE200 = "eagle200"
    LEGACY = "legacy"
    PUSH = "push"
    SIMULATOR = "simulator"


class FailureClass(StrEnum):
    """Why a fetch produced no new reading (or, one class, why an hour's readings are missing);
    each value is something an operator can act on."""

    BAD_CREDENTIALS = "bad_credentials"
    UNKNOWN_CLOUD_ID = "unknown_cloud_id"
    GATEWAY_UNREACHABLE = "gateway_unreachable"
    METER_NOT_JOINED = "meter_not_joined"
    TIMEOUT = "timeout"
    HTTP_ERROR = "http_error"
    MALFORMED_REPLY = "malformed_reply"
    SUSPICIOUS_READING = "suspicious_reading"
    STALE_READING = "stale_reading"
    # Not a fetch: an hour file gone from the local disk before it reached the archive.
    HOUR_FILE_MISSING = "hour_file_missing"
    # Not a fetch either: a poller that cannot poll every due user of its shard within a tick.
    OVER_CAPACITY = "over_capacity"

    @property
    def is_fetch_failure(self) -> bool:
        """Whether a fetch produces it (and a working fetch resolves its incident)."""
        return self not in (FailureClass.HOUR_FILE_MISSING, FailureClass.OVER_CAPACITY)

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

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Reading:
        """The reading a record of `to_record` holds: its line is the same again."""
        values = {key: value for key, value in record.items() if key not in META_FIELDS}
        return cls(
            cloud_id=record["cloud_id"],
            record_type=record["record_type"],
            meter_timestamp=record["meter_timestamp"],
            received_at=datetime.fromisoformat(record["received_at"]),
            source=record["source"],
            values=values,
            raw=record["raw"],
        )


# Record keys that describe a reading rather than being one of its measured values.
META_FIELDS = (
    "format_version",
    "record_type",
    "cloud_id",
    "meter_timestamp",
    "meter_time",
    "received_at",
    "source",
    "raw",
)


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z suffix, to the millisecond when there is a fraction."""
    moment = moment.astimezone(UTC)
    # isoformat() (in C, a third of strftime's cost: it runs twice for every line written)
    # truncates to the millisecond as the format always did; "+00:00" becomes "Z".
    text = moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")
    return text[:-6] + "Z"


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
