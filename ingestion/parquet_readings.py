"""A household's readings as one Arrow table (GET /api/users/{cloud_id}/readings?format=parquet):
from the Parquet dataset for the hours it holds as the manifest has them now, from the JSON-lines
path (ingestion.retrieval) for the others, with the same rows either way."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pyarrow as pa

from ingestion import hourfiles, parquet, parquet_query, retrieval
from ingestion.eagle.record_types import RECORD_TYPES
from ingestion.models import DatasetHour, DatasetHourState, HourFile, HourFileState


def dataset_hours(cloud_id: str, start: datetime, end: datetime) -> set[datetime]:
    """The hours overlapping [start, end) whose published Parquet holds `cloud_id`'s readings as
    the manifest has them now: exported, and every hour file of the household there verified
    before the version's newest source. A late part verified since (not exported yet), a part
    not shipped yet, or a purge (which makes the hour pending) leaves the hour out."""
    first = hourfiles.hour_floor(start)
    newest_source = dict(
        DatasetHour.objects.filter(
            hour__gte=first, hour__lt=end, state=DatasetHourState.EXPORTED
        ).values_list("hour", "source_verified_at")
    )
    files = HourFile.objects.filter(cloud_id=cloud_id, hour__gte=first, hour__lt=end)
    for hour, state, verified_at in files.values_list("hour", "state", "verified_at"):
        newest = newest_source.get(hour)
        if hour in newest_source and (
            state != HourFileState.VERIFIED
            or verified_at is None
            or newest is None
            or verified_at > newest
        ):
            del newest_source[hour]
    return set(newest_source)


def household_readings(
    cloud_id: str, start: datetime, end: datetime, record_type: str | None = None
) -> pa.Table:
    """`cloud_id`'s readings with meter time in [start, end) (of one record type if given) as
    one table in `parquet.readings_schema`, in meter-time order: from the dataset for the hours
    it holds as they are (`dataset_hours`), from the JSON-lines path (`retrieval.iter_hours`)
    for the others. Both give the same rows.

    Raises retrieval.ArchiveReadError when an hour read from JSON lines has no readable copy."""
    covered = dataset_hours(cloud_id, start, end)
    kinds = [record_type] if record_type else sorted(RECORD_TYPES)
    tables: list[tuple[str, pa.Table]] = []
    for low, high, in_dataset in _runs(start, end, covered):
        if in_dataset:
            tables += [
                (kind, parquet_query.household_rows(kind, cloud_id, low, high))
                for kind in kinds
                if kind in RECORD_TYPES
            ]
        else:
            hours = retrieval.iter_hours(cloud_id, low, high, record_type)
            tables += parquet.typed_tables(record for records in hours for record in records)
    return parquet.readings_table_of(tables)


def _runs(
    start: datetime, end: datetime, covered: set[datetime]
) -> Iterator[tuple[datetime, datetime, bool]]:
    """[start, end) cut at hour boundaries into runs of hours all in `covered` or all not:
    (low, high, covered)."""
    low = start
    hour = hourfiles.hour_floor(start)
    while hour < end:
        following = hour + hourfiles.HOUR
        if following >= end or (following in covered) != (hour in covered):
            high = min(following, end)
            yield low, high, hour in covered
            low = high
        hour = following
