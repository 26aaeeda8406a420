"""A fleet polled across an hour boundary, rotated and exported to the Parquet dataset, and the
same readings read back from the JSON-lines archive to compare with."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import time_machine

from ingestion import parquet_export
from ingestion.archive import rotation, store
from ingestion.models import FetchState, HourFile
from tests.polling import polling_run

# Polling starts a minute before 10:00 and runs past it.
BOUNDARY = datetime(2026, 9, 21, 10, tzinfo=UTC)
POLL_START = BOUNDARY.timestamp() - 60
AFTER_CLOSE = BOUNDARY + timedelta(hours=1, minutes=5)


def poll_across_the_hour(settings: Any, users: int = 4, ticks: int = 25) -> None:
    """`ticks` 6-second ticks of demand (summation and price every 30 s) from 09:59."""
    settings.INGEST_EXTRA_POLL_SECONDS = 30
    with polling_run(settings, users=users, start=POLL_START) as run:
        FetchState.objects.update(extra_record_types=["summation", "price"])
        run.restart()
        for _ in range(ticks):
            run.tick()


def rotate_and_export(
    moment: datetime, conflicts: int = 0, **options: Any
) -> parquet_export.ExportReport:
    with time_machine.travel(moment, tick=False):
        assert rotation.rotate().conflicts == conflicts
        return parquet_export.export(**options)


def archived_records() -> Iterator[dict[str, Any]]:
    """Every record of every hour file in the manifest, read back from the archive."""
    archive = store.open_archive()
    for key, compressed in HourFile.objects.values_list("key", "compressed"):
        with archive.open(key) as stream:
            data = stream.read()
        for line in (gzip.decompress(data) if compressed else data).splitlines():
            yield orjson.loads(line)
