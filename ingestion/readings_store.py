"""The SQL readings store: sealed hour files bulk-loaded into PostgreSQL's `readings` table.

Optional (`READINGS_STORE=postgres`) and PostgreSQL only (`enabled()`); the hour files and the
archive stay the record either way, and the API reads files wherever the table has not got an hour.

The table
    `readings` (migration 0003) has the typed columns of `records.TYPED_COLUMNS`, primary key
    (cloud_id, record_type, meter_time), and is range-partitioned by UTC day of meter_time, one
    partition per day named `readings_pYYYYMMDD`. `ensure_partitions` makes them, for the days a
    load needs and PARTITIONS_AHEAD_DAYS ahead of today; `drop_expired_partitions` drops whole
    partitions of days past READINGS_RETENTION_DAYS and forgets their loads, so the API reads those
    days from files again. Both hold an advisory lock, so two workers never race on the catalog.

What is loaded
    Hour files with a manifest row that the rotation has sealed (`HourFile.sealed_at`) and no
    `LoadedHourFile` yet: the local copy once its sealed marker exists, else the archived object
    once verified. A file that is neither (sealing is under way) waits for a later pass.

One load (`load_hour`): one hour's due files, one transaction, one connection
    1. SELECT pg_try_advisory_xact_lock(LOAD_LOCK, <hours since epoch>): if another worker is
       loading this hour, skip it; then the hour's due files are read again under the lock.
    2. The files are converted, when COPY asks for more, into COPY text rows (`record_lines`, the
       conversion the Parquet export uses too) and streamed by `copy_expert` from a file-like
       object; no row-by-row INSERT. Only readings of the hour itself are streamed (a load writes
       nothing outside the hour it holds the lock of), each once (a repeated line, a reading in
       two parts of a household's hour).
    3. When the table has no reading of the load's households in the hour (the usual case: an
       hour loaded for the first time; one primary-key probe per household and record type),
       COPY readings FROM STDIN, straight into the table, inside a savepoint. If a reading is
       there already after all (a line in another household's file), the unique violation rolls
       back the savepoint only, and the load goes as in 4.
    4. Otherwise COPY readings_staging FROM STDIN, a temporary table (ON COMMIT DELETE ROWS) with
       the table's columns and no key, then INSERT INTO readings SELECT * FROM readings_staging
       ON CONFLICT DO NOTHING: a reading already there stays exactly once.
    5. INSERT the `ReadingsLoad` (files, rows read and inserted, malformed lines, duration) and one
       `LoadedHourFile` per file, then COMMIT: the rows and the record of them land together.
    A file that cannot be read is left out (and counted); any other failure rolls the load back
    and records it, with its error, on its own.

A pass (`run_pass`, scheduled every READINGS_LOAD_INTERVAL minutes) keeps the partitions, then
loads every pending hour, oldest first, with READINGS_LOAD_WORKERS threads, each over its own
database connection: one converts files while another's statements run in the server.
"""

from __future__ import annotations

import functools
import gzip
import logging
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from queue import Empty, SimpleQueue
from typing import Any

import orjson
from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, connections, transaction
from django.db.models import Count, Min, Q, QuerySet
from django.utils import timezone

from ingestion import hourfiles
from ingestion.archive.store import Archive, ArchiveError, open_archive
from ingestion.models import HourFile, HourFileState, LoadedHourFile, ReadingsLoad
from ingestion.parquet_query import PERCENTILES, FleetBucket
from ingestion.record_lines import VALUE_FIELDS, VALUES, decode_lines
from ingestion.records import iso_utc

logger = logging.getLogger(__name__)

TABLE = "readings"
STAGING = "readings_staging"
PARTITION_PREFIX = "readings_p"
METER_TIME_INDEX = "readings_meter_time_brin"
PARTITIONS_AHEAD_DAYS = 2
# Advisory lock classes (first key of pg_*advisory_xact_lock(int, int)): "RL" + 1, 2.
LOAD_LOCK = 0x524C0001
PARTITION_LOCK = 0x524C0002
# Files in one load (one transaction); an hour with more is loaded in several.
MAX_FILES_PER_LOAD = 2000
COPY_READ_BYTES = 1 << 20

# The table's columns without its key: a load that may repeat readings already in the table goes
# through it (module doc, "One load", 4).
_CREATE_STAGING = (
    f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGING} (LIKE {TABLE}) ON COMMIT DELETE ROWS"
)
_MOVE = f"INSERT INTO {TABLE} SELECT * FROM {STAGING} ON CONFLICT DO NOTHING"
UNIQUE_VIOLATION = "23505"
_HAS_READINGS = f"""
SELECT EXISTS (SELECT FROM {TABLE} WHERE cloud_id = ANY(%s) AND record_type = ANY(%s)
    AND meter_time >= %s AND meter_time < %s)
"""


def enabled() -> bool:
    """Whether the store is on: asked for, and the database is PostgreSQL."""
    return settings.READINGS_STORE == "postgres" and connection.vendor == "postgresql"


def off_reason() -> str:
    """Why the store is off ("" when it is on)."""
    if settings.READINGS_STORE != "postgres":
        return "READINGS_STORE is not set to postgres."
    if connection.vendor != "postgresql":
        return (
            f"READINGS_STORE=postgres needs PostgreSQL, and the database is {connection.vendor}: "
            "the readings store stays off and everything is read from hour files."
        )
    return ""


# --- Partitions ---------------------------------------------------------------------------------


def partition_name(day: date) -> str:
    return f"{PARTITION_PREFIX}{day:%Y%m%d}"


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def partitions() -> list[date]:
    """The days that have a partition, oldest first."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass",
            [TABLE],
        )
        names = [name for (name,) in cursor.fetchall()]
    days = []
    for name in names:
        try:
            days.append(datetime.strptime(name.removeprefix(PARTITION_PREFIX), "%Y%m%d").date())
        except ValueError:
            # An analyst's own partition (or anything else attached): not the store's to manage.
            continue
    return sorted(days)


def ensure_partitions(first: date, last: date) -> list[str]:
    """Make the partitions of the days first..last that are missing; returns those made."""
    wanted = []
    day = first
    while day <= last:
        wanted.append(day)
        day += timedelta(days=1)
    existing = set(partitions())
    missing = [day for day in wanted if day not in existing]
    made: list[str] = []
    if not missing:
        return made
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, 0)", [PARTITION_LOCK])
        for day in missing:
            cursor.execute("SELECT to_regclass(%s)", [partition_name(day)])
            if cursor.fetchone()[0] is not None:
                continue
            cursor.execute(
                f"CREATE TABLE {partition_name(day)} PARTITION OF {TABLE} "
                "FOR VALUES FROM (%s) TO (%s)",
                [_day_start(day), _day_start(day + timedelta(days=1))],
            )
            made.append(partition_name(day))
    if made:
        logger.info("readings store: partitions made: %s", ", ".join(made))
    return made


def retention_start(now: datetime) -> datetime | None:
    """The first instant the table keeps (the start of a UTC day), or None when it keeps all."""
    if not settings.READINGS_RETENTION_DAYS:
        return None
    cutoff = now - timedelta(days=settings.READINGS_RETENTION_DAYS)
    return _day_start(cutoff.astimezone(UTC).date())


def drop_expired_partitions(now: datetime) -> list[str]:
    """Drop whole partitions of days before the retention start, and forget their loads."""
    start = retention_start(now)
    if start is None:
        return []
    expired = [day for day in partitions() if _day_start(day) < start]
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, 0)", [PARTITION_LOCK])
            for day in expired:
                cursor.execute(f"DROP TABLE IF EXISTS {partition_name(day)}")
        LoadedHourFile.objects.filter(hour_file__hour__lt=start).delete()
        ReadingsLoad.objects.filter(hour__lt=start).delete()
    dropped = [partition_name(day) for day in expired]
    if dropped:
        logger.info("readings store: partitions dropped: %s", ", ".join(dropped))
    return dropped


def keep_partitions(now: datetime) -> tuple[list[str], list[str]]:
    """Partitions from today to PARTITIONS_AHEAD_DAYS ahead exist; expired ones are gone."""
    today = now.astimezone(UTC).date()
    made = ensure_partitions(today, today + timedelta(days=PARTITIONS_AHEAD_DAYS))
    return made, drop_expired_partitions(now)


# --- What is due --------------------------------------------------------------------------------


def due_files(
    now: datetime, since: datetime | None = None, until: datetime | None = None
) -> QuerySet[HourFile]:
    """Manifest rows of sealed hour files not yet loaded, within the retention and [since, until)."""
    rows = HourFile.objects.filter(sealed_at__isnull=False, store_load__isnull=True)
    start = retention_start(now)
    if since is not None:
        start = max(start, since) if start else since
    if start is not None:
        rows = rows.filter(hour__gte=hourfiles.hour_floor(start))
    if until is not None:
        rows = rows.filter(hour__lt=until)
    return rows.order_by()


@dataclass(frozen=True, slots=True)
class PendingHour:
    hour: datetime
    files: int


def pending_hours(
    now: datetime, since: datetime | None = None, until: datetime | None = None
) -> list[PendingHour]:
    """Hours with sealed files not yet loaded, oldest first, with how many files each."""
    rows = (
        due_files(now, since, until)
        .values("hour")
        .annotate(files=Count("pk"))
        .order_by("hour")
        .values_list("hour", "files")
    )
    return [PendingHour(hour, files) for hour, files in rows]


@dataclass(frozen=True, slots=True)
class Lag:
    oldest_pending: datetime | None
    seconds: float
    failures_last_day: int
    last_loaded_at: datetime | None


def lag(now: datetime | None = None) -> Lag:
    """How far behind the store is: since the end of the oldest hour with a sealed file not loaded
    (0 when none), the failed loads of the last 24 hours, and when the last good load began."""
    now = now or timezone.now()
    oldest = due_files(now).aggregate(oldest=Min("hour"))["oldest"]
    seconds = max(0.0, (now - (oldest + hourfiles.HOUR)).total_seconds()) if oldest else 0.0
    failures = ReadingsLoad.objects.exclude(error="").filter(
        started_at__gte=now - timedelta(days=1)
    )
    last = ReadingsLoad.objects.filter(error="").order_by("-started_at").first()
    return Lag(oldest, seconds, failures.count(), last.started_at if last else None)


# --- Converting hour files to COPY rows ---------------------------------------------------------

# The table's columns, in order: those of the record format, typed (docs/readings-store.md).
COLUMNS = (
    "cloud_id",
    "record_type",
    "meter_time",
    "received_at",
    "source",
    *VALUE_FIELDS,
    "format_version",
    "raw",
)
NULL = "\\N"
# COPY text format: a backslash, tab, newline or carriage return in a value is escaped.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
# Meter times (Unix seconds) a reading may have, and integers an integer column can hold.
MAX_TIMESTAMP = 2**40
MAX_INTEGER = 2**31
TAB = "\t"
# What COPY text needs escaped in a value.
_SPECIAL = re.compile(r"[\\\t\n\r\x00]")
_NULLS = (NULL,) * len(VALUE_FIELDS)
# Per record type: (position among VALUE_FIELDS, name) of the values it carries.
_TYPE_VALUES = {
    kind: [(VALUE_FIELDS.index(name), name) for name in names]
    for kind, (names, _) in VALUES.items()
}


def _escaped(cell: str) -> str:
    if "\x00" in cell:
        raise ValueError("a NUL character, which PostgreSQL text cannot hold")
    return cell.translate(_COPY_ESCAPES)


def _cell(value: float | int | str | None) -> str:
    """A value field as COPY text; strings are escaped with their row (`copy_row`)."""
    if value is None:
        return NULL
    if value.__class__ is float:
        return repr(value)
    if value.__class__ is int:
        # `__class__ is` (which keeps bool out) does not narrow the union for mypy.
        if not -MAX_INTEGER < value < MAX_INTEGER:  # type: ignore[operator]
            raise ValueError(f"{value} does not fit an integer column")
        return str(value)
    return value  # type: ignore[return-value]  # a str by now, as above


def _instant(text: str) -> str:
    """An ISO 8601 time with an offset, in a form PostgreSQL reads; ValueError otherwise (one bad
    time must not fail the COPY of a whole hour)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"received_at {text[:40]!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise ValueError(f"received_at {text[:40]!r} has no UTC offset")
    # The record format's own form (2026-03-08T10:00:05.120Z) goes as it is.
    return text if text.endswith("Z") and text[10] == "T" and text[4] == "-" else moment.isoformat()


@functools.lru_cache(maxsize=4096)
def _plain(text: str) -> bool:
    """Whether a string goes into COPY text as it is. Cached: a load repeats the same few
    households and sources on every row."""
    return _SPECIAL.search(text) is None


def copy_row(record: Any, keep_raw: bool, meter_time: str) -> str:
    """One decoded reading (`record_lines.RecordLine`) as a line of COPY text for the table, with
    its meter time already as text; ValueError if it cannot be a row of the table."""
    received_at, source, version = record.received_at, record.source, record.format_version
    if received_at is None or source is None or version is None:
        raise ValueError("received_at, source and format_version are required")
    if not 0 <= record.meter_timestamp < MAX_TIMESTAMP:
        raise ValueError(f"meter_timestamp {record.meter_timestamp} is out of range")
    if not -MAX_INTEGER < version < MAX_INTEGER:
        raise ValueError(f"format_version {version} does not fit an integer column")
    received_at = _instant(received_at)
    # The record type is a registered one, the times are ours or checked, numbers print plainly:
    # only the strings read from the line may need escaping.
    plain = _plain(record.cloud_id) and _plain(source)
    values = list(_NULLS)
    for index, name in _TYPE_VALUES[record.record_type]:
        value = getattr(record, name)
        if value is not None:
            if value.__class__ is str:
                plain = plain and _plain(value)
            values[index] = _cell(value)
    if keep_raw:
        # Valid JSON (msgspec checked it) holds no control character: only its backslashes
        # are doubled.
        raw = bytes(record.raw).decode()
        if "\\" in raw:
            if "\\u0000" in raw:
                raise ValueError("raw holds \\u0000, which jsonb cannot hold")
            raw = raw.replace("\\", "\\\\")
    else:
        raw = NULL
    if not plain:
        cells = [record.cloud_id, record.record_type, meter_time, received_at, source, *values]
        escaped = [cell if cell is NULL else _escaped(cell) for cell in cells]
        return TAB.join([*escaped, str(version), raw]) + "\n"
    return (
        f"{record.cloud_id}\t{record.record_type}\t{meter_time}\t{received_at}\t{source}\t"
        f"{TAB.join(values)}\t{version}\t{raw}\n"
    )


@functools.lru_cache(maxsize=64)
def meter_times(hour_start: int) -> tuple[str, ...]:
    """The 3,600 meter times of the hour starting at `hour_start` (Unix seconds) as COPY text,
    by second: looked up, not formatted, for each row."""
    prefix = datetime.fromtimestamp(hour_start, UTC).strftime("%Y-%m-%d %H:")
    return tuple(f"{prefix}{second // 60:02d}:{second % 60:02d}+00" for second in range(3600))


@dataclass(slots=True)
class Conversion:
    """What converting a load's files found."""

    files: list[HourFile] = field(default_factory=list)
    files_failed: int = 0
    rows: int = 0
    rows_loaded: int = 0
    malformed_lines: int = 0
    errors: list[str] = field(default_factory=list)
    # (cloud_id, record_type, second of the hour) of the rows streamed for the current household.
    seen: set[tuple[str, str, int]] = field(default_factory=set)


def copy_chunk(
    data: bytes, origin: str, conversion: Conversion, keep_raw: bool, hour_start: int
) -> bytes:
    """An hour file's readings of the hour starting at `hour_start` (Unix seconds) as COPY text
    rows, each reading once. Lines that are no typed reading are counted, logged and left out (they
    stay in the file); readings of another hour are counted as read and left out too, as are
    repeats of a reading already streamed for the household."""
    readings, not_readings = decode_lines(data)
    times = meter_times(hour_start)
    seen = conversion.seen
    rows = []
    read = 0
    for record in readings:
        second = record.meter_timestamp - hour_start
        in_hour = 0 <= second < 3600
        try:
            row = copy_row(record, keep_raw, times[second] if in_hour else "")
        except ValueError as exc:
            not_readings += 1
            logger.warning("%s: a reading not loaded: %s", origin, exc)
            continue
        read += 1
        key = (record.cloud_id, record.record_type, second)
        if in_hour and key not in seen:
            seen.add(key)
            rows.append(row)
    if not_readings:
        logger.warning("%s: %d line(s) that are no typed reading not loaded", origin, not_readings)
    conversion.rows += read
    conversion.rows_loaded += len(rows)
    conversion.malformed_lines += not_readings
    return "".join(rows).encode()


class CopyStream:
    """The file-like object COPY reads from: chunks produced only when asked for, so a load holds
    about one file's rows in memory whatever its size."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = bytearray()

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        if size < 0:
            size = len(self._buffer)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def readline(self, size: int = -1) -> bytes:  # COPY uses read(); this completes the protocol.
        return self.read(size)


class NotSealedYetError(Exception):
    """An hour file that is neither sealed on disk nor verified in the archive yet."""


def _archived_content(archive: Archive, row: HourFile) -> bytes:
    stream = archive.open(row.key)
    try:
        data = stream.read()
    finally:
        stream.close()
    return gzip.decompress(data) if row.compressed or row.key.endswith(".gz") else data


def hour_file_content(row: HourFile, archive: Archive) -> bytes:
    """The JSON lines of a sealed hour file: the local copy once sealed, else the verified archived
    object. NotSealedYetError when it is neither yet; ArchiveError or OSError when the archive
    cannot give it.

    Runs while COPY streams, so it must not query the database.
    """
    path = hourfiles.local_path(row.cloud_id, row.hour, row.part)
    if hourfiles.sealed_marker(path).exists():
        try:
            return path.read_bytes()
        except FileNotFoundError:
            # Removed once verified in the archive (the rotation removes nothing unverified), at
            # the key the row was made with.
            return _archived_content(archive, row)
    if row.state == HourFileState.VERIFIED and row.key:
        return _archived_content(archive, row)
    raise NotSealedYetError(f"{path.name} is not sealed yet")


def _chunks(
    rows: list[HourFile], conversion: Conversion, keep_raw: bool, hour_start: int
) -> Iterator[bytes]:
    archive = open_archive()
    household = None
    for row in rows:
        try:
            data = hour_file_content(row, archive)
        except NotSealedYetError:
            continue
        except (ArchiveError, OSError, EOFError, zlib.error) as exc:
            conversion.files_failed += 1
            conversion.errors.append(f"{row.key}: {type(exc).__name__}: {exc}")
            logger.error("readings store: cannot read %s: %s", row.key, exc)
            continue
        conversion.files.append(row)
        if row.cloud_id != household:
            # Rows come household by household: a repeat can only be of the same household's.
            conversion.seen.clear()
            household = row.cloud_id
        yield copy_chunk(data, row.key, conversion, keep_raw, hour_start)


# --- Loading ------------------------------------------------------------------------------------


def _hour_key(hour: datetime) -> int:
    return int(hour.timestamp()) // 3600


def _copy(cursor: Any, table: str, chunks: Iterator[bytes]) -> None:
    """COPY the rows of `chunks` into `table`, streamed as COPY asks for them."""
    sql = f"COPY {table} ({', '.join(COLUMNS)}) FROM STDIN"
    with connection.wrap_database_errors:  # psycopg2's errors as Django's
        cursor.cursor.copy_expert(sql, CopyStream(chunks), size=COPY_READ_BYTES)


def _has_readings(cursor: Any, households: list[str], hour: datetime) -> bool:
    """Whether the table has any reading of `households` in `hour`: one probe of the primary key
    per household and record type."""
    cursor.execute(_HAS_READINGS, [households, list(VALUES), hour, hour + hourfiles.HOUR])
    return bool(cursor.fetchone()[0])


def _copy_straight(
    cursor: Any, rows: list[HourFile], conversion: Conversion, keep_raw: bool, hour: datetime
) -> bool:
    """COPY the rows straight into `readings`, in a savepoint. False when a reading was in the
    table already after all (a line in another household's file): the savepoint is rolled back
    and nothing of it stays. The whole stream is converted and sent before the server's error
    comes back, hence the probe (`_has_readings`) first."""
    try:
        with transaction.atomic():
            _copy(cursor, TABLE, _chunks(rows, conversion, keep_raw, int(hour.timestamp())))
    except IntegrityError as exc:
        if getattr(exc.__cause__, "pgcode", None) != UNIQUE_VIOLATION:
            raise
        logger.info(
            "readings store: %s: a reading is in the table already, loading through %s",
            hourfiles.hour_label(hour),
            STAGING,
        )
        return False
    return True


def load_hour(hour: datetime, now: datetime | None = None) -> ReadingsLoad | None:
    """Load up to MAX_FILES_PER_LOAD due files of `hour` (module doc, "One load"). None when there
    was nothing to load or another worker holds the hour; else the recorded load."""
    now = now or timezone.now()
    keep_raw = settings.READINGS_KEEP_RAW
    started = time.monotonic()
    load = ReadingsLoad(hour=hour, started_at=timezone.now(), raw_kept=keep_raw)
    conversion = Conversion()
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [LOAD_LOCK, _hour_key(hour)])
            if not cursor.fetchone()[0]:
                return None
            rows = list(
                due_files(now).filter(hour=hour).order_by("cloud_id", "part")[:MAX_FILES_PER_LOAD]
            )
            if not rows:
                return None
            # A load lost in a crash is lost with its record, and loaded again by the next pass.
            cursor.execute("SET LOCAL synchronous_commit = off")
            households = sorted({row.cloud_id for row in rows})
            in_table = _has_readings(cursor, households, hour)
            if not in_table and _copy_straight(cursor, rows, conversion, keep_raw, hour):
                load.rows_inserted = conversion.rows_loaded
            else:
                conversion = Conversion()
                cursor.execute(_CREATE_STAGING)
                # Empty already after a commit; not so when the load runs inside a caller's
                # transaction.
                cursor.execute(f"TRUNCATE {STAGING}")
                _copy(cursor, STAGING, _chunks(rows, conversion, keep_raw, int(hour.timestamp())))
                cursor.execute(_MOVE)
                load.rows_inserted = cursor.rowcount
            if not conversion.files and not conversion.files_failed:
                return None
            _fill(load, conversion, started)
            load.save()
            LoadedHourFile.objects.bulk_create(
                [LoadedHourFile(hour_file=row, load=load) for row in conversion.files],
                ignore_conflicts=True,
            )
    except DatabaseError as exc:
        _fill(load, conversion, started)
        load.pk = None
        load.rows_inserted = 0
        load.files = 0
        load.error = f"{type(exc).__name__}: {exc}".strip()
        load.save()
        logger.error("readings store: loading %s failed: %s", hour, load.error)
    return load


def _fill(load: ReadingsLoad, conversion: Conversion, started: float) -> None:
    load.files = len(conversion.files)
    load.files_failed = conversion.files_failed
    load.rows_read = conversion.rows
    load.malformed_lines = conversion.malformed_lines
    load.duration_seconds = time.monotonic() - started
    load.error = "\n".join(conversion.errors)


@dataclass(slots=True)
class PassReport:
    loads: list[ReadingsLoad] = field(default_factory=list)
    partitions_made: list[str] = field(default_factory=list)
    partitions_dropped: list[str] = field(default_factory=list)

    @property
    def rows_inserted(self) -> int:
        return sum(load.rows_inserted for load in self.loads)

    @property
    def rows_read(self) -> int:
        return sum(load.rows_read for load in self.loads)

    @property
    def failures(self) -> int:
        return sum(1 for load in self.loads if load.failed)

    def as_dict(self) -> dict[str, object]:
        return {
            "loads": len(self.loads),
            "files": sum(load.files for load in self.loads),
            "rows_read": self.rows_read,
            "rows_inserted": self.rows_inserted,
            "failures": self.failures,
            "partitions_made": self.partitions_made,
            "partitions_dropped": self.partitions_dropped,
        }


def load_pending(
    hours: list[PendingHour],
    workers: int | None = None,
    now: datetime | None = None,
    on_load: Callable[[ReadingsLoad], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> list[ReadingsLoad]:
    """Load the given pending hours, oldest first, with `workers` threads (READINGS_LOAD_WORKERS).

    `on_load` is called (under a lock, in the worker's thread) with each finished load.
    """
    now = now or timezone.now()
    if not hours:
        return []
    days = [hour.hour.astimezone(UTC).date() for hour in hours]
    ensure_partitions(min(days), max(days))
    queue: SimpleQueue[datetime] = SimpleQueue()
    for pending in hours:
        queue.put(pending.hour)
    loads: list[ReadingsLoad] = []
    lock = threading.Lock()

    def work(own_connection: bool) -> None:
        try:
            while not should_stop():
                try:
                    hour = queue.get_nowait()
                except Empty:
                    return
                # An hour with more files than one load takes is loaded again until done.
                while (load := load_hour(hour, now)) is not None:
                    with lock:
                        loads.append(load)
                        if on_load is not None:
                            on_load(load)
                    if load.failed or load.files < MAX_FILES_PER_LOAD or should_stop():
                        break
        finally:
            if own_connection:
                connections.close_all()

    count = max(1, min(workers or settings.READINGS_LOAD_WORKERS, len(hours)))
    if count == 1:
        # In the caller's thread, on the caller's connection (and within its transaction, if any).
        work(own_connection=False)
    else:
        with ThreadPoolExecutor(count, thread_name_prefix="readings-load") as executor:
            for future in [executor.submit(work, True) for _ in range(count)]:
                future.result()
    refresh_partitions({load.hour.astimezone(UTC).date() for load in loads if load.rows_inserted})
    return sorted(loads, key=lambda load: (load.hour, load.started_at))


def refresh_partitions(days: set[date]) -> None:
    """After loads into the partitions of `days`: summarise the pages written since in each
    partition's meter-time BRIN index (migration 0010), and ANALYZE those partitions. A query by
    meter time alone (the fleet's) then reads only its hours' pages at once, rather than once
    autovacuum gets to them (until then it reads every new page, or, without statistics, the
    planner walks the whole primary key)."""
    if not days:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT brin_summarize_new_values(inhrelid) FROM pg_inherits "
            "WHERE inhparent = to_regclass(%s)",
            [METER_TIME_INDEX],
        )
        for day in sorted(days):
            cursor.execute(f"ANALYZE {partition_name(day)}")


def run_pass(
    now: datetime | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> PassReport:
    """Keep the partitions, then load every pending hour (the scheduled task's whole job)."""
    now = now or timezone.now()
    report = PassReport()
    if not enabled():
        return report
    report.partitions_made, report.partitions_dropped = keep_partitions(now)
    report.loads = load_pending(pending_hours(now, since, until), now=now, should_stop=should_stop)
    return report


def forget(cloud_id: str) -> int:
    """Delete a household's readings from the table (its data is being purged); the number of rows.
    The table exists on PostgreSQL whether the store is on or not, and may hold rows from before."""
    if connection.vendor != "postgresql":
        return 0
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {TABLE} WHERE cloud_id = %s", [cloud_id])
        return cursor.rowcount


# --- Reading the table (the API's readings, aggregates and coverage) ---------------------------


def table_hours(
    cloud_id: str, start: datetime, end: datetime, need_raw: bool = False
) -> set[datetime]:
    """The UTC hours of [start, end) whose readings of `cloud_id` are all in the table: every hour
    file of the hour is loaded (with its raw objects, if `need_raw`), no part is on disk that the
    manifest does not know yet, and the hour is within the retention. An hour without any file
    counts as served: the table holds nothing for it either. Empty when the store is off."""
    if not enabled():
        return set()
    first = hourfiles.hour_floor(start)
    rows = (
        HourFile.objects.filter(cloud_id=cloud_id, hour__gte=first, hour__lt=end)
        .order_by()
        .values("hour")
        .annotate(
            parts=Count("pk"),
            loaded=Count("store_load"),
            with_raw=Count("store_load", filter=Q(store_load__load__raw_kept=True)),
        )
        .values_list("hour", "parts", "loaded", "with_raw")
    )
    files = {hour: (parts, loaded, with_raw) for hour, parts, loaded, with_raw in rows}
    kept_from = retention_start(timezone.now())
    served = set()
    hour = first
    while hour < end:
        parts, loaded, with_raw = files.get(hour, (0, 0, 0))
        complete = loaded == parts and (with_raw == parts or not need_raw)
        if (
            complete
            and (kept_from is None or hour >= kept_from)
            # The next part would be a file the rotation has not registered yet (being written).
            and not hourfiles.local_path(cloud_id, hour, parts).exists()
        ):
            served.add(hour)
        hour += hourfiles.HOUR
    return served


_RECORDS = f"""
SELECT record_type, extract(epoch FROM meter_time)::bigint, received_at, source,
    {", ".join(VALUE_FIELDS)}, format_version, raw::text
FROM {TABLE}
WHERE cloud_id = %s AND meter_time >= %s AND meter_time < %s {{type_filter}}
ORDER BY meter_time, record_type
"""


def records(
    cloud_id: str, start: datetime, end: datetime, record_type: str | None = None
) -> list[dict[str, Any]]:
    """`cloud_id`'s readings in [start, end) from the table, as records of the record format
    (docs/record-format.md), in the order and form the hour files give them."""
    sql = _RECORDS.format(type_filter="AND record_type = %s" if record_type else "")
    params: list[Any] = [cloud_id, start, end] + ([record_type] if record_type else [])
    result = []
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for row in cursor.fetchall():
            kind, timestamp, received_at, source = row[:4]
            by_name = dict(zip(VALUE_FIELDS, row[4:-2], strict=True))
            record = {
                "format_version": row[-2],
                "record_type": kind,
                "cloud_id": cloud_id,
                "meter_timestamp": timestamp,
                "meter_time": iso_utc(datetime.fromtimestamp(timestamp, UTC)),
                "received_at": iso_utc(received_at),
                "source": source,
            }
            for name in VALUES.get(kind, ((), ()))[0]:
                record[name] = by_name[name]
            record["raw"] = orjson.loads(row[-1]) if row[-1] is not None else {}
            result.append(record)
    return result


# Demand statistics and trapezoid energy per interval, over the readings of [a, b): the same
# arithmetic, in the same order, as retrieval.aggregate_demand's, so both give the same figures.
# %(edges)s are the interval boundaries (Unix seconds); width_bucket() is Python's bisect_right.
_DEMAND = f"""
WITH edges AS (SELECT %(edges)s::float8[] AS e),
p AS (
    SELECT extract(epoch FROM meter_time)::float8 AS t, demand_kw AS d
    FROM {TABLE}
    WHERE cloud_id = %(cloud_id)s AND record_type = 'demand' AND demand_kw IS NOT NULL
      AND meter_time >= %(a)s AND meter_time < %(b)s
),
seg AS (
    SELECT t0, d0, (d1 - d0) / (t1 - t0) AS slope, greatest(t0, %(low)s) AS lo,
        least(t1, %(high)s) AS hi
    FROM (SELECT lag(t) OVER w AS t0, lag(d) OVER w AS d0, t AS t1, d AS d1
          FROM p WINDOW w AS (ORDER BY t)) AS pairs
    WHERE t1 - t0 <= %(gap)s
),
piece AS (
    SELECT i, t0, d0, slope, greatest(lo, e[i]) AS plo, least(hi, e[i + 1]) AS phi
    FROM seg, edges, LATERAL generate_series(width_bucket(lo, e), width_bucket(hi, e)) AS i
    WHERE hi > lo
)
SELECT i, NULL::bigint, NULL::float8, NULL::float8, NULL::float8,
    sum(((d0 + slope * (plo - t0)) + (d0 + slope * (phi - t0))) / 2 * (phi - plo) / 3600
        ORDER BY plo),
    sum(phi - plo ORDER BY plo)
FROM piece WHERE phi > plo GROUP BY i
UNION ALL
SELECT width_bucket(t, e), count(*), sum(d ORDER BY t), min(d), max(d), NULL, NULL
FROM p, edges WHERE t >= %(low)s AND t < %(high)s GROUP BY 1
UNION ALL
(SELECT 0, NULL, t, d, NULL, NULL, NULL FROM p ORDER BY t LIMIT 1)
UNION ALL
(SELECT -1, NULL, t, d, NULL, NULL, NULL FROM p ORDER BY t DESC LIMIT 1)
"""


@dataclass(slots=True)
class DemandPart:
    """A range's share of retrieval.aggregate_demand, from the table: per interval (0-based),
    (readings, total kW, min, max) and (energy kWh, covered seconds) of the segments between its
    own readings; its first and last demand readings, to join it to its neighbours."""

    stats: dict[int, tuple[int, float, float, float]] = field(default_factory=dict)
    energy: dict[int, tuple[float, float]] = field(default_factory=dict)
    first: tuple[float, float] | None = None
    last: tuple[float, float] | None = None


def demand_part(
    cloud_id: str, a: datetime, b: datetime, edges: list[float], gap_seconds: float
) -> DemandPart:
    part = DemandPart()
    params: dict[str, Any] = {
        "edges": edges,
        "cloud_id": cloud_id,
        "a": a,
        "b": b,
        "low": edges[0],
        "high": edges[-1],
        "gap": gap_seconds,
    }
    with connection.cursor() as cursor:
        cursor.execute(_DEMAND, params)
        for index, count, total, low, high, energy, covered in cursor.fetchall():
            if index == 0:
                part.first = (total, low)
            elif index == -1:
                part.last = (total, low)
            elif count is None:
                part.energy[index - 1] = (energy, covered)
            else:
                part.stats[index - 1] = (count, total, low, high)
    return part


def meter_timestamps(cloud_id: str, start: datetime, end: datetime) -> list[int]:
    """The distinct meter times (Unix seconds) of `cloud_id`'s readings in [start, end), in order."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT DISTINCT extract(epoch FROM meter_time)::bigint FROM {TABLE} "
            "WHERE cloud_id = %s AND meter_time >= %s AND meter_time < %s ORDER BY 1",
            [cloud_id, start, end],
        )
        return [timestamp for (timestamp,) in cursor.fetchall()]


# --- The fleet's demand (GET /api/fleet/readings/aggregate) -------------------------------------


def fleet_loaded(start: datetime, end: datetime) -> bool:
    """Whether the table holds the fleet's readings of [start, end): the store is on, the range is
    within the retention, its hours have hour files, and every one of them is loaded (an hour
    being written has none yet: the Parquet dataset has not got it either)."""
    if not enabled():
        return False
    first = hourfiles.hour_floor(start)
    kept_from = retention_start(timezone.now())
    if kept_from is not None and first < kept_from:
        return False
    files = HourFile.objects.filter(hour__gte=first, hour__lt=end)
    return files.exists() and not files.filter(store_load__isnull=True).exists()


# Each household's mean demand per interval, then across the households: the same figures as
# parquet_query.FLEET_DEMAND_SQL over the dataset.
_FLEET_DEMAND = f"""
WITH households AS (
    SELECT extract(epoch FROM meter_time)::bigint / %(step)s * %(step)s AS bucket, cloud_id,
        avg(demand_kw) AS kw, count(*) AS readings
    FROM {TABLE}
    WHERE record_type = 'demand' AND meter_time >= %(start)s AND meter_time < %(end)s
    GROUP BY 1, 2
)
SELECT bucket, count(*), avg(kw), sum(kw),
    percentile_cont(%(quantiles)s::float8[]) WITHIN GROUP (ORDER BY kw), sum(readings)
FROM households
GROUP BY bucket
ORDER BY bucket
"""


def fleet_demand(start: datetime, end: datetime, interval: timedelta) -> list[FleetBucket]:
    """parquet_query.fleet_demand from the table, in one query: per interval of [start, end)
    aligned on multiples of `interval` since the Unix epoch, the households reporting, the mean
    and percentiles of their mean demands and their total. Intervals without readings are left
    out."""
    params: dict[str, Any] = {
        "step": int(interval.total_seconds()),
        "start": start,
        "end": end,
        "quantiles": [p / 100 for p in PERCENTILES],
    }
    with connection.cursor() as cursor:
        cursor.execute(_FLEET_DEMAND, params)
        rows = cursor.fetchall()
    return [
        FleetBucket(
            start=datetime.fromtimestamp(bucket, start.tzinfo),
            households=households,
            mean_kw=mean,
            total_kw=total,
            percentiles_kw=dict(zip(PERCENTILES, percentiles, strict=True)),
            readings=int(readings),
        )
        for bucket, households, mean, total, percentiles, readings in rows
    ]
