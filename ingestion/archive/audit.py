"""Checking the archive against the manifest (`manage.py verify_archive`) and how far it lags
behind the hour files (freshness, for health, metrics and the admin)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import timezone

from ingestion import hourfiles, parquet
from ingestion.archive.store import Archive, ArchiveError, open_archive, stored_sha256
from ingestion.eagle.record_types import DEMAND
from ingestion.models import (
    DatasetFile,
    DatasetFileContent,
    DatasetFileState,
    DatasetHour,
    HourFile,
    HourFileState,
    hour_age_seconds,
    hour_sources,
)

# Manifest rows checked and archive objects listed per page.
BATCH = 500


class ProblemKind(StrEnum):
    MISSING = "missing"  # the manifest says verified; the archive has no such object
    MISMATCHED = "mismatched"  # the object differs in size or SHA-256 from the manifest
    ORPHANED = "orphaned"  # an object under the prefix that the manifest does not know
    LOCAL_MISSING = "local-missing"  # not verified yet, and its local file is gone
    UNREADABLE = "unreadable"  # the archive failed to answer about this object
    # The Parquet dataset (ingestion/parquet_export.py) against the hour files:
    PARQUET_STALE = "parquet-stale"  # an hour not exported, or exported from other hour files
    PARQUET_ROWS = "parquet-rows"  # rows that do not add up to the hour files' lines
    # An hour's demand summary missing, or not counting the hour's demand readings.
    PARQUET_SUMMARY = "parquet-summary"


@dataclass(frozen=True, slots=True)
class Problem:
    kind: ProblemKind
    key: str
    detail: str


@dataclass
class AuditReport:
    verified_checked: int = 0
    unverified_checked: int = 0
    objects_listed: int = 0
    parquet_hours_checked: int = 0
    parquet_files_checked: int = 0
    problems: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ProblemKind, 0))

    @property
    def ok(self) -> bool:
        return not any(self.problems.values())

    def summary(self) -> str:
        found = ", ".join(f"{count} {kind}" for kind, count in self.problems.items() if count)
        return (
            f"{self.verified_checked} verified files checked against the archive, "
            f"{self.unverified_checked} unshipped files against the local disk, "
            f"{self.objects_listed} objects listed, {self.parquet_hours_checked} Parquet hours "
            f"({self.parquet_files_checked} files) checked against the hour files: "
            + (found or "no problems")
        )


def check_object(archive: Archive, key: str, size: int | None, sha256: str) -> Problem | None:
    """The problem with the object at `key`, if it is not `size` bytes with this SHA-256."""
    try:
        stored = archive.stat(key)
        if stored is None:
            return Problem(ProblemKind.MISSING, key, "no such object in the archive")
        if stored.size != size:
            return Problem(
                ProblemKind.MISMATCHED, key, f"{stored.size} bytes, the manifest says {size}"
            )
        actual = stored_sha256(archive, key, stored)
    except ArchiveError as exc:
        return Problem(ProblemKind.UNREADABLE, key, str(exc))
    if actual != sha256:
        return Problem(ProblemKind.MISMATCHED, key, f"SHA-256 {actual}, the manifest says {sha256}")
    return None


def _hour_of_key(key: str) -> datetime | None:
    try:
        return hourfiles.parse_file_name(key.rsplit("/", 1)[-1])[1]
    except ValueError:
        return None


def audit_archive(
    report: AuditReport,
    since: datetime | None = None,
    concurrency: int | None = None,
    on_page: Callable[[AuditReport], None] = lambda report: None,
) -> Iterator[Problem]:
    """Compare the manifest with the archive and the local disk, yielding each problem found:
    verified files must be in the archive as recorded; files not yet verified must still be on
    disk; every object under ARCHIVE_PREFIX must be in the manifest (listing the bucket is
    fine here: this is the audit, never the rotation). `on_page` sees the report after each
    page of rows or objects, for progress."""
    archive = open_archive()
    concurrency = concurrency or settings.ROTATE_CONCURRENCY
    since_filter = {} if since is None else {"hour__gte": since}
    verified = HourFile.objects.filter(state=HourFileState.VERIFIED, **since_filter)
    with ThreadPoolExecutor(concurrency, thread_name_prefix="audit") as pool:
        page: list[tuple[Any, ...]] = []
        for row in verified.in_pages("key", "size", "sha256"):
            page.append(row)
            if len(page) == BATCH:
                yield from _checked_page(pool, archive, page, report)
                on_page(report)
                page = []
        yield from _checked_page(pool, archive, page, report)
        on_page(report)

    closed_before = timezone.now() - hourfiles.HOUR
    unverified = HourFile.objects.unshipped().filter(hour__lte=closed_before, **since_filter)
    for _, key, local_path, state in unverified.in_pages("key", "local_path", "state"):
        report.unverified_checked += 1
        if not Path(local_path).exists():
            report.problems[ProblemKind.LOCAL_MISSING] += 1
            yield Problem(ProblemKind.LOCAL_MISSING, key, f"{state}, and {local_path} is gone")

    listed: list[str] = []
    for key, _ in archive.keys(settings.ARCHIVE_PREFIX):
        report.objects_listed += 1
        listed.append(key)
        if len(listed) == BATCH:
            yield from _orphans(listed, since, report)
            on_page(report)
            listed = []
    yield from _orphans(listed, since, report)
    on_page(report)
    yield from audit_parquet(report, since, on_page)


def _checked_page(
    pool: ThreadPoolExecutor,
    archive: Archive,
    page: list[tuple[Any, ...]],
    report: AuditReport,
) -> Iterator[Problem]:
    for problem in pool.map(lambda row: check_object(archive, row[1], row[2], row[3]), page):
        report.verified_checked += 1
        if problem is not None:
            report.problems[problem.kind] += 1
            yield problem


def _orphans(keys: list[str], since: datetime | None, report: AuditReport) -> Iterator[Problem]:
    known = set(HourFile.objects.filter(key__in=keys).values_list("key", flat=True))
    for key in keys:
        if key in known:
            continue
        hour = _hour_of_key(key)
        if since is not None and hour is not None and hour < since:
            continue
        report.problems[ProblemKind.ORPHANED] += 1
        yield Problem(ProblemKind.ORPHANED, key, "in the archive, not in the manifest")


# --- The Parquet dataset ----------------------------------------------------------------------

# An hour is expected in the dataset this long after its last hour file was verified: the
# hourly export runs shortly after the rotation.
PARQUET_GRACE = timedelta(hours=2)


def audit_parquet(
    report: AuditReport,
    since: datetime | None = None,
    on_page: Callable[[AuditReport], None] = lambda report: None,
) -> Iterator[Problem]:
    """Compare the Parquet dataset with the hour files: every hour whose hour files are all
    verified (for PARQUET_GRACE) is exported from exactly those files; its rows, plus the
    repeated and unreadable lines, are the lines of its hour files; its demand summary counts its
    demand readings; each current file is in the archive with its size, SHA-256 and, in its
    footer, its rows; nothing else is under PARQUET_PREFIX or PARQUET_SUMMARY_PREFIX."""
    archive = open_archive()
    filesystem, root = archive.arrow_filesystem()
    late = timezone.now() - PARQUET_GRACE
    hours = HourFile.objects.order_by("hour")
    if since is not None:
        hours = hours.filter(hour__gte=since)
    every_hour = list(hours.values_list("hour", flat=True).distinct())
    for start in range(0, len(every_hour), BATCH):
        batch = every_hour[start : start + BATCH]
        rows = {row.hour: row for row in DatasetHour.objects.filter(hour__in=batch)}
        for hour, found in hour_sources(batch).items():
            if found.unshipped_files or not found.verified_files:
                continue
            report.parquet_hours_checked += 1
            row = rows.get(hour)
            label = f"{parquet.prefix()} hour {hourfiles.hour_label(hour)}"
            if row is None or not row.built_from(found):
                if found.newest_verified_at is not None and found.newest_verified_at < late:
                    report.problems[ProblemKind.PARQUET_STALE] += 1
                    yield Problem(
                        ProblemKind.PARQUET_STALE,
                        label,
                        "not exported"
                        if row is None or not row.version
                        else f"version {row.version} was made from other hour files "
                        f"({row.source_files} files, {row.source_lines} lines; now "
                        f"{found.verified_files}, {found.lines})",
                    )
                continue
            lines = found.lines + found.malformed_lines
            if (row.rows or 0) + row.duplicates + row.skipped != lines:
                report.problems[ProblemKind.PARQUET_ROWS] += 1
                yield Problem(
                    ProblemKind.PARQUET_ROWS,
                    label,
                    f"{row.rows} rows, {row.duplicates} repeats and {row.skipped} skipped lines; "
                    f"the hour files hold {lines} lines",
                )
            yield from _check_parquet_files(archive, filesystem, root, row, report)
        on_page(report)
    for setting, prefix in (
        ("PARQUET_PREFIX", parquet.prefix()),
        ("PARQUET_SUMMARY_PREFIX", parquet.summary_prefix()),
    ):
        listed: list[str] = []
        for key, _ in archive.keys(prefix):
            listed.append(key)
            if len(listed) == BATCH:
                yield from _parquet_orphans(listed, setting, report)
                listed = []
        yield from _parquet_orphans(listed, setting, report)
    on_page(report)


def _check_parquet_files(
    archive: Archive, filesystem: Any, root: str, row: DatasetHour, report: AuditReport
) -> Iterator[Problem]:
    files = list(
        DatasetFile.objects.filter(dataset_hour=row, state=DatasetFileState.CURRENT).only(
            "key", "size", "sha256", "rows", "record_type", "content"
        )
    )
    label = f"{parquet.prefix()} hour {hourfiles.hour_label(row.hour)}"
    readings = [f for f in files if f.content == DatasetFileContent.READINGS]
    readings_rows = sum(f.rows for f in readings)
    if readings_rows != row.rows:
        report.problems[ProblemKind.PARQUET_ROWS] += 1
        yield Problem(
            ProblemKind.PARQUET_ROWS,
            label,
            f"its files hold {readings_rows} rows, the hour {row.rows}",
        )
    demand_rows = sum(f.rows for f in readings if f.record_type == DEMAND)
    summaries = [f for f in files if f.content == DatasetFileContent.DEMAND_MINUTES]
    if demand_rows and not summaries:
        report.problems[ProblemKind.PARQUET_SUMMARY] += 1
        yield Problem(
            ProblemKind.PARQUET_SUMMARY,
            label,
            f"{demand_rows} demand readings and no summary of them (export the hour again)",
        )
    summarised = 0
    for file in files:
        report.parquet_files_checked += 1
        problem = check_object(archive, file.key, file.size, file.sha256)
        if problem is None:
            path = f"{root}/{file.key}"
            try:
                declared = parquet.rows_in_file(filesystem, path)
            except OSError as exc:
                problem = Problem(ProblemKind.UNREADABLE, file.key, str(exc))
            else:
                if declared != file.rows:
                    problem = Problem(
                        ProblemKind.PARQUET_ROWS,
                        file.key,
                        f"its footer says {declared} rows, not {file.rows}",
                    )
                elif file.content == DatasetFileContent.DEMAND_MINUTES:
                    summarised += parquet.summarised_readings(filesystem, path)
        if problem is not None:
            report.problems[problem.kind] += 1
            yield problem
    if summaries and summarised != demand_rows:
        report.problems[ProblemKind.PARQUET_SUMMARY] += 1
        yield Problem(
            ProblemKind.PARQUET_SUMMARY,
            label,
            f"its demand summary counts {summarised} readings, its files hold {demand_rows}",
        )


def _parquet_orphans(keys: list[str], setting: str, report: AuditReport) -> Iterator[Problem]:
    known = set(DatasetFile.objects.filter(key__in=keys).values_list("key", flat=True))
    for key in keys:
        if key not in known:
            report.problems[ProblemKind.ORPHANED] += 1
            yield Problem(ProblemKind.ORPHANED, key, f"under {setting}, not in the database")


# --- Freshness ---------------------------------------------------------------------------------


def describe_age(seconds: float) -> str:
    """'2 h 05 min' style, for people."""
    minutes = int(seconds) // 60
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


@dataclass(frozen=True, slots=True)
class UserFreshness:
    cloud_id: str
    oldest_unshipped_hour: datetime
    age_seconds: float

    @property
    def age_text(self) -> str:
        return describe_age(self.age_seconds)


@dataclass(frozen=True, slots=True)
class Freshness:
    """How far the archive lags: the oldest hour with a file not yet verified, overall and by user.
    An hour's age counts from its start, so the hour being written is never older than an hour."""

    oldest_unshipped_hour: datetime | None
    age_seconds: float
    alert_after_seconds: int
    users: list[UserFreshness]

    @property
    def stale(self) -> bool:
        return self.age_seconds > self.alert_after_seconds

    @property
    def age_text(self) -> str:
        return describe_age(self.age_seconds)


def freshness(now: datetime, users: int | None = None) -> Freshness:
    """The archive's lag now, with the `users` most overdue users (all of them if None)."""
    oldest = HourFile.objects.oldest_unshipped()
    return Freshness(
        oldest_unshipped_hour=oldest,
        age_seconds=hour_age_seconds(oldest, now) if oldest else 0.0,
        alert_after_seconds=settings.ARCHIVE_FRESHNESS_ALERT_SECONDS,
        users=[
            UserFreshness(cloud_id, hour, hour_age_seconds(hour, now))
            for cloud_id, hour in HourFile.objects.oldest_unshipped_by_user(limit=users)
        ],
    )
