"""Where hour files live: on local disk while open, and under which key in the archive.

Local:   LOG_ROOT/[Y-M-D-H]/iseif-rainforest-[cloud_id]-[Y-M-D-H].jl
Archive: ARCHIVE_PREFIX/[cloud_id]/YYYY/MM/DD/iseif-rainforest-[cloud_id]-[Y-M-D-H].jl

Hours are UTC hours of the reading's own meter time. A reading that arrives after its hour was
sealed goes to a late part of that hour: `…-[Y-M-D-H].late-1.jl`, `.late-2.jl`, and so on.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.conf import settings

HOUR = timedelta(hours=1)
HOUR_FORMAT = "%Y-%m-%d-%H"
SEALED_SUFFIX = ".sealed"
_CLOUD_ID = re.compile(r"^[0-9A-Fa-f]{1,32}\Z")
FILE_NAME = re.compile(
    r"^iseif-rainforest-(?P<cloud_id>[0-9A-Fa-f]{1,32})-(?P<hour>\d{4}-\d{2}-\d{2}-\d{2})"
    r"(?:\.late-(?P<part>[1-9]\d*))?\.jl(?P<gz>\.gz)?\Z"
)


def checked_cloud_id(cloud_id: str) -> str:
    """The cloud_id unchanged, or ValueError: it becomes part of file paths and keys."""
    if not _CLOUD_ID.match(cloud_id):
        raise ValueError(f"invalid cloud_id {cloud_id!r}: 1 to 32 hexadecimal digits")
    return cloud_id


def hour_floor(moment: datetime) -> datetime:
    """The start of the UTC hour that holds `moment`."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: hours are sliced in UTC and need an aware time")
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def hour_of_timestamp(unix_seconds: float) -> datetime:
    return hour_floor(datetime.fromtimestamp(unix_seconds, UTC))


def hour_label(hour: datetime) -> str:
    return hour_floor(hour).strftime(HOUR_FORMAT)


def parse_hour_label(label: str) -> datetime:
    return datetime.strptime(label, HOUR_FORMAT).replace(tzinfo=UTC)


def parse_utc_time(text: str) -> datetime:
    """A moment given as an hour label (YYYY-MM-DD-HH) or in ISO 8601 (2026-12-03T14,
    2026-12-03T14:00Z, 2026-12-03, ...): UTC when no offset is given. ValueError otherwise."""
    try:
        return parse_hour_label(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: give YYYY-MM-DD-HH or ISO 8601 (2026-12-03T14, "
            "2026-12-03T14:00Z, 2026-12-03)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_hour(text: str) -> datetime:
    """The UTC hour starting at `text` (an hour label or ISO 8601, see parse_utc_time)."""
    moment = parse_utc_time(text)
    if moment != hour_floor(moment):
        raise ValueError(f"{text!r} is not the start of an hour")
    return moment


def file_name(cloud_id: str, hour: datetime, part: int = 0, compressed: bool = False) -> str:
    late = f".late-{part}" if part else ""
    gz = ".gz" if compressed else ""
    return f"iseif-rainforest-{checked_cloud_id(cloud_id)}-{hour_label(hour)}{late}.jl{gz}"


def hour_dir(hour: datetime, root: Path | None = None) -> Path:
    return Path(root or settings.LOG_ROOT) / hour_label(hour)


def local_path(cloud_id: str, hour: datetime, part: int = 0, root: Path | None = None) -> Path:
    return hour_dir(hour, root) / file_name(cloud_id, hour, part)


def sealed_marker(path: Path) -> Path:
    """The marker whose presence means `path` is sealed: no writer may append to it any more."""
    return path.with_name(path.name + SEALED_SUFFIX)


def archive_key(cloud_id: str, hour: datetime, part: int = 0, compressed: bool = False) -> str:
    hour = hour_floor(hour)
    name = file_name(cloud_id, hour, part, compressed)
    prefix = f"{settings.ARCHIVE_PREFIX}/" if settings.ARCHIVE_PREFIX else ""
    return f"{prefix}{cloud_id}/{hour:%Y/%m/%d}/{name}"


def parse_file_name(name: str) -> tuple[str, datetime, int]:
    """(cloud_id, hour, part) from an hour file's name; ValueError for anything else."""
    match = FILE_NAME.match(name)
    if not match:
        raise ValueError(f"not an hour file name: {name!r}")
    return match["cloud_id"], parse_hour_label(match["hour"]), int(match["part"] or 0)
