"""Hour files: where they live, how they are written, sealed, scanned and read back.

Local:   LOG_ROOT/[Y-M-D-H]/iseif-rainforest-[cloud_id]-[Y-M-D-H].jl
Archive: ARCHIVE_PREFIX/[cloud_id]/YYYY/MM/DD/iseif-rainforest-[cloud_id]-[Y-M-D-H].jl

Hours are UTC hours of the reading's own meter time. A reading that arrives after its hour was
sealed goes to a late part of that hour: `…-[Y-M-D-H].late-1.jl`, `.late-2.jl`, and so on.

The sealing protocol, shared by every writer (poller, push) and the rotation:
- A writer appends to a file only while holding a shared flock on it, and only after checking,
  under that lock, that the file's sealed marker (`<name>.sealed`) does not exist.
- `seal()` takes an exclusive flock on the file, creates the marker durably and releases the lock.
  From then on no writer appends: any reading for that hour goes to the next late part
  (`….late-1.jl`, `….late-2.jl`, …), itself sealed and shipped the same way.
- Markers stay after the data file is shipped and removed, so a late reading never recreates a
  shipped file under its old name.

A file may be empty: a poller creates its users' files of the next hour before it starts
(`HourFileWriter.prepare`), and the rotation drops a file that stayed empty.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import functools
import logging
import os
import re
import resource
import time
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings

from ingestion.records import Reading, parse_line
from users.cloud_ids import CLOUD_ID_CHARACTERS, normalise_cloud_id

HOUR = timedelta(hours=1)
HOUR_FORMAT = "%Y-%m-%d-%H"
SEALED_SUFFIX = ".sealed"
NAME_PREFIX = "iseif-rainforest-"
# Enough of a file's end to hold the lines of the last ticks, whatever the record types.
TAIL_BYTES = 16 * 1024
# File names a writer remembers (cloud id, hour, part -> path and sealed marker): a few hours of
# a large fleet. Building a Path per line cost more than writing the line.
NAMES_KEPT = 200_000
FILE_NAME = re.compile(
    rf"^{NAME_PREFIX}(?P<cloud_id>{CLOUD_ID_CHARACTERS})"
    r"-(?P<hour>\d{4}-\d{2}-\d{2}-\d{2})"
    r"(?:\.late-(?P<part>[1-9]\d*))?\.jl(?P<gz>\.gz)?\Z"
)


def checked_cloud_id(cloud_id: str) -> str:
    """The cloud_id as it names files and keys (lower case), or ValueError."""
    return normalise_cloud_id(cloud_id)


def hour_floor(moment: datetime) -> datetime:
    """The start of the UTC hour that holds `moment`."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: hours are sliced in UTC and need an aware time")
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def hour_of_timestamp(unix_seconds: float) -> datetime:
    return hour_floor(datetime.fromtimestamp(unix_seconds, UTC))


@functools.lru_cache(maxsize=256)
def hour_label(hour: datetime) -> str:
    # Cached: a poller names thousands of files of the same few hours at the top of an hour.
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
    return f"{NAME_PREFIX}{checked_cloud_id(cloud_id)}-{hour_label(hour)}{late}.jl{gz}"


def hour_dir(hour: datetime, root: Path | None = None) -> Path:
    return Path(root or settings.LOG_ROOT) / hour_label(hour)


def local_path(cloud_id: str, hour: datetime, part: int = 0, root: Path | None = None) -> Path:
    return hour_dir(hour, root) / file_name(cloud_id, hour, part)


def sealed_marker(path: Path) -> Path:
    """The marker whose presence means `path` is sealed: no writer may append to it any more."""
    return path.with_name(path.name + SEALED_SUFFIX)


def archive_prefix(cloud_id: str) -> str:
    """The archive prefix under which every object of `cloud_id` is stored (no trailing slash)."""
    cloud_id = checked_cloud_id(cloud_id)
    return f"{settings.ARCHIVE_PREFIX}/{cloud_id}" if settings.ARCHIVE_PREFIX else cloud_id


def archive_key(cloud_id: str, hour: datetime, part: int = 0, compressed: bool = False) -> str:
    hour = hour_floor(hour)
    name = file_name(cloud_id, hour, part, compressed)
    return f"{archive_prefix(cloud_id)}/{hour:%Y/%m/%d}/{name}"


def parse_file_name(name: str) -> tuple[str, datetime, int]:
    """(cloud_id, hour, part) from an hour file's name; ValueError for anything else."""
    match = FILE_NAME.match(name)
    if not match:
        raise ValueError(f"not an hour file name: {name!r}")
    return match["cloud_id"], parse_hour_label(match["hour"]), int(match["part"] or 0)


logger = logging.getLogger(__name__)

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_syncfs = getattr(_libc, "syncfs", None)


def sync_filesystem(any_path: Path) -> None:
    """Make every write on the file system that holds `any_path` durable, in one system call."""
    fd = os.open(any_path, os.O_RDONLY)
    try:
        if _syncfs is None or _syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_sealed(path: Path) -> bool:
    return sealed_marker(path).exists()


@dataclass(frozen=True, slots=True)
class LocalFile:
    """One hour file (or late part) found on local disk."""

    cloud_id: str
    hour: datetime
    part: int
    path: Path


def files_in(hour: datetime, directory: Path) -> Iterator[LocalFile]:
    """The hour files of one hour directory, every user's and every part. Sealed markers are
    skipped; anything else that is not an hour file of that hour is logged and left alone."""
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.endswith(SEALED_SUFFIX):
                continue
            try:
                cloud_id, file_hour, part = parse_file_name(entry.name)
            except ValueError:
                continue
            if file_hour != hour or entry.name.endswith(".gz") or not entry.is_file():
                logger.warning("%s is not an hour file of %s, left alone", entry.path, hour)
                continue
            yield LocalFile(cloud_id, hour, part, Path(entry.path))


def part_chain(cloud_id: str, hour: datetime, root: Path | None = None) -> Iterator[Path]:
    """The parts of one user-hour that writers opened, in order, on disk or shipped and removed.

    A writer opens part N+1 only after part N was sealed, and markers outlive shipped files, so
    the chain ends at the first part with neither a file nor a sealed marker.
    """
    part = 0
    while True:
        path = local_path(cloud_id, hour, part, root)
        if not path.exists() and not sealed_marker(path).exists():
            return
        yield path
        part += 1


def local_files_of(cloud_id: str, root: Path | None = None) -> list[Path]:
    """Every local file named for `cloud_id`: the files and late parts of all its hours, and
    their sealed markers."""
    cloud_id = checked_cloud_id(cloud_id)
    # A cloud_id is hexadecimal, so the dash after it ends it: no other user's file matches.
    return sorted(Path(root or settings.LOG_ROOT).glob(f"*/{NAME_PREFIX}{cloud_id}-*"))


def parts_on_disk(cloud_id: str, hour: datetime, root: Path | None = None) -> list[Path]:
    """The data files of one user-hour on local disk (the file and its late parts), in order."""
    directory = hour_dir(hour, root)
    prefix = f"{NAME_PREFIX}{checked_cloud_id(cloud_id)}-{hour_label(hour)}"
    return sorted(directory.glob(f"{prefix}*.jl"))


def hour_dirs(root: Path | None = None) -> list[tuple[datetime, Path]]:
    """The hour directories under LOG_ROOT (or `root`), oldest first; other entries are ignored."""
    found = []
    try:
        entries = list(os.scandir(root or settings.LOG_ROOT))
    except FileNotFoundError:
        return []
    for entry in entries:
        try:
            hour = parse_hour_label(entry.name)
        except ValueError:
            continue
        if entry.is_dir():
            found.append((hour, Path(entry.path)))
    return sorted(found)


def seal(path: Path) -> bool:
    """Seal an hour file so that no writer appends to it again. False if there is no such file.

    Idempotent: sealing a sealed file changes nothing.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        marker = sealed_marker(path)
        if not marker.exists():
            marker_fd = os.open(marker, os.O_WRONLY | os.O_CREAT, 0o644)
            os.fsync(marker_fd)
            os.close(marker_fd)
            os.fsync(fd)
            fsync_directory(path.parent)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    return True


def _append_whole(fd: int, data: bytes) -> None:
    """Append all of `data` or nothing: a short write (disk full) is cut back and raised.

    A file whose last line was torn by a crash gets a newline first, so the fragment stays one
    malformed line and the new lines stay whole.
    """
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        data = b"\n" + data
    try:
        written = os.write(fd, data)
    except OSError:
        _cut_back(fd, size)
        raise
    if written != len(data):
        _cut_back(fd, size)
        raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes): disk full?")


def _cut_back(fd: int, size: int) -> None:
    try:
        os.ftruncate(fd, size)
    except OSError as exc:
        # The write error is what the caller must see; this one only explains a possible tail.
        logger.error("cannot cut a failed append back to %d bytes: %s", size, exc)


# File descriptors left for everything but hour files (database, Redis, logs, a push's request).
DESCRIPTORS_RESERVED = 256


def raise_open_file_limit() -> None:
    """Raise this process's soft limit of open files to its hard limit (allowed unprivileged):
    a poller keeps its users' hour files open, and their connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def open_files_allowed(reserved: int = DESCRIPTORS_RESERVED) -> int:
    """Hour files a writer may keep open: INGEST_OPEN_FILES, within what the process's limit of
    open files leaves after `reserved` descriptors for everything else."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return settings.INGEST_OPEN_FILES
    return max(8, min(settings.INGEST_OPEN_FILES, soft - reserved))


@dataclass(frozen=True, slots=True)
class WrittenFile:
    """Where a batch of lines went: the file, its hour and part, and how many lines."""

    cloud_id: str
    hour: datetime
    part: int
    path: Path
    lines: int


@dataclass(slots=True)
class AppendResult:
    written: list[WrittenFile] = field(default_factory=list)
    unwritten: list[Reading] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # The line written for each reading written, by the reading's id(): what the latest-reading
    # cache stores, without encoding the reading again.
    lines: dict[int, bytes] = field(default_factory=dict)


class HourFileWriter:
    """Appends readings to their hour files, with a bounded pool of open files (opening a file
    costs more than the write: a poller keeps every file of its users open while it can).

    Lines reach the operating system at once (unbuffered `os.write`); `sync()` makes everything
    written since the last call durable, so a crash loses at most what came after it. A batch that
    cannot be written (disk full, I/O error) raises OSError and leaves its file as it was, so the
    caller can keep those readings and try again.
    """

    def __init__(self, root: Path | None = None, max_open: int | None = None) -> None:
        self.root = Path(root or settings.LOG_ROOT)
        self.max_open = max_open or open_files_allowed()
        # Open files by path (as a string), least recently written first, with their hour (unix
        # hours).
        self._open: OrderedDict[str, tuple[int, int]] = OrderedDict()
        # Open files per hour: those of hours past their sealing are closed at the next sync.
        self._open_per_hour: Counter[int] = Counter()
        self._dirty = False
        self._known_dirs: set[Path] = set()
        self._names: dict[tuple[str, int, int], tuple[Path, str, str]] = {}
        self._hours: dict[int, datetime] = {}

    def __enter__(self) -> HourFileWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def open_files(self) -> int:
        return len(self._open)

    def append(self, readings: Iterable[Reading]) -> AppendResult:
        """Append each reading to the hour file of its own meter time (UTC), in the order given.

        Files are written independently: readings whose file could not be written come back in
        `AppendResult.unwritten`, with the error, and nothing of them is in any file.
        """
        batches: dict[tuple[str, int], list[Reading]] = defaultdict(list)
        for reading in readings:
            batches[(reading.cloud_id, reading.meter_timestamp // 3600)].append(reading)
        result = AppendResult()
        for (cloud_id, hour_number), batch in batches.items():
            hour = self._hours.get(hour_number)
            if hour is None:
                hour = self._hours[hour_number] = hour_of_timestamp(hour_number * 3600)
            lines = [reading.to_line() for reading in batch]
            try:
                path, part = self._write(cloud_id, hour_number, b"".join(lines))
            except OSError as exc:
                logger.error("cannot append %d readings for %s: %s", len(batch), cloud_id, exc)
                result.unwritten.extend(batch)
                result.errors.append(f"{cloud_id} {hour_label(hour)}: {exc}")
            else:
                result.written.append(WrittenFile(cloud_id, hour, part, path, len(batch)))
                for reading, line in zip(batch, lines, strict=True):
                    result.lines[id(reading)] = line
        return result

    def _write(self, cloud_id: str, hour_number: int, data: bytes) -> tuple[Path, int]:
        part = 0
        while True:
            path, name, marker = self._where(cloud_id, hour_number, part)
            found = self._open.get(name)
            if found is not None:
                fd = found[0]
                self._open.move_to_end(name)
            elif os.path.exists(marker):
                # Checked before opening too, so that a shipped and removed file is not recreated
                # (an open file is checked under its lock below, before every append).
                part += 1
                continue
            else:
                fd = self._fd(path, name, hour_number)
            # Exclusive, so that a short write can be undone without tearing another writer's line.
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if not os.path.exists(marker):
                    _append_whole(fd, data)
                    self._dirty = True
                    return path, part
                # Sealed between the check and the lock. Even if empty (recreated by the open,
                # or cut back after a failed append), the file is left where it is: a rotation
                # has it registered and claimed, and settles it (an empty file's row is dropped).
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            # Sealed under us (or before): this file is closed for good, try the next late part.
            self._close(name)
            part += 1

    def prepare(self, cloud_ids: Iterable[str], hour_number: int) -> None:
        """Create, empty, the files of an hour to come (unix hours) for these cloud ids, so that
        its first tick only opens them: creating a file cost a poller more than its fetch, and
        at the top of an hour it would create one for every user at once. A file that exists or
        was sealed is left alone; one that stays empty is dropped by the rotation."""
        if hour_number not in self._hours:
            self._hours[hour_number] = hour_of_timestamp(hour_number * 3600)
        for cloud_id in cloud_ids:
            path, name, marker = self._where(cloud_id, hour_number, 0)
            if name in self._open or os.path.exists(marker):
                continue
            self._make_directory(path.parent)
            try:
                os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            except FileExistsError:
                continue

    def _where(self, cloud_id: str, hour_number: int, part: int) -> tuple[Path, str, str]:
        """The file of a cloud id's hour (unix hours) and part: its path, as a string, and its
        sealed marker's."""
        key = (cloud_id, hour_number, part)
        found = self._names.get(key)
        if found is None:
            if len(self._names) >= NAMES_KEPT:
                self._names.clear()
            path = local_path(cloud_id, self._hours[hour_number], part, self.root)
            found = self._names[key] = (path, str(path), str(sealed_marker(path)))
        return found

    def _fd(self, path: Path, name: str, hour_number: int) -> int:
        self._make_directory(path.parent)
        fd = os.open(name, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        self._open[name] = (fd, hour_number)
        self._open_per_hour[hour_number] += 1
        while len(self._open) > self.max_open:
            self._close(next(iter(self._open)))
        return fd

    def _make_directory(self, directory: Path) -> None:
        if directory not in self._known_dirs:
            directory.mkdir(parents=True, exist_ok=True)
            self._known_dirs.add(directory)

    def _close(self, name: str) -> None:
        found = self._open.pop(name, None)
        if found is not None:
            fd, hour_number = found
            self._open_per_hour[hour_number] -= 1
            if not self._open_per_hour[hour_number]:
                del self._open_per_hour[hour_number]
            os.close(fd)

    def sync(self) -> None:
        """Make every line appended so far durable (file data and new directory entries), and
        close the files of hours the rotation has sealed by now (ROTATE_GRACE_SECONDS after
        their end): a shipped file held open would keep its disk space."""
        if self._dirty:
            self.root.mkdir(parents=True, exist_ok=True)
            sync_filesystem(self.root)
            self._dirty = False
        sealed_before = (time.time() - settings.ROTATE_GRACE_SECONDS) // 3600
        if any(hour_number < sealed_before for hour_number in self._open_per_hour):
            for name in [name for name, (_, hour) in self._open.items() if hour < sealed_before]:
                self._close(name)

    def close(self) -> None:
        self.sync()
        while self._open:
            self._close(next(iter(self._open)))


@dataclass(slots=True)
class MalformedLine:
    path: Path
    line_number: int
    error: str


def iter_records(
    path: Path, malformed: list[MalformedLine] | None = None
) -> Iterator[dict[str, Any]]:
    """The records of a local hour file, in file order.

    A line that is not a JSON object (a torn last line after a crash, a disk error) is skipped and,
    when `malformed` is given, reported there; it never stops the rest of the file from being read.
    """
    with open(path, "rb") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield parse_line(line)
            except ValueError as exc:
                logger.warning("%s:%d: malformed record skipped: %s", path, line_number, exc)
                if malformed is not None:
                    malformed.append(MalformedLine(path, line_number, str(exc)))


def read_tail_records(path: Path | str, max_bytes: int = TAIL_BYTES) -> list[dict[str, Any]]:
    """The whole records among the last `max_bytes` of an hour file, in file order.

    A torn or malformed line (a crash mid-write) is skipped: it never hides the lines around it.
    """
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        start = max(0, size - max_bytes)
        handle.seek(start)
        data = handle.read()
    lines = data.split(b"\n")
    if start > 0:
        lines = lines[1:]
    records = []
    for line in lines:
        if line.strip():
            try:
                records.append(parse_line(line))
            except ValueError:
                continue
    return records
