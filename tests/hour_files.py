"""Test data on disk and in the archive: readings written by the real writer, hours shipped.

`ship_hour` stores an hour file under its archive key the way the rotation does (gzip as an
explicit `.jl.gz` object with Content-Type application/gzip and no Content-Encoding) and marks its
manifest row verified, so retrieval can be tested against any mix of local and archived hours.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from django.utils import timezone

from ingestion import hourfiles
from ingestion.archive import store
from ingestion.hourfiles import HourFileWriter, iter_records
from ingestion.models import HourFile, HourFileState
from ingestion.records import Reading, Source

RECEIVED_DELAY = timedelta(seconds=1)


def demand_readings(
    cloud_id: str,
    start: datetime,
    count: int,
    step_seconds: int = 6,
    demand_kw: Callable[[int], float] = lambda n: 1.0 + (n % 7) / 4,
) -> list[Reading]:
    """`count` demand readings every `step_seconds` from `start`; the n-th has demand_kw(n)."""
    readings = []
    for n in range(count):
        moment = start + timedelta(seconds=n * step_seconds)
        readings.append(
            Reading(
                cloud_id=cloud_id,
                record_type="demand",
                meter_timestamp=int(moment.timestamp()),
                received_at=moment + RECEIVED_DELAY,
                source=Source.SIMULATOR,
                values={"demand_kw": round(demand_kw(n), 3)},
                raw={"Demand": f"0x{n:06x}"},
            )
        )
    return readings


def write(readings: Iterable[Reading]) -> None:
    with HourFileWriter() as writer:
        result = writer.append(readings)
    assert not result.unwritten, result.errors


def manifest_row(
    cloud_id: str, hour: datetime, part: int = 0, state: str = HourFileState.OPEN
) -> HourFile:
    row, _ = HourFile.objects.update_or_create(
        cloud_id=cloud_id,
        hour=hour,
        part=part,
        defaults={
            "state": state,
            "local_path": str(hourfiles.local_path(cloud_id, hour, part)),
            "key": hourfiles.archive_key(cloud_id, hour, part),
        },
    )
    return row


def ship_hour(
    cloud_id: str,
    hour: datetime,
    part: int = 0,
    compressed: bool = False,
    delete_local: bool = True,
) -> HourFile:
    """Archive one local hour file at its key and record it verified in the manifest."""
    local = hourfiles.local_path(cloud_id, hour, part)
    data = local.read_bytes()
    body = gzip.compress(data) if compressed else data
    key = hourfiles.archive_key(cloud_id, hour, part, compressed)
    sha256 = hashlib.sha256(body).hexdigest()
    store.open_archive().create(key, body, len(body), sha256, store.content_type(compressed))
    records = list(iter_records(local))
    row = manifest_row(cloud_id, hour, part, HourFileState.VERIFIED)
    row.key = key
    row.compressed = compressed
    row.size = len(body)
    row.sha256 = sha256
    row.line_count = len(records)
    row.first_reading_at = datetime.fromtimestamp(records[0]["meter_timestamp"], UTC)
    row.last_reading_at = datetime.fromtimestamp(records[-1]["meter_timestamp"], UTC)
    row.verified_at = timezone.now()
    if delete_local:
        local.unlink()
        row.local_deleted_at = timezone.now()
    row.save()
    return row
