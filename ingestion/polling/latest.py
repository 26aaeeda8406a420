"""The latest reading of a user, from the tail of its newest local hour file.

Web processes read it here without loading the polling engine (uvloop, leases, the tick loop).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ingestion import hourfiles
from ingestion.eagle.record_types import DEMAND
from ingestion.hourfiles import TAIL_BYTES, read_tail_records

# The last few lines of a file nearly always hold the newest demand reading.
LATEST_TAIL_BYTES = 4 * 1024


def latest_record(
    cloud_id: str, record_type: str = DEMAND, root: Path | None = None
) -> dict[str, Any] | None:
    """The newest record of a type in the user's newest local hour file (or its late parts)."""
    cloud_id = hourfiles.checked_cloud_id(cloud_id)
    for hour, _ in reversed(hourfiles.hour_dirs(root)):
        main = hourfiles.local_path(cloud_id, hour, root=root)
        if main.exists() and not hourfiles.sealed_marker(main).exists():
            # Late parts exist only beside a sealed or shipped hour: no need to list the
            # directory, which holds a file per user.
            names = [main]
        else:
            names = hourfiles.parts_on_disk(cloud_id, hour, root)
        records = [
            record for name in names if (record := _newest_in_tail(name, record_type)) is not None
        ]
        if records:
            return max(records, key=lambda record: record["meter_timestamp"])
    return None


def _newest_in_tail(path: Path, record_type: str) -> dict[str, Any] | None:
    # The last few lines nearly always hold the newest demand reading; a rarer record type may
    # need the longer tail.
    for max_bytes in (LATEST_TAIL_BYTES, TAIL_BYTES):
        records = [
            record
            for record in read_tail_records(path, max_bytes)
            if record.get("record_type") == record_type
            and isinstance(record.get("meter_timestamp"), int)
        ]
        if records:
            return max(records, key=lambda record: record["meter_timestamp"])
    return None
