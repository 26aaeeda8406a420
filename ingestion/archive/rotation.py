"""Rotation: ship every closed hour file to the archive exactly once, then remove it from disk.

One run (`rotate()`):
1. Register: scan LOG_ROOT's hour directories whose hour is over (plus ROTATE_GRACE_SECONDS) and
   give every data file (late parts included) a manifest row (`HourFile`) whose archive key is
   fixed there and then, before any upload; every retry reuses the row, and so the key.
2. Ship, overlapping with registration: every due row (new, failed and past its backoff, or
   claimed by a run whose lease lapsed) is claimed with a conditional UPDATE of its lease
   (`claimed_until`), so two runs never ship one file at once. In a bounded thread pool, each
   file is then sealed (`hourfiles.seal`: no writer appends to it again; later readings for the hour
   go to the next late part), measured (size, SHA-256, line count, first and last reading;
   malformed lines are counted and shipped as they are), created in the archive only if the key
   is absent, and verified. The row is recorded verified (committed) and only then is the local
   file removed. A different object at the key is a conflict: reported, never overwritten, and
   the local file stays. An unreachable archive marks the row failed with a backoff; nothing
   unverified is ever removed, however many attempts fail.
3. Tidy: verified files still on disk (a run stopped between recording and removing them) are
   removed; a file that reappeared under a shipped name is moved to a new late part and shipped.
4. Clean up: hour directories older than ROTATE_MARKER_RETENTION_HOURS whose files are all
   verified and removed lose their sealed markers and the directory itself.

A crash between any two steps (`Step`) leaves a state the next run completes: the key is in the
row, so a retry writes the same key, and a create that finds an identical object counts as done.

Archive I/O goes through `ingestion.archive.store`.

Compression (ARCHIVE_COMPRESS=gzip) stores `.jl.gz` objects with `Content-Type: application/gzip`
and no `Content-Encoding`, so no client decompresses them on the fly and sizes and checksums
mean the same everywhere. The gzip stream is deterministic (no name, no time stamp), so a retry
produces the same object.

Never call `rotate()` inside a transaction: each manifest update must be committed before the
file it describes is removed.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import msgspec
from botocore.exceptions import BotoCoreError
from django.conf import settings
from django.db.models import Max, QuerySet
from django.utils import timezone

from ingestion import hourfiles
from ingestion.archive.store import (
    READ_CHUNK,
    Archive,
    ArchiveError,
    Body,
    content_type,
    open_archive,
    sha256_of_file,
    stored_sha256,
)
from ingestion.hourfiles import LocalFile
from ingestion.models import HourFile, HourFileQuerySet, HourFileState
from ingestion.records import parse_line
from users.models import EagleUser

logger = logging.getLogger(__name__)

# Files up to this size (every real hour file) are read once and sent from memory; larger ones
# are streamed from disk, their gzip form built in a temporary file first (its size and
# checksum go with the PUT).
SPOOL_BYTES = 8 << 20
GZIP_LEVEL = 6
# Files registered per database round trip, and manifest rows read per page.
BATCH = 500
# Removed local files are marked in the manifest in groups of this many.
DELETE_MARK_BATCH = 200
# Errors kept in a report for the summary; the manifest keeps every one (HourFile.last_error).
MAX_REPORTED_ERRORS = 50


class Step(StrEnum):
    """The steps of shipping one file, in order. `after_step` hooks run after each one."""

    REGISTERED = "registered"  # manifest row made, key fixed
    CLAIMED = "claimed"  # lease taken with a conditional UPDATE
    SEALED = "sealed"  # sealed marker written; no writer appends any more
    MEASURED = "measured"  # size, SHA-256, lines and reading times computed
    UPLOADED = "uploaded"  # conditional create answered (created, or already there)
    VERIFIED = "verified"  # archived object matches size and SHA-256
    RECORDED = "recorded"  # manifest row says verified (committed)
    DELETED = "deleted"  # local file removed


AfterStep = Callable[[Step, str], None]


def _no_hook(step: Step, key: str) -> None:
    return None


# --- Measuring a file --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileStats:
    """What the manifest records of a shipped file (field names are HourFile's)."""

    size: int
    sha256: str
    data_size: int
    data_sha256: str
    content_type: str
    line_count: int
    malformed_lines: int
    first_reading_at: datetime | None
    last_reading_at: datetime | None
    newest_timestamps: dict[str, int | float]

    def as_fields(self) -> dict[str, object]:
        # dataclasses.asdict deep-copies every value: too slow for once per file.
        return {name: getattr(self, name) for name in self.__slots__}


class _RecordTime(msgspec.Struct):
    """The fields of a record the manifest needs; the decoder checks the rest is valid JSON
    without building it."""

    meter_timestamp: int | float | None = None
    record_type: str | None = None


_RECORD_TIMES = msgspec.json.Decoder(_RecordTime)


@dataclass(slots=True)
class _LineTally:
    records: int = 0
    malformed: int = 0
    first: float | None = None
    last: float | None = None
    newest: dict[str, int | float] = field(default_factory=dict)

    def add(self, lines: bytes | memoryview) -> None:
        """Count the records among whole lines; a line that is not a JSON object is malformed."""
        try:
            # The common case, every line a record: one C call, about five times faster than
            # parsing each line into a dict, which is most of a rotation's own CPU time.
            stamped = [
                (record.record_type, record.meter_timestamp)
                for record in _RECORD_TIMES.decode_lines(lines)
            ]
        except msgspec.DecodeError:
            stamped = []
            for line in bytes(lines).split(b"\n"):
                if not line.strip():
                    continue
                try:
                    record = parse_line(line)
                except ValueError:
                    self.malformed += 1
                    continue
                stamped.append((record.get("record_type"), record.get("meter_timestamp")))
        self.records += len(stamped)
        newest = self.newest
        for record_type, stamp in stamped:
            if type(stamp) is not int and type(stamp) is not float:
                continue
            if self.first is None or stamp < self.first:
                self.first = stamp
            if self.last is None or stamp > self.last:
                self.last = stamp
            if type(record_type) is str and stamp > newest.get(record_type, stamp - 1):
                newest[record_type] = stamp


def _measure(chunks: Iterable[bytes], gzip_sink: BinaryIO | None) -> FileStats:
    """One pass over a file's bytes: hashes, line counts and reading times, and the gzip body
    if asked."""
    data_digest = hashlib.sha256()
    stored_digest = hashlib.sha256() if gzip_sink is not None else data_digest
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31) if gzip_sink else None
    data_size = stored_size = 0
    tally = _LineTally()
    tail = b""

    def store(data: bytes) -> None:
        nonlocal stored_size
        if gzip_sink is not None and data:
            gzip_sink.write(data)
            stored_digest.update(data)
            stored_size += len(data)

    for chunk in chunks:
        data_digest.update(chunk)
        data_size += len(chunk)
        if compressor is not None:
            store(compressor.compress(chunk))
        block = tail + chunk if tail else chunk
        whole = block.rfind(b"\n") + 1
        tally.add(memoryview(block)[:whole])
        tail = block[whole:]
    tally.add(tail)
    if compressor is not None:
        store(compressor.flush())
    else:
        stored_size = data_size
    return FileStats(
        size=stored_size,
        sha256=stored_digest.hexdigest(),
        data_size=data_size,
        data_sha256=data_digest.hexdigest(),
        content_type=content_type(gzip_sink is not None),
        line_count=tally.records,
        malformed_lines=tally.malformed,
        first_reading_at=_utc(tally.first),
        last_reading_at=_utc(tally.last),
        newest_timestamps=tally.newest,
    )


def _utc(unix_seconds: float | None) -> datetime | None:
    return datetime.fromtimestamp(unix_seconds, UTC) if unix_seconds is not None else None


@contextmanager
def prepared_body(path: Path, compressed: bool) -> Iterator[tuple[Body, FileStats]]:
    """The bytes to store for a local hour file, and their stats.

    A file of up to SPOOL_BYTES (any real hour file) is read once and sent from memory, which
    costs the client and the server less than streaming it; a larger one is streamed from disk
    (its gzip form through a temporary file), so memory stays bounded whatever the file.
    """
    with open(path, "rb") as source:
        if os.fstat(source.fileno()).st_size <= SPOOL_BYTES:
            data = source.read()
            if not compressed:
                yield data, _measure([data], None)
                return
            sink = io.BytesIO()
            stats = _measure([data], sink)
            yield sink.getvalue(), stats
            return
        chunks = iter(partial(source.read, READ_CHUNK), b"")
        if not compressed:
            stats = _measure(chunks, None)
            source.seek(0)
            yield source, stats
            return
        with tempfile.TemporaryFile() as body:
            stats = _measure(chunks, body)
            body.seek(0)
            yield body, stats


# --- Shipping one file (in a worker thread) ----------------------------------------------------


class Outcome(StrEnum):
    VERIFIED = "verified"
    CONFLICT = "conflict"
    FAILED = "failed"
    EMPTY = "empty"
    MISSING = "missing"


@dataclass(frozen=True, slots=True)
class Job:
    """One claimed file, detached from the ORM for a worker thread."""

    pk: int
    key: str
    path: Path
    compressed: bool
    lease: datetime
    attempts: int
    # The start of the file's hour, and the object's SHA-256 the manifest recorded (a
    # conflict's) or "" if none yet: what an archived object is checked against.
    hour: datetime | None = None
    sha256: str = ""


@dataclass(frozen=True, slots=True)
class Shipment:
    job: Job
    outcome: Outcome
    stats: FileStats | None = None
    error: str = ""
    # The identical object was already at the key (an earlier attempt's upload).
    already_archived: bool = False


def ship_file(job: Job, archive: Archive, after_step: AfterStep = _no_hook) -> Shipment:
    """Seal, measure, create if absent and verify one file. Touches no database row."""
    try:
        if not hourfiles.seal(job.path):
            return settle_without_local_file(job, archive)
        after_step(Step.SEALED, job.key)
        with prepared_body(job.path, job.compressed) as (body, stats):
            after_step(Step.MEASURED, job.key)
            if stats.data_size == 0:
                return Shipment(job, Outcome.EMPTY, stats)
            stored = archive.create(job.key, body, stats.size, stats.sha256, stats.content_type)
            after_step(Step.UPLOADED, job.key)
        already_archived = stored is None
        if stored is None:
            stored = archive.stat(job.key)
            if stored is None:
                raise ArchiveError(f"{job.key} was reported present, then not found")
        sha256 = stored_sha256(archive, job.key, stored)
        if (stored.size, sha256) != (stats.size, stats.sha256):
            error = (
                f"a different object is at {job.key}: {stored.size} bytes, SHA-256 {sha256}; "
                f"the local file makes {stats.size} bytes, SHA-256 {stats.sha256}. "
                "Kept the local file; nothing was overwritten."
            )
            return Shipment(job, Outcome.CONFLICT, stats, error)
        after_step(Step.VERIFIED, job.key)
        return Shipment(job, Outcome.VERIFIED, stats, already_archived=already_archived)
    except FileNotFoundError as exc:
        if not job.path.exists():
            return settle_without_local_file(job, archive)
        return Shipment(job, Outcome.FAILED, error=f"{type(exc).__name__}: {exc}")
    except (ArchiveError, OSError) as exc:
        return Shipment(job, Outcome.FAILED, error=f"{type(exc).__name__}: {exc}")


def settle_without_local_file(job: Job, archive: Archive) -> Shipment:
    """Settle a file gone from the local disk (removed by hand, a lost disk) from the archive.

    The object at its key, read back whole, matching the checksum the archive keeps for it (and
    the manifest's, if it recorded one) and holding readings of the file's hour only, is the file
    as shipped by an earlier attempt: verified, its figures measured from the object. Without an object the file's readings are
    missing: the row says so and an incident names the hour, instead of a retry that can never
    succeed. A read that fails is an outage like any other: tried again later.
    """
    try:
        stored = archive.stat(job.key)
        if stored is None:
            return Shipment(
                job,
                Outcome.MISSING,
                error=f"local file {job.path} is gone and the archive has no object at {job.key}",
            )
        stats = measure_archived(archive, job.key, job.compressed)
    except ArchiveError as exc:
        return Shipment(job, Outcome.FAILED, error=f"{type(exc).__name__}: {exc}")
    expected = {checksum for checksum in (stored.sha256, job.sha256) if checksum}
    if stats.size != stored.size or expected - {stats.sha256}:
        error = (
            f"local file {job.path} is gone, and the object at {job.key} ({stats.size} bytes, "
            f"SHA-256 {stats.sha256}) does not match what the archive or the manifest recorded "
            f"({stored.size} bytes, SHA-256 {', '.join(sorted(expected)) or 'none'}). "
            "Nothing was changed."
        )
        return Shipment(job, Outcome.CONFLICT, error=error)
    if not _within_hour(stats, job.hour):
        error = (
            f"local file {job.path} is gone, and the object at {job.key} holds no readings or "
            f"readings of another hour (from {stats.first_reading_at} to "
            f"{stats.last_reading_at}): not this file. Nothing was changed."
        )
        return Shipment(job, Outcome.CONFLICT, error=error)
    return Shipment(job, Outcome.VERIFIED, stats, already_archived=True)


def _within_hour(stats: FileStats, hour: datetime | None) -> bool:
    first, last = stats.first_reading_at, stats.last_reading_at
    if hour is None or first is None or last is None:
        return False
    return hour <= first and last < hour + hourfiles.HOUR


def measure_archived(archive: Archive, key: str, compressed: bool) -> FileStats:
    """The manifest's figures of an archived object, read back in one pass (gzip inflated)."""
    digest = hashlib.sha256()
    size = 0
    inflater = zlib.decompressobj(31) if compressed else None

    def lines() -> Iterator[bytes]:
        nonlocal size
        with archive.open(key) as stream:
            for chunk in iter(partial(stream.read, READ_CHUNK), b""):
                digest.update(chunk)
                size += len(chunk)
                yield inflater.decompress(chunk) if inflater is not None else chunk
        if inflater is not None:
            yield inflater.flush()

    try:
        stats = _measure(lines(), None)
    except (OSError, BotoCoreError, zlib.error) as exc:
        raise ArchiveError(f"read {key}: {exc}") from exc
    return replace(
        stats,
        size=size,
        sha256=digest.hexdigest(),
        content_type=content_type(compressed),
    )


# --- A rotation run ----------------------------------------------------------------------------


@dataclass
class RotationReport:
    files_found: int = 0
    registered: int = 0
    shipped: int = 0
    already_archived: int = 0
    conflicts: int = 0
    failed: int = 0
    empty: int = 0
    missing: int = 0
    local_deleted: int = 0
    relocated: int = 0
    dirs_removed: int = 0
    bytes_shipped: int = 0
    malformed_lines: int = 0
    stopped: bool = False
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.conflicts and not self.missing

    @property
    def attempted(self) -> int:
        """Files this run took a decision on (a stopped run that attempted none made no progress)."""
        return (
            self.shipped
            + self.already_archived
            + self.failed
            + self.conflicts
            + self.empty
            + self.missing
        )

    def note_error(self, message: str) -> None:
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(message)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def summary(self) -> str:
        parts = [
            f"{self.shipped} shipped ({self.bytes_shipped} bytes)",
            f"{self.already_archived} already archived",
            f"{self.failed} failed",
            f"{self.conflicts} conflicts",
            f"{self.empty} empty",
            f"{self.local_deleted} local files removed",
            f"{self.registered} registered",
            f"{self.relocated} relocated",
            f"{self.dirs_removed} hour directories removed",
        ]
        if self.missing:
            parts.append(f"{self.missing} missing (gone from disk, not in the archive)")
        if self.malformed_lines:
            parts.append(f"{self.malformed_lines} malformed lines shipped as they were")
        if self.stopped:
            parts.append("stopped early: the next run ships the rest")
        return ", ".join(parts)


class Progress(Protocol):
    def expect(self, more: int) -> None: ...

    def shipped(self, shipment: Shipment) -> None: ...


def _is_closed(hour: datetime, now: datetime) -> bool:
    return hour + hourfiles.HOUR + timedelta(seconds=settings.ROTATE_GRACE_SECONDS) <= now


def _hour_dirs(only_hour: datetime | None) -> list[tuple[datetime, Path]]:
    """LOG_ROOT's hour directories, oldest first (names only: a few thousand at most)."""
    if only_hour is not None:
        directory = hourfiles.hour_dir(only_hour)
        return [(only_hour, directory)] if directory.is_dir() else []
    return hourfiles.hour_dirs()


def _found_files(hour: datetime, directory: Path, cloud_id: str | None) -> Iterator[LocalFile]:
    for found in hourfiles.files_in(hour, directory):
        if cloud_id is None or found.cloud_id == cloud_id:
            yield found


def _batches(items: Iterable[LocalFile], size: int) -> Iterator[list[LocalFile]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _closed_files(
    now: datetime, only_hour: datetime | None, cloud_id: str | None
) -> Iterator[list[LocalFile]]:
    for hour, directory in _hour_dirs(only_hour):
        if _is_closed(hour, now):
            yield from _batches(_found_files(hour, directory, cloud_id), BATCH)


@dataclass(frozen=True, slots=True)
class KnownRow:
    pk: int
    key: str
    state: str
    local_deleted_at: datetime | None


def _rows_of(batch: list[LocalFile]) -> dict[tuple[str, int], KnownRow]:
    """Existing manifest rows of a batch of files of one hour, by (cloud_id, part)."""
    rows = HourFile.objects.filter(
        hour=batch[0].hour, cloud_id__in={found.cloud_id for found in batch}
    ).values_list("cloud_id", "part", "pk", "key", "state", "local_deleted_at")
    return {(row[0], row[1]): KnownRow(*row[2:]) for row in rows}


def _new_row(found: LocalFile, user_pk: int | None, now: datetime) -> HourFile:
    return HourFile.new_row(found.cloud_id, found.hour, found.part, found.path, user_pk, now)


def register_files(
    batch: list[LocalFile],
    now: datetime,
    report: RotationReport,
    after_step: AfterStep = _no_hook,
) -> None:
    """Give each file of one hour a manifest row, its archive key fixed now."""
    rows = _rows_of(batch)
    new = [found for found in batch if (found.cloud_id, found.part) not in rows]
    if new:
        users = dict(
            EagleUser.objects.filter(cloud_id__in={found.cloud_id for found in new}).values_list(
                "cloud_id", "pk"
            )
        )
        created = HourFile.objects.bulk_create(
            [_new_row(found, users.get(found.cloud_id), now) for found in new],
            ignore_conflicts=True,
        )
        report.registered += len(created)
        for row in created:
            after_step(Step.REGISTERED, row.key)
    # A file under the name of one already shipped and removed: the tidy phase looks at it.
    reappeared = [
        row.pk
        for row in rows.values()
        if row.state == HourFileState.VERIFIED and row.local_deleted_at is not None
    ]
    if reappeared:
        HourFile.objects.filter(pk__in=reappeared).update(local_deleted_at=None, updated_at=now)


def _reserve_part(cloud_id: str, hour: datetime, part: int) -> Path | None:
    """Claim late part `part` for a moved file: its sealed marker keeps writers off it."""
    target = hourfiles.local_path(cloud_id, hour, part)
    if target.exists():
        return None
    try:
        fd = os.open(hourfiles.sealed_marker(target), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return None
    os.fsync(fd)
    os.close(fd)
    return target


def relocate(path: Path, cloud_id: str, hour: datetime, part: int, now: datetime) -> int:
    """Move a file that reappeared under an already shipped name to a new late part of its hour,
    registered and sealed, so it ships under a key of its own. Returns the new part."""
    hourfiles.seal(path)
    known = HourFile.objects.filter(cloud_id=cloud_id, hour=hour).aggregate(top=Max("part"))
    candidate = max(known["top"] or 0, part) + 1
    while True:
        target = hourfiles.local_path(cloud_id, hour, candidate)
        if target.exists() and os.path.samefile(path, target):
            break  # linked by a run that stopped before removing the old name
        if _reserve_part(cloud_id, hour, candidate) is not None:
            try:
                os.link(path, target)
                break
            except FileExistsError:
                pass
        candidate += 1
    path.unlink()
    hourfiles.fsync_directory(path.parent)
    user_pk = EagleUser.objects.filter(cloud_id=cloud_id).values_list("pk", flat=True).first()
    row = _new_row(LocalFile(cloud_id, hour, candidate, target), user_pk, now)
    row.state, row.sealed_at = HourFileState.SEALED, now
    HourFile.objects.bulk_create([row], ignore_conflicts=True)
    logger.warning("rotation: %s reappeared after shipping; moved to late part %d", path, candidate)
    return candidate


def _scoped(
    rows: HourFileQuerySet, only_hour: datetime | None, cloud_id: str | None
) -> HourFileQuerySet:
    if only_hour is not None:
        rows = rows.filter(hour=only_hour)
    if cloud_id is not None:
        rows = rows.filter(cloud_id=cloud_id)
    return rows


def tidy_verified(
    now: datetime,
    only_hour: datetime | None,
    cloud_id: str | None,
    report: RotationReport,
    after_step: AfterStep = _no_hook,
) -> None:
    """Remove the local copies of verified files; move a file reappeared under a shipped name."""
    removed: list[int] = []
    rows = _scoped(HourFile.objects.awaiting_local_delete(), only_hour, cloud_id)
    for pk, key, local_path, data_sha256, row_cloud_id, hour, part in rows.in_pages(
        "key", "local_path", "data_sha256", "cloud_id", "hour", "part"
    ):
        path = Path(local_path)
        if not data_sha256:
            logger.warning("rotation: %s has no recorded content checksum; left alone", key)
            continue
        try:
            # Sealed first: without its marker (cleaned up) a writer may be appending right now.
            present = hourfiles.seal(path)
            differs = present and path.stat().st_size > 0 and sha256_of_file(path) != data_sha256
        except FileNotFoundError:
            present = differs = False  # the run that shipped it removed it meanwhile
        if differs:
            # Only one run may move it: the one whose conditional update marks the row first.
            if HourFile.objects.mark_deleted_locally([pk], now):
                relocate(path, row_cloud_id, hour, part, now)
                report.relocated += 1
            continue
        if present:
            path.unlink(missing_ok=True)
            after_step(Step.DELETED, key)
            report.local_deleted += 1
        removed.append(pk)
        if len(removed) >= DELETE_MARK_BATCH:
            HourFile.objects.mark_deleted_locally(removed, now)
            removed.clear()
    HourFile.objects.mark_deleted_locally(removed, now)


def _outcome_fields(shipment: Shipment, now: datetime) -> dict[str, object]:
    stats = shipment.stats.as_fields() if shipment.stats else {}
    if shipment.outcome == Outcome.VERIFIED:
        return HourFile.verified_fields(now, stats)
    if shipment.outcome == Outcome.CONFLICT:
        return HourFile.conflict_fields(shipment.error, stats)
    if shipment.outcome == Outcome.MISSING:
        return HourFile.missing_fields(shipment.error)
    return HourFile.failed_fields(now, shipment.error, shipment.job.attempts)


def _remove_local(job: Job, after_step: AfterStep) -> int | None:
    try:
        job.path.unlink(missing_ok=True)
    except OSError as exc:
        # Verified, so nothing is at risk: a later run's tidy phase removes it.
        logger.error("rotation: cannot remove %s: %s", job.path, exc)
        return None
    after_step(Step.DELETED, job.key)
    return job.pk


class _Shipper:
    """The ship phase of one run: claims, the worker pool, and the manifest updates.

    Database work stays on this (the calling) thread and is done in batches: with every worker
    busy in Python, each blocking call here waits for the GIL, so fewer, larger statements keep
    the workers fed. Local files are removed in the pool, after the batch that records them
    verified has committed.
    """

    def __init__(
        self,
        due: QuerySet[HourFile],
        archive: Archive,
        pool: ThreadPoolExecutor,
        concurrency: int,
        report: RotationReport,
        should_stop: Callable[[], bool],
        progress: Progress | None,
        after_step: AfterStep,
    ) -> None:
        self.due = due
        self.last_pk = 0
        self.should_stop = should_stop
        self.archive = archive
        self.pool = pool
        self.concurrency = concurrency
        self.report = report
        self.progress = progress
        self.after_step = after_step
        self.shipping: dict[Future[Shipment], Job] = {}
        self.finished: list[Shipment] = []
        self.removing: set[Future[int | None]] = set()
        self.removed: list[int] = []

    def feed(self) -> bool:
        """Claim and ship the due files not looked at yet (in primary key order, so rows made
        since the last call come next). False if asked to stop."""
        fields = ("key", "local_path", "compressed", "attempts", "hour", "sha256")
        while page := list(
            self.due.filter(pk__gt=self.last_pk).order_by("pk").values_list("pk", *fields)[:BATCH]
        ):
            self.last_pk = page[-1][0]
            for start in range(0, len(page), self.concurrency):
                if self.should_stop():
                    self.report.stopped = True
                    return False
                self.submit(page[start : start + self.concurrency])
                # A batch stays queued behind the running one, so the workers never wait while
                # this thread claims the next.
                self.drain(2 * self.concurrency)
        return True

    def submit(self, candidates: list[tuple[Any, ...]]) -> None:
        """Claim a batch of due files and hand the ones claimed to the pool."""
        lease, claimed = HourFile.objects.claim([row[0] for row in candidates], timezone.now())
        if self.progress is not None:
            self.progress.expect(len(claimed))
        mine = set(claimed)
        for pk, key, local_path, compressed, attempts, hour, sha256 in candidates:
            if pk not in mine:
                continue  # another run has it, or it is no longer due
            self.after_step(Step.CLAIMED, key)
            job = Job(pk, key, Path(local_path), compressed, lease, attempts + 1, hour, sha256)
            future = self.pool.submit(ship_file, job, self.archive, self.after_step)
            self.shipping[future] = job

    def drain(self, in_flight: int) -> None:
        """Wait until at most `in_flight` files are being shipped, recording what finished."""
        while len(self.shipping) > in_flight:
            done, _ = wait(self.shipping, return_when=FIRST_COMPLETED)
            for future in done:
                job = self.shipping.pop(future)
                try:
                    self.finished.append(future.result())
                except Exception as exc:
                    # A bug, not an outage: keep this file from stopping every run, then stop.
                    error = f"unexpected error: {exc!r}"
                    now = timezone.now()
                    failed = HourFile.failed_fields(now, error, job.attempts)
                    HourFile.objects.settle([(job.pk, job.lease, failed)], now)
                    raise
            if len(self.finished) >= self.concurrency:
                self.record()
        self.collect_removals(block=False)

    def record(self) -> None:
        """Record finished files (one statement per kind of outcome); then remove the verified
        ones' local copies, now that the manifest says so."""
        now = timezone.now()
        finished, self.finished = self.finished, []
        settled = [s for s in finished if s.outcome != Outcome.EMPTY]
        held = HourFile.objects.settle(
            [(s.job.pk, s.job.lease, _outcome_fields(s, now)) for s in settled], now
        )
        for shipment in finished:
            job = shipment.job
            if shipment.outcome == Outcome.EMPTY:
                # The row goes first: a file without a row is registered again by the next run.
                if HourFile.objects.forget_empty(job.pk, job.lease):
                    job.path.unlink(missing_ok=True)
                    self.report.empty += 1
            elif job.pk not in held:
                logger.warning(
                    "rotation: lost the lease on %s; its new holder finishes it", job.key
                )
                continue
            else:
                self.count(shipment)
            if self.progress is not None:
                self.progress.shipped(shipment)
        missing = [s.job.pk for s in settled if s.outcome == Outcome.MISSING and s.job.pk in held]
        if missing:
            HourFile.objects.report_missing(missing, now)

    def count(self, shipment: Shipment) -> None:
        job, report = shipment.job, self.report
        if shipment.outcome == Outcome.VERIFIED:
            assert shipment.stats is not None
            self.after_step(Step.RECORDED, job.key)
            if shipment.already_archived:
                report.already_archived += 1
            else:
                report.shipped += 1
                report.bytes_shipped += shipment.stats.size
            report.malformed_lines += shipment.stats.malformed_lines
            self.removing.add(self.pool.submit(_remove_local, job, self.after_step))
        elif shipment.outcome == Outcome.CONFLICT:
            report.conflicts += 1
            report.note_error(shipment.error)
            logger.error("rotation: conflict: %s", shipment.error)
        elif shipment.outcome == Outcome.MISSING:
            report.missing += 1
            report.note_error(shipment.error)
            logger.error("rotation: missing: %s", shipment.error)
        else:
            report.failed += 1
            report.note_error(f"{job.key}: {shipment.error}")
            logger.error(
                "rotation: %s failed (attempt %d): %s", job.key, job.attempts, shipment.error
            )

    def collect_removals(self, block: bool) -> None:
        done = wait(self.removing)[0] if block else {f for f in self.removing if f.done()}
        self.removing -= done
        try:
            for future in done:
                if (pk := future.result()) is not None:
                    self.removed.append(pk)
                    self.report.local_deleted += 1
        finally:
            if block or len(self.removed) >= DELETE_MARK_BATCH:
                HourFile.objects.mark_deleted_locally(self.removed, timezone.now())
                self.removed = []

    def finish(self) -> None:
        """Wait for every file in flight, record it, and remove the verified ones' copies."""
        self.drain(0)
        if self.finished:
            self.record()
        self.collect_removals(block=True)


def remove_old_dirs(now: datetime, only_hour: datetime | None, report: RotationReport) -> None:
    """Drop the sealed markers and the directory of hours long shipped (ROTATE_MARKER_RETENTION_HOURS)."""
    keep = timedelta(hours=settings.ROTATE_MARKER_RETENTION_HOURS)
    for hour, directory in _hour_dirs(only_hour):
        if hour + hourfiles.HOUR + keep > now:
            break  # oldest first: every later directory is younger still
        with os.scandir(directory) as entries:
            if any(not entry.name.endswith(hourfiles.SEALED_SUFFIX) for entry in entries):
                continue  # a data file or something unknown: not ours to remove
        if (
            HourFile.objects.filter(hour=hour)
            .exclude(state=HourFileState.VERIFIED, local_deleted_at__isnull=False)
            .exists()
        ):
            continue
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.endswith(hourfiles.SEALED_SUFFIX):
                    os.unlink(entry.path)
        try:
            directory.rmdir()
        except OSError as exc:
            # A writer just put a late reading there: shipped by a later run as a new part.
            logger.info("rotation: kept %s: %s", directory, exc)
            continue
        report.dirs_removed += 1


def rotate(
    *,
    hour: datetime | None = None,
    cloud_id: str | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    progress: Progress | None = None,
    after_step: AfterStep = _no_hook,
    concurrency: int | None = None,
) -> RotationReport:
    """Ship every closed hour file (or only those of `hour` and/or `cloud_id`). See the module
    docstring for the protocol. `should_stop` is polled between batches of files: a stopped run
    finishes and records the files in flight.

    Registering a directory's files and shipping them overlap: each batch of rows made is fed
    to the pool at once, so the database work hides behind the uploads.
    """
    if cloud_id is not None:
        cloud_id = hourfiles.checked_cloud_id(cloud_id)
    only_hour = hourfiles.hour_floor(hour) if hour is not None else None
    concurrency = concurrency or settings.ROTATE_CONCURRENCY
    now = timezone.now()
    report = RotationReport()
    archive = open_archive()
    due = _scoped(HourFile.objects.due(now), only_hour, cloud_id)
    with ThreadPoolExecutor(concurrency, thread_name_prefix="rotate") as pool:
        shipper = _Shipper(
            due, archive, pool, concurrency, report, should_stop, progress, after_step
        )
        for batch in _closed_files(now, only_hour, cloud_id):
            report.files_found += len(batch)
            register_files(batch, now, report, after_step)
            if not shipper.feed():
                break
        else:
            shipper.finish()
            tidy_verified(now, only_hour, cloud_id, report, after_step)
            # Files moved to new late parts by the tidy phase, and any other due file.
            shipper.feed()
        shipper.finish()
    if cloud_id is None and not report.stopped:
        remove_old_dirs(timezone.now(), only_hour, report)
    logger.info("rotation: %s", report.summary())
    return report


# --- Dry run -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlannedFile:
    key: str
    path: Path
    size: int | None  # None: the local file is missing
    state: str  # the manifest state, or "new"


def plan_rotation(
    *, hour: datetime | None = None, cloud_id: str | None = None
) -> Iterator[PlannedFile]:
    """What `rotate()` would ship now, changing nothing."""
    if cloud_id is not None:
        cloud_id = hourfiles.checked_cloud_id(cloud_id)
    only_hour = hourfiles.hour_floor(hour) if hour is not None else None
    now = timezone.now()
    for batch in _closed_files(now, only_hour, cloud_id):
        rows = _rows_of(batch)
        for found in batch:
            row = rows.get((found.cloud_id, found.part))
            if row is not None and row.state in (HourFileState.VERIFIED, HourFileState.CONFLICT):
                continue
            try:
                size = found.path.stat().st_size
            except FileNotFoundError:
                continue
            key = row.key if row else _new_row(found, None, now).key
            yield PlannedFile(key, found.path, size, row.state if row else "new")
    # Every due file still on disk was listed by the scan above; these cannot be shipped.
    due = _scoped(HourFile.objects.due(now), only_hour, cloud_id)
    for _, key, local_path, state in due.in_pages("key", "local_path", "state"):
        if not Path(local_path).exists():
            yield PlannedFile(key, Path(local_path), None, state)
