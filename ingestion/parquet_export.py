"""Exporting shipped hours to the Parquet dataset exactly once, and checking it (ingestion/parquet.py
says what the files hold).

The unit is a fleet-hour (`DatasetHour`): the readings of every household in one UTC hour, read
from the hour files the manifest says are verified in the archive. An hour is exported once all
its hour files are verified, and again, as a whole new version, whenever they change (a late part
shipped, a household purged): the dataset always equals the JSON-lines archive.

Finding work (`find_changed_hours`): hour files verified since the last look (`DatasetScan`, with
an overlap) name the hours to compare; an hour whose verified files, lines or newest verification
differ from what its published version was built from becomes pending.

Exporting one hour (`export_hour`), each step committed before the next:
1. Claim: a conditional UPDATE leases the row and gives the attempt a version number never used
   before, so its keys are new: an attempt never meets the objects of another.
2. Clean up what a dead attempt left: files planned by an earlier attempt, and obsolete files,
   are deleted from the archive, then forgotten.
3. Read every verified hour file of the hour; build one table per record type, and the summary
   of its demand readings (ingestion/parquet.py).
4. Plan: every file's key, rows, size and SHA-256 are recorded (`DatasetFile`, planned) before it
   is written.
5. Write: each object is created only if its key is absent and verified: its footer declares the
   rows of its table, and the archive confirms its SHA-256. The rows of all files, plus the
   repeated and unreadable lines, equal the lines of the hour files read.
6. Publish, in one transaction and only while the lease holds: the new files become current, the
   previous version's obsolete, the row records the version and its sources. If the hour files
   changed meanwhile, the hour stays pending and is exported again.
7. Delete the obsolete objects, then their rows.

A crash between any two steps leaves a state the next attempt completes: before 6 the published
version is untouched (new objects are only planned ones, cleaned up next time); after 6 only
deletions remain, and they are idempotent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from ingestion import hourfiles, parquet, retrieval
from ingestion.archive.store import (
    Archive,
    ArchiveError,
    open_archive,
    read_hour_file,
    stored_sha256,
)
from ingestion.models import (
    DatasetFile,
    DatasetFileState,
    DatasetHour,
    DatasetHourState,
    DatasetScan,
    HourFile,
    HourFileState,
    HourSources,
    hour_sources,
)

logger = logging.getLogger(__name__)

# Hour files verified this long before the last look are looked at again: a rotation records
# `verified_at` a moment before its transaction commits.
SCAN_OVERLAP = timedelta(minutes=5)
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
# Hour files read ahead of the one being decoded: bounded memory, hidden archive latency.
READ_AHEAD = 64
MAX_REPORTED_ERRORS = 50


class ExportStep(StrEnum):
    """The steps of exporting one hour, in order. `after_step` hooks run after each one."""

    CLAIMED = "claimed"
    CLEANED = "cleaned"
    READ = "read"
    PLANNED = "planned"
    WRITTEN = "written"
    PUBLISHED = "published"
    DELETED = "deleted"


AfterStep = Callable[[ExportStep, datetime], None]


def _no_hook(step: ExportStep, hour: datetime) -> None:
    return None


class ExportError(Exception):
    """An export attempt that cannot complete; the hour is retried after a backoff."""


class LeaseLostError(Exception):
    """Another export took the hour over (this one outlived its lease)."""


@dataclass
class ExportReport:
    hours_found: int = 0
    exported: int = 0
    # Hours with hour files not verified in the archive yet: exported once they are.
    waiting: int = 0
    failed: int = 0
    rows: int = 0
    files: int = 0
    bytes_written: int = 0
    duplicates: int = 0
    skipped: int = 0
    stopped: bool = False
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def note_error(self, message: str) -> None:
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(message)

    def summary(self) -> str:
        text = (
            f"{self.exported} of {self.hours_found} hours exported ({self.rows} rows, "
            f"{self.files} files, {self.bytes_written} bytes), {self.waiting} waiting for their "
            f"hour files, {self.failed} failed"
        )
        if self.skipped or self.duplicates:
            text += f"; {self.skipped} lines skipped, {self.duplicates} repeated readings"
        return text + (" (stopped early)" if self.stopped else "")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- Finding hours to export --------------------------------------------------------------------


def find_changed_hours() -> int:
    """Mark pending every hour whose hour files were verified since the last look and differ
    from what its Parquet was built from; returns how many were marked."""
    scan, _ = DatasetScan.objects.get_or_create(pk=1, defaults={"verified_since": EPOCH})
    started = timezone.now()
    hours = set(
        HourFile.objects.filter(
            state=HourFileState.VERIFIED, verified_at__gte=scan.verified_since - SCAN_OVERLAP
        )
        .order_by()
        .values_list("hour", flat=True)
        .distinct()
    )
    marked = DatasetHour.objects.mark_changed(hour_sources(hours)) if hours else 0
    DatasetScan.objects.filter(pk=1).update(verified_since=started)
    return marked


def hours_between(since: datetime | None, until: datetime | None) -> list[datetime]:
    """Hours in [since, until) that have any hour file, oldest first."""
    rows = HourFile.objects.order_by("hour")
    if since is not None:
        rows = rows.filter(hour__gte=hourfiles.hour_floor(since))
    if until is not None:
        rows = rows.filter(hour__lt=until)
    return list(rows.values_list("hour", flat=True).distinct())


@dataclass(frozen=True, slots=True)
class PlannedHour:
    hour: datetime
    # "new", "changed", "failed", "pending", "waiting" (hour files not all verified) or
    # "exported" (up to date: nothing to do).
    status: str
    sources: HourSources


def plan_export(since: datetime | None, until: datetime | None) -> Iterator[PlannedHour]:
    """What `export --since --until` would do with each hour of the range, changing nothing."""
    hours = hours_between(since, until)
    for start in range(0, len(hours), 500):
        batch = hours[start : start + 500]
        sources = hour_sources(batch)
        rows = {row.hour: row for row in DatasetHour.objects.filter(hour__in=batch)}
        for hour in batch:
            found, row = sources[hour], rows.get(hour)
            if found.unshipped_files:
                status = "waiting"
            elif row is None:
                status = "new"
            elif row.state == DatasetHourState.EXPORTED:
                status = "exported" if row.built_from(found) else "changed"
            else:
                status = row.state
            yield PlannedHour(hour, status, found)


# --- Exporting ----------------------------------------------------------------------------------


class _Attempt:
    """One claimed hour being exported (steps 2 to 7 of the module docstring)."""

    def __init__(
        self, row: DatasetHour, archive: Archive, after_step: AfterStep, report: ExportReport
    ) -> None:
        self.row = row
        self.hour = row.hour
        self.version = row.attempt_version
        self.lease = row.claimed_until
        self.archive = archive
        self.after_step = after_step
        self.report = report

    def run(self) -> None:
        self.after_step(ExportStep.CLAIMED, self.hour)
        delete_leftovers(self.archive, self.row, keep_version=self.version)
        self.after_step(ExportStep.CLEANED, self.hour)
        sources, columns = self.read()
        self.after_step(ExportStep.READ, self.hour)
        objects = list(parquet.hour_objects(self.hour, self.version, columns.build()))
        self.plan(objects)
        self.after_step(ExportStep.PLANNED, self.hour)
        for item in objects:
            self.write(item)
        self.after_step(ExportStep.WRITTEN, self.hour)
        self.publish(sources, columns, objects)
        self.after_step(ExportStep.PUBLISHED, self.hour)
        delete_leftovers(self.archive, self.row, keep_version=self.version)
        self.after_step(ExportStep.DELETED, self.hour)
        report = self.report
        report.exported += 1
        report.rows += columns.rows
        report.files += len(objects)
        report.bytes_written += sum(item.size for item in objects)
        report.duplicates += columns.duplicates
        report.skipped += columns.skipped

    def read(self) -> tuple[HourSources, parquet.HourColumns]:
        files = list(
            HourFile.objects.filter(hour=self.hour, state=HourFileState.VERIFIED)
            .order_by("cloud_id", "part")
            .values_list("key", "compressed", "line_count", "malformed_lines", "verified_at")
        )
        archive = open_archive()
        columns = parquet.HourColumns()
        with ThreadPoolExecutor(settings.ROTATE_CONCURRENCY, thread_name_prefix="export") as pool:
            for start in range(0, len(files), READ_AHEAD):
                batch = files[start : start + READ_AHEAD]
                for data in pool.map(lambda f: read_hour_file(archive, f[0], f[1]), batch):
                    columns.add_lines(data)
        expected = sum((lines or 0) + malformed for _, _, lines, malformed, _ in files)
        if columns.lines != expected:
            raise ExportError(
                f"read {columns.lines} lines from {len(files)} hour files of "
                f"{hourfiles.hour_label(self.hour)}; the manifest says {expected}"
            )
        newest = max((at for *_, at in files if at is not None), default=None)
        lines = sum(lines or 0 for _, _, lines, _, _ in files)
        return HourSources(len(files), lines, newest, 0), columns

    def plan(self, objects: list[parquet.ParquetObject]) -> None:
        with transaction.atomic():
            self.check_lease(lock=True)
            DatasetFile.objects.bulk_create(
                DatasetFile(
                    dataset_hour=self.row,
                    version=self.version,
                    record_type=item.record_type,
                    content=item.content,
                    key=item.key,
                    rows=item.rows,
                    size=item.size,
                    sha256=item.sha256,
                )
                for item in objects
            )

    def write(self, item: parquet.ParquetObject) -> None:
        if parquet.rows_in(item.body) != item.rows:
            raise ExportError(f"{item.key}: the file's footer does not declare {item.rows} rows")
        stored = self.archive.create(
            item.key, item.body, item.size, item.sha256, parquet.CONTENT_TYPE
        )
        if stored is None:
            # Only a run that lost its lease to this one could have written here.
            stored = self.archive.stat(item.key)
            if stored is None:
                raise ExportError(f"{item.key}: the archive refused it, yet has no such object")
        if stored.size != item.size or stored_sha256(self.archive, item.key, stored) != item.sha256:
            raise ExportError(f"{item.key}: the archive holds other bytes than were written")

    def publish(
        self,
        sources: HourSources,
        columns: parquet.HourColumns,
        objects: list[parquet.ParquetObject],
    ) -> None:
        now = timezone.now()
        with transaction.atomic():
            self.check_lease(lock=True)
            current = hour_sources([self.hour]).get(self.hour)
            # Hour files verified while this attempt read: publish, and export again.
            changed = current is None or (
                current.verified_files,
                current.lines,
                current.newest_verified_at,
                current.unshipped_files,
            ) != (sources.verified_files, sources.lines, sources.newest_verified_at, 0)
            files = DatasetFile.objects.filter(dataset_hour=self.row)
            files.filter(state=DatasetFileState.CURRENT).update(state=DatasetFileState.OBSOLETE)
            files.filter(version=self.version, state=DatasetFileState.PLANNED).update(
                state=DatasetFileState.CURRENT
            )
            DatasetHour.objects.filter(pk=self.row.pk).update(
                state=DatasetHourState.PENDING if changed else DatasetHourState.EXPORTED,
                version=self.version,
                rows=columns.rows,
                households=columns.households,
                source_files=sources.verified_files,
                source_lines=sources.lines,
                source_verified_at=sources.newest_verified_at,
                duplicates=columns.duplicates,
                skipped=columns.skipped,
                last_error="",
                next_attempt_at=None,
                claimed_until=None,
                exported_at=now,
                updated_at=now,
            )
        if columns.skipped:
            logger.warning(
                "parquet export: %s: %d lines are no reading of a known record type",
                hourfiles.hour_label(self.hour),
                columns.skipped,
            )

    def check_lease(self, lock: bool) -> None:
        rows = DatasetHour.objects.filter(pk=self.row.pk, claimed_until=self.lease)
        if not (rows.select_for_update() if lock else rows).exists():
            raise LeaseLostError(hourfiles.hour_label(self.hour))

    def fail(self, error: str) -> None:
        now = timezone.now()
        DatasetHour.objects.filter(pk=self.row.pk, claimed_until=self.lease).update(
            state=DatasetHourState.FAILED,
            last_error=error,
            next_attempt_at=now + DatasetHour.retry_delay(self.row.attempts),
            claimed_until=None,
            updated_at=now,
        )


def delete_leftovers(archive: Archive, row: DatasetHour, keep_version: int) -> int:
    """Delete the objects of `row`'s obsolete files and of the files planned by attempts other
    than `keep_version` (which died), then forget them; the number deleted."""
    leftovers = (
        DatasetFile.objects.filter(dataset_hour=row)
        .exclude(state=DatasetFileState.CURRENT)
        .exclude(state=DatasetFileState.PLANNED, version=keep_version)
    )
    return _delete(archive, leftovers)


def delete_obsolete(archive: Archive) -> int:
    """Delete every obsolete file (an export that published a new version and died before
    deleting the old one); the number deleted."""
    return _delete(archive, DatasetFile.objects.filter(state=DatasetFileState.OBSOLETE))


def _delete(archive: Archive, files: QuerySet[DatasetFile]) -> int:
    done = []
    for pk, key in files.values_list("pk", "key"):
        archive.delete(key)
        done.append(pk)
    DatasetFile.objects.filter(pk__in=done).delete()
    return len(done)


def export_hour(
    row: DatasetHour,
    archive: Archive,
    report: ExportReport,
    after_step: AfterStep = _no_hook,
) -> bool:
    """Export one claimed hour (see the module docstring); False if it failed."""
    attempt = _Attempt(row, archive, after_step, report)
    try:
        attempt.run()
    except LeaseLostError:
        logger.warning("parquet export: lost the lease on %s", hourfiles.hour_label(row.hour))
        return False
    except (ExportError, ArchiveError, retrieval.ArchiveReadError) as exc:
        attempt.fail(str(exc))
        report.failed += 1
        report.note_error(f"{hourfiles.hour_label(row.hour)}: {exc}")
        logger.error(
            "parquet export: %s failed (attempt %d): %s",
            hourfiles.hour_label(row.hour),
            row.attempts,
            exc,
        )
        return False
    return True


def export(
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_hour: Callable[[int], None] = lambda total: None,
    after_step: AfterStep = _no_hook,
) -> ExportReport:
    """Export every due hour to Parquet: with `since`/`until`, the hours of that range (each
    compared with its hour files first); otherwise those whose hour files changed since the last
    run (the scheduled export). `on_hour(total)` is called before the first hour with the number
    of hours due, then with 0 after each one (for progress). `should_stop` is polled between
    hours."""
    report = ExportReport()
    if since is None and until is None:
        find_changed_hours()
        due = DatasetHour.objects.due(timezone.now())
    else:
        hours = hours_between(since, until)
        for start in range(0, len(hours), 500):
            DatasetHour.objects.mark_changed(hour_sources(hours[start : start + 500]))
        due = DatasetHour.objects.due(timezone.now()).filter(hour__in=hours)
    candidates = list(due.order_by("hour").values_list("pk", "hour"))
    report.hours_found = len(candidates)
    on_hour(len(candidates))
    archive = open_archive()
    try:
        delete_obsolete(archive)
    except ArchiveError as exc:
        # Harmless for now (readers go by the database); the next run deletes them.
        report.note_error(f"obsolete files not deleted yet: {exc}")
        logger.warning("parquet export: obsolete files not deleted yet: %s", exc)
    for pk, hour in candidates:
        if should_stop():
            report.stopped = True
            break
        sources = hour_sources([hour]).get(hour)
        if sources is not None and sources.unshipped_files:
            report.waiting += 1
        elif (row := DatasetHour.objects.claim(pk, timezone.now())) is not None:
            export_hour(row, archive, report, after_step)
        on_hour(0)
    logger.info("parquet export: %s", report.summary())
    return report
