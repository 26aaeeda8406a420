"""Reading a user's records back over any time range, their aggregates and coverage, and the
bytes of single hour files.

Where an hour's records are
    Every hour file (and late part) has a manifest row (`HourFile`) once the rotation knows it, and
    a computed local path (`hourfiles.local_path`) while it is on disk. An hour's copies are found from
    those two alone, never by listing the bucket: the local files of the hour (probing part 0, 1, …
    while a file or its sealed marker exists) and, for every verified manifest row, its archived
    object at `HourFile.key` (gzip when `HourFile.compressed`). During the short window in which an
    hour is both on disk and verified in the archive, both copies are read; records of all copies
    and parts are merged and deduplicated by (record_type, meter_timestamp), the first copy kept.

Order and memory
    Records come out in meter-time order, hour by hour. Only one user-hour (about 600 readings at a
    6-second cadence) is held per hour being read, plus a few hours fetched ahead from the archive
    in threads (`PREFETCH_HOURS`), so memory stays bounded whatever the range.

Aggregates (`aggregate_demand`)
    Per interval: number of demand readings, their arithmetic mean, minimum and maximum, and an
    energy estimate in kWh by *trapezoid* integration of demand over time. Consecutive readings
    further apart than the gap threshold are not bridged: energy covers only `covered_seconds` of
    the interval. Segments that cross an interval boundary are split there (demand linearly
    interpolated), and the readings just outside the range are used to integrate up to its edges,
    so the energies of adjacent intervals add up to the energy of their union. Export (negative
    demand) counts negative: the energy is net.

Coverage (`coverage`)
    Per UTC hour we report `expected` = the readings expected in the part of the hour that is in
    range and in the past (`ingestion.expected`, the one definition shared with the console and
    /api/status/: one per meter period, from when the user was added and polling began, never
    while it was paused), `present` = distinct meter timestamps found, and `covered_seconds` = the
    expected time not inside a gap. A gap is a stretch of expected time longer than the threshold
    (default 60 s) without any reading, between consecutive readings or between the edge of
    expected time and the nearest reading; each gap lists the failure classes of the incidents
    whose span [opened_at, resolved_at or now] overlaps it.
"""

from __future__ import annotations

import heapq
import logging
import math
import os
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from itertools import groupby
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from ingestion import expected, hourfiles, readings_store
from ingestion.archive.store import (
    Archive,
    ArchiveError,
    content_type,
    open_archive,
    read_hour_file,
)
from ingestion.eagle.record_types import DEMAND
from ingestion.models import HourFile, HourFileState, Incident
from ingestion.records import META_FIELDS, parse_line
from users.models import EagleUser

logger = logging.getLogger(__name__)

DEMAND_FIELD = "demand_kw"
DEFAULT_GAP_SECONDS = 60
# The instants a range may start or end at (API parameters, console days): wider than any meter's
# life, and far enough from year 1 and 9999 that every computation on them stays a datetime.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
# Archive objects fetched ahead of the one being consumed: hides S3 latency, bounds memory.
PREFETCH_HOURS = 4
INTERVALS = {
    "1m": timedelta(minutes=1),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}

Record = dict[str, Any]


class ArchiveReadError(Exception):
    """An archived hour file that the manifest says is verified could not be read."""


# --- Finding an hour's copies ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PartCopies:
    """Where one hour file (or late part) can be read: on disk, in the archive, or both."""

    part: int
    local_path: Path | None
    key: str | None
    compressed: bool


@dataclass(frozen=True, slots=True)
class HourPlan:
    cloud_id: str
    hour: datetime
    parts: tuple[PartCopies, ...]


def _archived_key(row: HourFile | None) -> tuple[str | None, bool]:
    if row is None or row.state != HourFileState.VERIFIED or not row.key:
        return None, False
    # Dot or empty segments would name another object once the S3 client normalises the URL.
    if any(segment in ("", ".", "..") for segment in row.key.split("/")):
        return None, False
    return row.key, row.compressed or row.key.endswith(".gz")


def _plan_hour(cloud_id: str, hour: datetime, rows: list[HourFile], has_dir: bool) -> HourPlan:
    by_part = {row.part: row for row in rows}
    parts = []
    part = 0
    # A writer opens part N+1 only after part N was sealed, and markers outlive shipped files,
    # so local parts form a chain that ends at the first part with neither file nor marker.
    while has_dir:
        path = hourfiles.local_path(cloud_id, hour, part)
        row = by_part.pop(part, None)
        on_disk = path.exists()
        if not on_disk and row is None and not hourfiles.sealed_marker(path).exists():
            break
        key, compressed = _archived_key(row)
        parts.append(PartCopies(part, path if on_disk else None, key, compressed))
        part += 1
    for part, row in sorted(by_part.items()):
        path = hourfiles.local_path(cloud_id, hour, part)
        key, compressed = _archived_key(row)
        local = path if has_dir and path.exists() else None
        parts.append(PartCopies(part, local, key, compressed))
    return HourPlan(cloud_id, hour, tuple(p for p in parts if p.local_path or p.key))


def _local_hours(first_hour: datetime, end: datetime) -> list[datetime]:
    """Hours in [first_hour, end) that have a directory under LOG_ROOT (local disk only)."""
    root = Path(settings.LOG_ROOT)
    try:
        names = [entry.name for entry in root.iterdir() if entry.is_dir()]
    except FileNotFoundError:
        return []
    hours = []
    for name in names:
        try:
            hour = hourfiles.parse_hour_label(name)
        except ValueError:
            continue
        if first_hour <= hour < end:
            hours.append(hour)
    return sorted(hours)


def hour_plans(cloud_id: str, start: datetime, end: datetime) -> Iterator[HourPlan]:
    """The hours of [start, end) that hold any copy of `cloud_id`'s records, in order."""
    first_hour = hourfiles.hour_floor(start)
    rows = (
        HourFile.objects.filter(cloud_id=cloud_id, hour__gte=first_hour, hour__lt=end)
        .order_by("hour", "part")
        .only("hour", "part", "state", "key", "compressed")
        .iterator(chunk_size=500)
    )
    manifest = ((hour, list(group)) for hour, group in groupby(rows, key=attrgetter("hour")))
    # Only hours with a directory on disk are probed for local files (one listing of LOG_ROOT).
    local_hours = _local_hours(first_hour, end)
    local: Iterable[tuple[datetime, list[HourFile]]] = ((hour, []) for hour in local_hours)
    with_dir = set(local_hours)
    for hour, group in groupby(heapq.merge(manifest, local, key=itemgetter(0)), itemgetter(0)):
        hour_rows = [row for _, rows_of_hour in group for row in rows_of_hour]
        plan = _plan_hour(cloud_id, hour, hour_rows, hour in with_dir)
        if plan.parts:
            yield plan


# --- Reading copies -----------------------------------------------------------------------------


def _read_archived(archive: Archive, key: str, compressed: bool) -> bytes:
    try:
        return read_hour_file(archive, key, compressed)
    except (ArchiveError, OSError) as exc:
        raise ArchiveReadError(f"cannot read archived {key}: {exc}") from exc


def _parse_lines(data: bytes, origin: str) -> Iterator[Record]:
    for line_number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield parse_line(line)
        except ValueError as exc:
            logger.warning("%s:%d: malformed record skipped: %s", origin, line_number, exc)


@dataclass(slots=True)
class HourContent:
    records: list[Record] = field(default_factory=list)
    # Parts whose local file vanished before it could be read, with no archive copy known then.
    vanished: list[PartCopies] = field(default_factory=list)


def _load_hour(plan: HourPlan, archive: Archive) -> HourContent:
    content = HourContent()
    for copies in plan.parts:
        found = False
        if copies.local_path is not None:
            try:
                data = copies.local_path.read_bytes()
            except FileNotFoundError:
                # Shipped, verified and removed since the plan was made.
                pass
            else:
                content.records.extend(_parse_lines(data, str(copies.local_path)))
                found = True
        if copies.key is not None:
            try:
                data = _read_archived(archive, copies.key, copies.compressed)
            except ArchiveReadError:
                if not found:
                    raise
                logger.warning("archived %s unreadable; its local copy was read", copies.key)
            else:
                content.records.extend(_parse_lines(data, copies.key))
                found = True
        if not found:
            content.vanished.append(copies)
    return content


def _recover_vanished(plan: HourPlan, copies: PartCopies, archive: Archive) -> list[Record]:
    row = HourFile.objects.filter(cloud_id=plan.cloud_id, hour=plan.hour, part=copies.part).first()
    key, compressed = _archived_key(row)
    if key is None:
        logger.warning(
            "%s part %d vanished from disk and is not in the archive",
            hourfiles.local_path(plan.cloud_id, plan.hour, copies.part),
            copies.part,
        )
        return []
    return list(_parse_lines(_read_archived(archive, key, compressed), key))


def _in_order(
    records: Iterable[Record], start_ts: float, end_ts: float, record_type: str | None
) -> list[Record]:
    unique: dict[tuple[str, int | float], Record] = {}
    for record in records:
        timestamp = record.get("meter_timestamp")
        kind = record.get("record_type")
        if not isinstance(timestamp, int | float) or not isinstance(kind, str):
            continue
        if not start_ts <= timestamp < end_ts or (record_type and kind != record_type):
            continue
        unique.setdefault((kind, timestamp), record)
    return [unique[key] for key in sorted(unique, key=lambda k: (k[1], k[0]))]


def iter_hours(
    cloud_id: str, start: datetime, end: datetime, record_type: str | None = None
) -> Iterator[list[Record]]:
    """`cloud_id`'s records in [start, end), one list per UTC hour that has any, in time order.

    Raises ArchiveReadError when a verified hour has no readable copy.
    """
    # Made in the thread that serves the request and shared with the prefetching threads: the
    # boto3 client it holds is safe to use from any thread, and costly to make.
    archive = open_archive()
    start_ts, end_ts = start.timestamp(), end.timestamp()
    plans = hour_plans(cloud_id, start, end)
    # Hours the SQL readings store holds whole are read from its table, in this thread.
    in_table = readings_store.table_hours(cloud_id, start, end, need_raw=True)
    pending: list[tuple[HourPlan, Future[HourContent] | None]] = []
    executor = ThreadPoolExecutor(max_workers=PREFETCH_HOURS, thread_name_prefix="retrieval")
    try:
        while True:
            while len(pending) < PREFETCH_HOURS and (plan := next(plans, None)) is not None:
                if plan.hour in in_table:
                    pending.append((plan, None))
                else:
                    pending.append((plan, executor.submit(_load_hour, plan, archive)))
            if not pending:
                return
            plan, future = pending.pop(0)
            if future is None:
                low = max(start, plan.hour)
                high = min(end, plan.hour + hourfiles.HOUR)
                if table_records := readings_store.records(cloud_id, low, high, record_type):
                    yield table_records
                continue
            content = future.result()
            for copies in content.vanished:
                content.records.extend(_recover_vanished(plan, copies, archive))
            records = _in_order(content.records, start_ts, end_ts, record_type)
            if records:
                yield records
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def iter_readings(
    cloud_id: str, start: datetime, end: datetime, record_type: str | None = None
) -> Iterator[Record]:
    """`cloud_id`'s records with meter time in [start, end), in time order, each once."""
    for hour_records in iter_hours(cloud_id, start, end, record_type):
        yield from hour_records


def value_fields(record: Record) -> list[str]:
    """The measured values of a record (demand_kw, …), without its metadata."""
    return [name for name in record if name not in META_FIELDS]


def has_records(cloud_id: str) -> bool:
    """Whether `cloud_id` is a user or has hour files (users may be deleted, files stay)."""
    return (
        EagleUser.objects.filter(cloud_id=cloud_id).exists()
        or HourFile.objects.filter(cloud_id=cloud_id).exists()
    )


# --- One hour file ------------------------------------------------------------------------------

DOWNLOAD_CHUNK_BYTES = 256 * 1024


class HourFileUnavailableError(Exception):
    """No copy of an hour file can be served in the way asked for."""


@dataclass(slots=True)
class HourFileStream:
    chunks: Iterator[bytes]
    size: int
    content_type: str
    filename: str


def _file_chunks(handle: Any, size: int) -> Iterator[bytes]:
    # Stops at `size`: an open hour file keeps growing, and the length was already announced.
    try:
        remaining = size
        while remaining > 0:
            chunk = handle.read(min(DOWNLOAD_CHUNK_BYTES, remaining))
            if not chunk:
                return
            remaining -= len(chunk)
            yield chunk
    finally:
        handle.close()


def open_hour_file(hour_file: HourFile) -> HourFileStream:
    """The bytes of one hour file as stored: from local disk if it is still there, else from
    the archive (gzip objects stay compressed). HourFileUnavailableError when neither is."""
    path = hourfiles.local_path(hour_file.cloud_id, hour_file.hour, hour_file.part)
    try:
        handle = open(path, "rb")  # closed by _file_chunks
    except FileNotFoundError:
        pass
    else:
        size = os.fstat(handle.fileno()).st_size
        return HourFileStream(_file_chunks(handle, size), size, content_type(False), path.name)
    key, compressed = _archived_key(hour_file)
    if key is None:
        raise HourFileUnavailableError(
            f"hour file {hour_file.id} is not on disk and not verified in the archive "
            f"(state {hour_file.state})"
        )
    try:
        stream, size = open_archive().open_sized(key)
    except (ArchiveError, OSError) as exc:
        raise ArchiveReadError(f"cannot read archived {key}: {exc}") from exc
    filename = key.rsplit("/", 1)[-1]
    return HourFileStream(_file_chunks(stream, size), size, content_type(compressed), filename)


def presigned_url(hour_file: HourFile) -> tuple[str, datetime]:
    """A short-lived URL of the archived object and when it expires; S3 archives only.

    HourFileUnavailableError if the archive is not S3 or the file is not verified there.
    """
    key, _ = _archived_key(hour_file)
    if key is None:
        raise HourFileUnavailableError(
            f"hour file {hour_file.id} is not verified in the archive (state {hour_file.state})"
        )
    presigned = open_archive().presigned_url(key)
    if presigned is None:
        raise HourFileUnavailableError("presigned URLs need an S3 archive (ARCHIVE_BUCKET)")
    return presigned


# --- Aggregates ---------------------------------------------------------------------------------


@dataclass(slots=True)
class DemandBucket:
    start: datetime
    end: datetime
    readings: int = 0
    total_kw: float = 0.0
    min_kw: float | None = None
    max_kw: float | None = None
    energy_kwh: float = 0.0
    covered_seconds: float = 0.0

    @property
    def avg_kw(self) -> float | None:
        return self.total_kw / self.readings if self.readings else None

    def add_reading(self, demand_kw: float) -> None:
        self.readings += 1
        self.total_kw += demand_kw
        self.min_kw = demand_kw if self.min_kw is None else min(self.min_kw, demand_kw)
        self.max_kw = demand_kw if self.max_kw is None else max(self.max_kw, demand_kw)


def interval_boundaries(
    start: datetime, end: datetime, interval: timedelta, tz: tzinfo = UTC
) -> list[datetime]:
    """[start, b1, …, end]: the interval grid inside the range, in UTC.

    Intervals shorter than a day are aligned on multiples of their length since the Unix epoch
    (whole hours and minutes in UTC); days start at midnight in `tz`, so a day across a DST
    change lasts 23 or 25 hours.
    """
    boundaries = [start]
    if interval >= timedelta(days=1):
        day: date = start.astimezone(tz).date()
        while True:
            day += timedelta(days=1)
            midnight = datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)
            if midnight >= end:
                break
            if midnight > boundaries[-1]:
                boundaries.append(midnight)
    else:
        step = interval.total_seconds()
        moment = (math.floor(start.timestamp() / step) + 1) * step
        while moment < end.timestamp():
            boundaries.append(datetime.fromtimestamp(moment, UTC))
            moment += step
    boundaries.append(end)
    return boundaries


def demand_readings(cloud_id: str, start: datetime, end: datetime) -> Iterator[tuple[float, float]]:
    """(unix seconds, kW) of `cloud_id`'s demand readings in [start, end), in time order."""
    for record in iter_readings(cloud_id, start, end, DEMAND):
        demand = record.get(DEMAND_FIELD)
        if isinstance(demand, int | float) and not isinstance(demand, bool):
            yield float(record["meter_timestamp"]), float(demand)


def aggregate_demand(
    cloud_id: str,
    start: datetime,
    end: datetime,
    interval: timedelta,
    tz: tzinfo = UTC,
    gap_seconds: float = DEFAULT_GAP_SECONDS,
) -> list[DemandBucket]:
    """Demand statistics and trapezoid energy per interval of [start, end) (see module doc)."""
    boundaries = interval_boundaries(start, end, interval, tz)
    buckets = [DemandBucket(a, b) for a, b in zip(boundaries, boundaries[1:], strict=False)]
    edges = [b.timestamp() for b in boundaries]
    start_ts, end_ts = edges[0], edges[-1]
    margin = timedelta(seconds=gap_seconds)
    previous: tuple[float, float] | None = None
    for low, high, in_table in _runs(cloud_id, start - margin, end + margin):
        if in_table:
            previous = _add_table_part(
                readings_store.demand_part(cloud_id, low, high, edges, gap_seconds),
                previous,
                gap_seconds,
                edges,
                buckets,
            )
            continue
        for moment, demand in demand_readings(cloud_id, low, high):
            if start_ts <= moment < end_ts:
                buckets[bisect_right(edges, moment) - 1].add_reading(demand)
            if previous is not None and moment - previous[0] <= gap_seconds:
                _integrate(previous, (moment, demand), edges, buckets)
            previous = (moment, demand)
    return buckets


def _runs(cloud_id: str, start: datetime, end: datetime) -> list[tuple[datetime, datetime, bool]]:
    """[start, end) cut at hour boundaries into runs read alike: (low, high, from the table)."""
    in_table = readings_store.table_hours(cloud_id, start, end)
    if not in_table:
        return [(start, end, False)]
    runs: list[tuple[datetime, datetime, bool]] = []
    hour = hourfiles.hour_floor(start)
    while hour < end:
        low, high, table = max(hour, start), min(hour + hourfiles.HOUR, end), hour in in_table
        if runs and runs[-1][2] == table:
            runs[-1] = (runs[-1][0], high, table)
        else:
            runs.append((low, high, table))
        hour += hourfiles.HOUR
    return runs


def _add_table_part(
    part: readings_store.DemandPart,
    previous: tuple[float, float] | None,
    gap_seconds: float,
    edges: list[float],
    buckets: list[DemandBucket],
) -> tuple[float, float] | None:
    """Add what the table aggregated for a run, joined to the reading before it; returns the
    run's last reading (or `previous` when it has none)."""
    if part.first is None:
        return previous
    if previous is not None and part.first[0] - previous[0] <= gap_seconds:
        _integrate(previous, part.first, edges, buckets)
    for index, (count, total, low, high) in part.stats.items():
        bucket = buckets[index]
        bucket.readings += count
        bucket.total_kw += total
        bucket.min_kw = low if bucket.min_kw is None else min(bucket.min_kw, low)
        bucket.max_kw = high if bucket.max_kw is None else max(bucket.max_kw, high)
    for index, (energy, covered) in part.energy.items():
        buckets[index].energy_kwh += energy
        buckets[index].covered_seconds += covered
    return part.last


def _integrate(
    a: tuple[float, float], b: tuple[float, float], edges: list[float], buckets: list[DemandBucket]
) -> None:
    (t0, p0), (t1, p1) = a, b
    low, high = max(t0, edges[0]), min(t1, edges[-1])
    if high <= low:
        return
    slope = (p1 - p0) / (t1 - t0)
    index = bisect_right(edges, low) - 1
    while low < high:
        piece_end = min(high, edges[index + 1])
        demand_low = p0 + slope * (low - t0)
        demand_high = p0 + slope * (piece_end - t0)
        bucket = buckets[index]
        bucket.energy_kwh += (demand_low + demand_high) / 2 * (piece_end - low) / 3600
        bucket.covered_seconds += piece_end - low
        low = piece_end
        index += 1


# --- Coverage -----------------------------------------------------------------------------------


@dataclass(slots=True)
class HourCoverage:
    hour: datetime
    start: datetime
    end: datetime
    expected: int
    expected_seconds: float
    present: int = 0
    covered_seconds: float = 0.0


@dataclass(slots=True)
class Gap:
    start: datetime
    end: datetime
    failure_classes: list[str] = field(default_factory=list)
    incident_ids: list[int] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


@dataclass(slots=True)
class Coverage:
    start: datetime
    end: datetime
    cadence_seconds: float
    gap_seconds: float
    hours: list[HourCoverage]
    gaps: list[Gap]

    @property
    def expected(self) -> int:
        return sum(hour.expected for hour in self.hours)

    @property
    def expected_seconds(self) -> float:
        return sum(hour.expected_seconds for hour in self.hours)

    @property
    def present(self) -> int:
        return sum(hour.present for hour in self.hours)

    @property
    def covered_seconds(self) -> float:
        return sum(hour.covered_seconds for hour in self.hours)


def _meter_timestamps(cloud_id: str, start: datetime, end: datetime) -> Iterator[int]:
    """The distinct meter times of `cloud_id`'s readings in [start, end), in order: from the
    readings table (SELECT DISTINCT) for the hours it holds, from files for the others."""
    for low, high, in_table in _runs(cloud_id, start, end):
        if in_table:
            yield from readings_store.meter_timestamps(cloud_id, low, high)
        else:
            yield from _distinct_timestamps(iter_readings(cloud_id, low, high))


def _distinct_timestamps(records: Iterable[Record]) -> Iterator[int]:
    last = None
    for record in records:
        timestamp = record["meter_timestamp"]
        if timestamp != last:
            yield timestamp
            last = timestamp


def _gaps(timestamps: Iterable[float], spans: list[expected.Span], gap_seconds: float) -> list[Gap]:
    """Stretches longer than `gap_seconds` of expected time without a reading, in one pass over
    all the readings (in time order); readings outside the spans neither open nor close a gap."""
    gaps: list[Gap] = []
    edges = [(a.timestamp(), b.timestamp()) for a, b in spans]
    index, previous = 0, None

    def close(span: int, last: float | None) -> None:
        low, high = edges[span]
        last = low if last is None else last
        if high - last > gap_seconds:
            gaps.append(Gap(_utc(last), spans[span][1]))

    for timestamp in timestamps:
        while index < len(edges) and timestamp >= edges[index][1]:
            close(index, previous)
            index, previous = index + 1, None
        if index == len(edges):
            continue
        low = edges[index][0]
        if timestamp < low:
            continue
        last = low if previous is None else previous
        if timestamp - last > gap_seconds:
            gaps.append(Gap(_utc(last), _utc(timestamp)))
        previous = timestamp
    for span in range(index, len(edges)):
        close(span, previous if span == index else None)
    return gaps


def coverage(
    cloud_id: str,
    start: datetime,
    end: datetime,
    gap_seconds: float = DEFAULT_GAP_SECONDS,
    now: datetime | None = None,
) -> Coverage:
    """Readings expected and present per UTC hour, and the gaps with their causes (module doc).

    Time after `now` is neither expected nor a gap.
    """
    now = now or timezone.now()
    end = max(start, min(end, now))
    user = EagleUser.objects.filter(cloud_id=cloud_id).first()
    spans = expected.expected_spans(user, start, end)
    hours = []
    hour = hourfiles.hour_floor(start)
    while hour < end:
        low, high = max(hour, start), min(hour + hourfiles.HOUR, end)
        seconds = expected.seconds_in(expected.clip(spans, low, high))
        hours.append(HourCoverage(hour, low, high, expected.readings_in(seconds), seconds))
        hour += hourfiles.HOUR
    hour_starts = [h.start.timestamp() for h in hours]

    def counted(timestamps: Iterable[int]) -> Iterator[int]:
        for timestamp in timestamps:
            hours[bisect_right(hour_starts, timestamp) - 1].present += 1
            yield timestamp

    gaps = _gaps(counted(_meter_timestamps(cloud_id, start, end)), spans, gap_seconds)

    for hour_coverage in hours:
        hour_coverage.covered_seconds = hour_coverage.expected_seconds
        for gap in gaps:
            overlap = min(gap.end, hour_coverage.end) - max(gap.start, hour_coverage.start)
            hour_coverage.covered_seconds -= max(overlap.total_seconds(), 0.0)
    _attach_incidents(cloud_id, gaps, now)
    return Coverage(start, end, settings.INGEST_METER_SECONDS, gap_seconds, hours, gaps)


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def _attach_incidents(cloud_id: str, gaps: list[Gap], now: datetime) -> None:
    if not gaps:
        return
    incidents = list(
        Incident.objects.filter(user__cloud_id=cloud_id, opened_at__lt=gaps[-1].end)
        .filter(Q(resolved_at__isnull=True) | Q(resolved_at__gt=gaps[0].start))
        .order_by("opened_at")
        .values_list("id", "failure_class", "opened_at", "resolved_at")
    )
    for gap in gaps:
        for incident_id, failure_class, opened_at, resolved_at in incidents:
            if opened_at < gap.end and (resolved_at or now) > gap.start:
                gap.incident_ids.append(incident_id)
                if failure_class not in gap.failure_classes:
                    gap.failure_classes.append(failure_class)
