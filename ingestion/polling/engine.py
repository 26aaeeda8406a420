"""The polling engine: every due user of some shards, every INGEST_POLL_SECONDS, on a fixed grid.

One tick (`Poller.run_tick`), for the slot starting at a multiple of INGEST_POLL_SECONDS:

1. pick the due users: active, polled (not push), in our shards and not backing off; for those
   whose turn it is (every INGEST_EXTRA_POLL_SECONDS, spread over the ticks), also the extra
   record types enabled in their FetchState;
2. admit as many as the poller can fetch before the slot ends, from its measured throughput
   (capacity.py), the users who waited longest first; the others are skipped this tick and
   counted (over capacity: an incident tells the operator);
3. fetch the admitted ones concurrently over one aiohttp pool, at most INGEST_CONCURRENCY at a
   time, each request with its own INGEST_REQUEST_TIMEOUT, until the fetch deadline shortly
   before the slot ends (no request starts in the last half second before it, so replies already
   on their way arrive). A request still unanswered then is not abandoned: its reply is taken
   in the next tick (the tick is recorded as late). A slow gateway never holds up the others or
   the next tick;
4. keep a reading only if its meter timestamp is newer than the last one logged for that user and
   record type (a meter clock set back is logged again once it passes that timestamp: a repeat
   is never logged twice). That state lives in memory and is recovered at start from FetchState
   and from the tail of the user's newest hour files, so a crash between writing a file and
   updating the database never logs a reading twice;
5. append the new readings to their hour files and make them durable with one syncfs. Readings
   that cannot be written (disk full) are kept, in memory and in the database (HeldReading, where
   the next poller of their users finds them if this one stops first), and written first next
   tick; the dedup state only advances for readings that are on disk;
6. record what it learned in a constant number of statements whatever the number of users: the
   FetchState rows (one UPDATE … FROM jsonb_to_recordset, one more for skipped polls), incidents
   opened, refreshed and resolved, the manifest rows of new hour files, and one Tick row per
   shard.

Failures: every failed fetch counts towards an incident of its class for that user (opened at
once for bad credentials, an unknown cloud id or a lost meter, after INGEST_INCIDENT_AFTER_FAILURES
in a row otherwise), and a later success resolves it. A meter whose reading has not changed for
INGEST_STALL_SECONDS gets a stale-reading incident. Unreachable gateways, timeouts, HTTP errors and
refused accounts back off exponentially (FetchState.next_attempt_at, at most
INGEST_MAX_BACKOFF_SECONDS); after INGEST_SUSPEND_AFTER_AUTH_FAILURES bad-credential failures in a
row the user is suspended, with its incident left open for an operator.

`run_ticks()` runs ticks on the grid under shard leases (see leases.py); `run_window()` is the body
of the per-minute django-q2 task, and `manage.py poll` runs the same loop in the foreground.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from itertools import chain
from pathlib import Path
from typing import Any, NamedTuple

import uvloop
from django.conf import settings
from django.db import IntegrityError, close_old_connections, connection, transaction
from django.db.models import Count, Max
from django.utils import timezone
from django_q.tasks import async_task

from ingestion import hourfiles
from ingestion.eagle.client import EagleClient, GatewayTarget
from ingestion.eagle.record_types import DEMAND, RECORD_TYPES
from ingestion.hourfiles import HourFileWriter, read_tail_records
from ingestion.models import (
    FetchOutcome,
    FetchState,
    HeldReading,
    HourFile,
    Incident,
    IncidentSighting,
    NewHourFile,
    PollLease,
    Tick,
)
from ingestion.polling.capacity import (
    FetchRun,
    Throughput,
    last_capacity,
    over_capacity_message,
)
from ingestion.polling.failures import (
    BACKOFF_CLASSES,
    FailureRun,
    backoff_delay,
    incident_threshold,
)
from ingestion.polling.gc_tuning import lighter_garbage_collection
from ingestion.polling.latest import remember_written
from ingestion.polling.leases import (
    WINDOW,
    Acquisition,
    AfterTick,
    HolderSession,
    ShardLease,
    is_foreground,
    is_live,
    rescue_orphaned_shards,
    shard_of,
)
from ingestion.polling.schedules import POLL_SCHEDULE_PREFIX, task_timeout
from ingestion.records import FailureClass, FetchFailure, Reading, iso_utc
from ingestion.redaction import redact
from users.models import EagleUser

logger = logging.getLogger(__name__)

# During a tick, the readings fetched so far are written at least this often: a killed poller
# loses only the replies of this last moment (and those in flight).
WRITE_EVERY_SECONDS = 0.1
# Readings kept per user while they cannot be written (disk full): ten minutes of demand.
PENDING_LIMIT = 100
# Missed slots recorded as late ticks at most, after a pause (a stopped process, a dead holder).
MISSED_TICKS_LIMIT = 600
# Database rows read per query when loading state for many users.
LOAD_BATCH = 5000
# Older hours are no longer created by the writer, so their manifest keys need not be remembered.
REGISTERED_HOURS_KEPT = 3
# The next hour's files are created over the ticks of this last part of an hour.
PREPARE_HOUR_SECONDS = 300


def grid_floor(moment: float, period: float) -> float:
    """The start of the tick slot that holds `moment` (unix seconds)."""
    return math.floor(moment / period) * period


def as_datetime(moment: float) -> datetime:
    return datetime.fromtimestamp(moment, UTC)


def fetch_budget(period: float) -> float:
    """Seconds from a slot's start until its fetches are cut off: the rest of the slot is for
    writing and recording, so the tick ends before the next one is due."""
    return period - min(1.0, 0.2 * period)


def dispatch_budget(period: float) -> float:
    """Seconds from a slot's start until the last fetch may start. A request already sent has
    until the fetch budget to finish: a reply the gateway sent should not be thrown away (its
    reading may be gone by the next tick), but a slow gateway cannot hold the tick up either."""
    return fetch_budget(period) - min(0.5, 0.1 * period)


def _batches(items: Sequence[Any], size: int = LOAD_BATCH) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- What is already logged ------------------------------------------------------------------


def newest_logged(
    since: dict[str, datetime | None], root: Path | None = None
) -> dict[tuple[str, str], int]:
    """The newest meter timestamp per (cloud_id, record type) in the local hour files.

    `since` maps each cloud_id to look for to the first hour that can hold anything newer than
    what the database knows (None: any hour). Only file tails are read: the lines of a tick that
    the database may have missed are at the end of their files.
    """
    newest: dict[tuple[str, str], int] = {}
    if not since:
        return newest
    earliest = _earliest(since.values())
    for hour, directory in reversed(hourfiles.hour_dirs(root)):
        if earliest is not None and hour < earliest:
            break
        for found in _files_in(hour, directory):
            if found.cloud_id not in since:
                continue
            first_hour = since[found.cloud_id]
            if first_hour is not None and hour < first_hour:
                continue
            try:
                records = read_tail_records(found.path)
            except FileNotFoundError:
                # Shipped and removed meanwhile: the manifest, read after the files, has it.
                continue
            for record in records:
                key = (found.cloud_id, str(record.get("record_type")))
                _keep_newest(newest, key, record.get("meter_timestamp"))
    return newest


def _files_in(hour: datetime, directory: Path) -> list[hourfiles.LocalFile]:
    """The hour's files, none if the rotation removed its directory meanwhile."""
    try:
        return list(hourfiles.files_in(hour, directory))
    except FileNotFoundError:
        return []


def newest_shipped(since: dict[str, datetime | None]) -> dict[tuple[str, str], int]:
    """The newest meter timestamp per (cloud_id, record type) in hour files already shipped,
    from the manifest; `since` as for `newest_logged`.

    A poller killed after writing a tick and before recording it leaves readings that only the
    files know of; the rotation may ship and remove those files before a new poller starts. Any
    verified file counts, removed or not: the manifest learns of a removal a little later.
    """
    newest: dict[tuple[str, str], int] = {}
    for batch in _batches(list(since)):
        rows = HourFile.objects.filter(cloud_id__in=batch).exclude(newest_timestamps={})
        earliest = _earliest(since[cloud_id] for cloud_id in batch)
        if earliest is not None:
            rows = rows.filter(hour__gte=earliest)
        for cloud_id, hour, stamps in rows.values_list("cloud_id", "hour", "newest_timestamps"):
            first_hour = since[cloud_id]
            if first_hour is not None and hour < first_hour:
                continue
            for record_type, timestamp in stamps.items():
                _keep_newest(newest, (cloud_id, record_type), timestamp)
    return newest


def _earliest(hours: Iterable[datetime | None]) -> datetime | None:
    """The earliest of the first hours to look at, or None when one of them is any hour."""
    given = list(hours)
    known = [hour for hour in given if hour is not None]
    return min(known) if known and len(known) == len(given) else None


def _keep_newest(newest: dict[tuple[str, str], int], key: tuple[str, str], timestamp: Any) -> None:
    if isinstance(timestamp, int) and timestamp > newest.get(key, 0):
        newest[key] = timestamp


# --- Per-user state ----------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class UserSlot:
    """What the poller keeps in memory for one user between ticks."""

    user_id: int
    cloud_id: str
    shard: int
    updated_at: datetime
    target: GatewayTarget
    # Spreads the users' extra record types over the ticks of INGEST_EXTRA_POLL_SECONDS.
    phase: int
    extra_types: tuple[str, ...] = ()
    # Record type -> meter timestamp of the newest reading on disk.
    logged: dict[str, int] = field(default_factory=dict)
    # New readings not yet on disk, oldest first.
    pending: list[Reading] = field(default_factory=list)
    # Record type -> meter timestamp of the newest pending reading also kept in the database
    # (HeldReading), where the next poller finds it if this one stops before writing it.
    held: dict[str, int] = field(default_factory=dict)
    failures: int = 0
    auth_failures: int = 0
    # Unix seconds before which the user is not fetched (backoff).
    next_attempt: float | None = None
    last_new_at: datetime | None = None
    # The slot (unix seconds) of the tick that last sent its demand fetch: over capacity, the
    # users sent longest ago go first.
    last_sent: float = 0.0
    # Its fetches sent and not answered yet (a reply may come in the tick after the one that
    # sent it): not sent again meanwhile.
    in_flight: int = 0
    runs: dict[FailureClass, FailureRun] = field(default_factory=dict)

    def seen(self, record_type: str) -> int:
        """The newest meter timestamp of this type, on disk or waiting to be written."""
        for reading in reversed(self.pending):
            if reading.record_type == record_type:
                return reading.meter_timestamp
        return self.logged.get(record_type, 0)

    def is_due(self, slot: float) -> bool:
        return self.next_attempt is None or self.next_attempt <= slot + 1e-3

    def unheld(self) -> list[Reading]:
        """The pending readings not kept in the database yet."""
        return [r for r in self.pending if r.meter_timestamp > self.held.get(r.record_type, 0)]


def _sent_at(slot: UserSlot) -> float:
    return slot.last_sent


def _phase(cloud_id: str) -> int:
    digest = hashlib.md5(cloud_id.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[4:8], "big")


class FetchJob(NamedTuple):
    slot: UserSlot
    record_type: str
    previous_timestamp: int | None


# --- Tick results ------------------------------------------------------------------------------


@dataclass(slots=True)
class ShardCounts:
    due: int = 0
    polled: int = 0
    skipped: int = 0
    written: int = 0
    failures: int = 0


@dataclass(slots=True)
class TickReport:
    """What one tick did, for the Tick rows, the command's progress output and the benchmark."""

    scheduled_at: datetime
    started_at: datetime
    finished_at: datetime | None = None
    shards: dict[int, ShardCounts] = field(default_factory=dict)
    repeats: int = 0
    readings_kept: int = 0
    new_files: int = 0
    suspended: int = 0
    statements: int = 0
    # Fetches per tick the poller completes (measured; None until measured), and its requests
    # still unanswered when the tick ended (answered in the next).
    capacity: int | None = None
    in_flight: int = 0
    late: bool = False
    lease_lost: bool = False

    def _total(self, name: str) -> int:
        return sum(getattr(counts, name) for counts in self.shards.values())

    @property
    def users_due(self) -> int:
        return self._total("due")

    @property
    def users_polled(self) -> int:
        return self._total("polled")

    @property
    def users_skipped(self) -> int:
        return self._total("skipped")

    @property
    def readings_written(self) -> int:
        return self._total("written")

    @property
    def failures(self) -> int:
        return self._total("failures")

    @property
    def seconds(self) -> float:
        end = self.finished_at or self.started_at
        return (end - self.scheduled_at).total_seconds()

    def summary(self) -> str:
        shards = ",".join(str(shard) for shard in sorted(self.shards))
        text = (
            f"{iso_utc(self.scheduled_at)} shard {shards}: "
            f"{self.users_polled:,}/{self.users_due:,} users, "
            f"{self.readings_written:,} readings written, {self.repeats:,} repeats, "
            f"{self.failures:,} failures, done after {self.seconds:.2f} s"
        )
        if self.statements:
            text += f", {self.statements} statements"
        if self.readings_kept:
            text += f", {self.readings_kept:,} readings kept for the next tick (not written)"
        if self.suspended:
            text += f", {self.suspended} users suspended"
        if self.users_skipped:
            capacity = f"{self.capacity:,}" if self.capacity is not None else "not measured"
            text += f", {self.users_skipped:,} skipped (over capacity: {capacity} per tick)"
        if self.in_flight:
            text += f", {self.in_flight:,} replies awaited into the next tick"
        if self.late:
            text += " LATE"
        return text


@dataclass(slots=True)
class _TickBatch:
    """What a tick collects for the database while it processes replies."""

    now: datetime
    outcomes: dict[int, FetchOutcome] = field(default_factory=dict)
    sightings: list[IncidentSighting] = field(default_factory=list)
    resolutions: set[tuple[int, str]] = field(default_factory=set)
    suspensions: list[tuple[UserSlot, str]] = field(default_factory=list)
    new_files: list[NewHourFile] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    # Readings to keep in the database until written (user id, reading), and the users all of
    # whose kept readings are written now.
    held: list[tuple[int, Reading]] = field(default_factory=list)
    released: set[int] = field(default_factory=set)

    def outcome(self, slot: UserSlot, attempted: bool = False) -> FetchOutcome:
        """The user's outcome; `attempted` also records the attempt and the user's backoff."""
        outcome = self.outcomes.get(slot.user_id)
        if outcome is None:
            outcome = self.outcomes[slot.user_id] = FetchOutcome(slot.user_id)
        if attempted:
            outcome.attempted_at = self.now
            outcome.consecutive_failures = slot.failures
            outcome.next_attempt_at = (
                as_datetime(slot.next_attempt) if slot.next_attempt is not None else None
            )
        return outcome


@dataclass(slots=True)
class PollTotals:
    ticks: int = 0
    late: int = 0
    users_polled: int = 0
    users_skipped: int = 0
    readings_written: int = 0
    failures: int = 0

    def add(self, report: TickReport) -> None:
        self.ticks += 1
        self.late += report.late
        self.users_polled += report.users_polled
        self.users_skipped += report.users_skipped
        self.readings_written += report.readings_written
        self.failures += report.failures

    def summary(self) -> str:
        on_time = 100.0 * (self.ticks - self.late) / self.ticks if self.ticks else 100.0
        per_tick = self.users_polled / self.ticks if self.ticks else 0.0
        text = (
            f"{self.ticks} ticks ({on_time:.1f} % on time), {per_tick:,.0f} users per tick, "
            f"{self.readings_written:,} readings written, {self.failures:,} failed fetches"
        )
        if self.users_skipped:
            text += f", {self.users_skipped:,} polls skipped (over capacity)"
        return text


@contextmanager
def count_statements() -> Iterator[list[int]]:
    """Count the SQL statements run inside the block (the tick's cost in round trips)."""
    counter = [0]

    def counting(
        execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        counter[0] += 1
        return execute(sql, params, many, context)

    with connection.execute_wrapper(counting):
        yield counter


def users_marker() -> tuple[int, datetime | None]:
    """Changes when a user is added, removed or edited (suspended, password changed…)."""
    row = EagleUser.objects.aggregate(count=Count("pk"), latest=Max("updated_at"))
    return row["count"], row["latest"]


def _close_stale_connection() -> None:
    if not connection.in_atomic_block:
        close_old_connections()


# --- The poller --------------------------------------------------------------------------------


class Poller:
    """Polls the users of some shards; one tick per `run_tick()` call.

    The caller holds the shards' leases. `load_users()` first (it may run while another process
    still polls the shards: it only reads users and builds gateway targets), then `resume()` once
    the leases are ours, then `run_tick()` per slot, and `close()` at the end.
    """

    def __init__(self, shards: Collection[int], holder: str, root: Path | None = None) -> None:
        self.shards = frozenset(shards)
        self.holder = holder
        self.period = settings.INGEST_POLL_SECONDS
        self.root = Path(root or settings.LOG_ROOT)
        hourfiles.raise_open_file_limit()
        # Besides the hour files: a connection per request in flight.
        self.writer = HourFileWriter(
            self.root,
            max_open=hourfiles.open_files_allowed(
                settings.INGEST_CONCURRENCY + hourfiles.DESCRIPTORS_RESERVED
            ),
        )
        self.slots: dict[int, UserSlot] = {}
        self.totals = PollTotals()
        self._by_cloud_id: dict[str, UserSlot] = {}
        self._with_pending: set[UserSlot] = set()
        # Unwritten readings of users no longer polled here: written with the next tick.
        self._orphans: list[Reading] = []
        self._registered: set[tuple[str, datetime, int]] = set()
        # The hour (unix hours) whose files are being created ahead, and the users still to do.
        self._preparing_hour = 0
        self._to_prepare: list[str] = []
        self._marker: tuple[int, datetime | None] | None = None
        self._loaded_at = -math.inf
        self._resumed = False
        self.throughput = Throughput()
        # Fetches answered and not yet taken (by the tick that sent them, or the next one).
        self._arrived: list[tuple[FetchJob, Reading | FetchFailure]] = []
        # Fetch workers still awaiting a reply when their tick ended.
        self._carried: set[asyncio.Future[None]] = set()
        # Shards skipping polls (ticks in a row), fitting again (ticks in a row), and those with
        # an open over-capacity incident.
        self._short_ticks: dict[int, int] = {}
        self._fitting_ticks: dict[int, int] = {}
        self._over_capacity: set[int] = set()
        self._loop = uvloop.new_event_loop()
        self._client = EagleClient()
        self._loop.run_until_complete(self._client.__aenter__())

    def close(self) -> None:
        """Flush and close the files, close the connection pool."""
        unheld = sum(len(slot.unheld()) for slot in self._with_pending)
        held = sum(len(slot.pending) for slot in self._with_pending) - unheld
        lost = unheld + len(self._orphans) + len(self._arrived)
        if held:
            logger.warning(
                "%d readings could not be written before the poller stopped: they are kept in "
                "the database for the next poller of their users",
                held,
            )
        if lost:
            logger.error("%d readings could not be written before the poller stopped", lost)
        if self._carried:
            logger.warning(
                "%d requests were still awaiting their reply when the poller stopped",
                sum(slot.in_flight for slot in self.slots.values()),
            )
        try:
            self.writer.close()
        finally:
            for worker in self._carried:
                worker.cancel()
            if self._carried:
                self._loop.run_until_complete(asyncio.wait(self._carried))
            self._loop.run_until_complete(self._client.__aexit__(None, None, None))
            self._loop.close()

    # --- Users ---------------------------------------------------------------------------------

    def load_users(self) -> None:
        """(Re)load the polled users of our shards: new and edited users get fresh gateway targets
        (passwords are decrypted only for them), users no longer polled are dropped."""
        _close_stale_connection()
        self._marker = users_marker()
        mine = {
            pk: updated
            for pk, cloud_id, updated in EagleUser.objects.polled().values_list(
                "pk", "cloud_id", "updated_at"
            )
            if shard_of(cloud_id) in self.shards
        }
        for pk in [pk for pk in self.slots if pk not in mine]:
            self._drop(self.slots[pk])
        changed = [
            pk
            for pk, updated in mine.items()
            if pk not in self.slots or self.slots[pk].updated_at != updated
        ]
        fresh = []
        for batch in _batches(changed):
            for user in EagleUser.objects.polled().filter(pk__in=batch):
                slot = self.slots.get(user.pk)
                if slot is not None and slot.cloud_id != user.cloud_id:
                    self._drop(slot)
                    slot = None
                if slot is None:
                    slot = UserSlot(
                        user_id=user.pk,
                        cloud_id=user.cloud_id,
                        shard=shard_of(user.cloud_id),
                        updated_at=user.updated_at,
                        target=GatewayTarget.for_user(user),
                        phase=_phase(user.cloud_id),
                    )
                    self.slots[user.pk] = slot
                    self._by_cloud_id[user.cloud_id] = slot
                    fresh.append(slot)
                else:
                    slot.updated_at = user.updated_at
                    slot.target = GatewayTarget.for_user(user)
                    # Edited (a new password, say): worth a try now, whatever the backoff.
                    slot.next_attempt = None
        extras = dict(
            FetchState.objects.exclude(extra_record_types=[]).values_list(
                "user_id", "extra_record_types"
            )
        )
        for slot in self.slots.values():
            wanted = extras.get(slot.user_id) or ()
            slot.extra_types = tuple(
                name for name in wanted if name in RECORD_TYPES and name != DEMAND
            )
        FetchState.objects.ensure_for([slot.user_id for slot in fresh])
        if self._resumed:
            self._restore(fresh, from_files=True)
            for slot in fresh:
                # Added or activated again by an operator: fetched at the next tick.
                slot.next_attempt = None
        self._loaded_at = time.monotonic()

    def _drop(self, slot: UserSlot) -> None:
        del self.slots[slot.user_id]
        self._by_cloud_id.pop(slot.cloud_id, None)
        self._with_pending.discard(slot)
        self._orphans.extend(slot.pending)
        if slot.held:
            # Its readings are written from here, with the orphans: the poller that takes the
            # user next must not find them too.
            HeldReading.objects.release([slot.user_id])

    def _refresh_users(self) -> None:
        stale = time.monotonic() - self._loaded_at >= settings.INGEST_WINDOW_SECONDS
        if stale or users_marker() != self._marker:
            self.load_users()

    def resume(self, from_files: bool) -> None:
        """Take over the users' state: last readings logged, backoff, open incidents, and the
        capacity the shards' latest tick measured.

        `from_files` also reads the tails of their newest hour files, and the manifest for those
        already shipped and removed: needed unless the previous holder handed the shards over
        after committing its last tick.
        """
        self._restore(list(self.slots.values()), from_files)
        capacity = last_capacity(self.shards)
        if capacity is not None:
            self.throughput.restore(capacity, dispatch_budget(self.period))
        self._over_capacity = {
            shard
            for shard in Incident.objects.open()
            .filter(shard__in=self.shards, failure_class=FailureClass.OVER_CAPACITY)
            .values_list("shard", flat=True)
            if shard is not None
        }
        self._resumed = True

    def _restore(self, slots: list[UserSlot], from_files: bool) -> None:
        if not slots:
            return
        now = timezone.now()
        by_id = {slot.user_id: slot for slot in slots}
        ids = list(by_id)
        since: dict[str, datetime | None] = {}
        for batch in _batches(ids):
            rows = FetchState.objects.filter(user_id__in=batch).values_list(
                "user_id",
                "last_timestamp",
                "extra_timestamps",
                "consecutive_failures",
                "last_error_class",
                "next_attempt_at",
            )
            for user_id, last, extra, failures, error_class, next_attempt in rows:
                slot = by_id[user_id]
                slot.logged = {name: int(ts) for name, ts in (extra or {}).items()}
                if last is not None:
                    slot.logged[DEMAND] = int(last)
                slot.failures = failures
                slot.auth_failures = failures if error_class == FailureClass.BAD_CREDENTIALS else 0
                slot.next_attempt = next_attempt.timestamp() if next_attempt else None
                oldest = min(slot.logged.values(), default=None)
                since[slot.cloud_id] = hourfiles.hour_of_timestamp(oldest) if oldest else None
            for user_id, failure_class in Incident.objects.open_pairs(batch):
                by_id[user_id].runs[FailureClass(failure_class)] = FailureRun(
                    first_seen=now, record_types=None, incident_open=True
                )
        for slot in slots:
            slot.last_new_at = now
            since.setdefault(slot.cloud_id, None)
        if from_files:
            found = chain(newest_logged(since, self.root).items(), newest_shipped(since).items())
            for (cloud_id, record_type), timestamp in found:
                slot = self._by_cloud_id[cloud_id]
                slot.logged[record_type] = max(slot.logged.get(record_type, 0), timestamp)
        self._take_held(by_id)

    def _take_held(self, by_id: dict[int, UserSlot]) -> None:
        """Make the readings an earlier poller kept in the database (its disk full) pending
        here, to be written first; forget those already written."""
        taken, written = 0, set()
        for batch in _batches(list(by_id)):
            for user_id, reading in HeldReading.objects.of_users(batch):
                slot = by_id[user_id]
                name = reading.record_type
                slot.held[name] = max(slot.held.get(name, 0), reading.meter_timestamp)
                if reading.meter_timestamp <= slot.seen(name):
                    written.add(user_id)
                    continue
                slot.pending.append(reading)
                self._with_pending.add(slot)
                taken += 1
        HeldReading.objects.release([user_id for user_id in written if not by_id[user_id].pending])
        if taken:
            logger.warning(
                "%s: %d readings held by an earlier poller are written first", self.holder, taken
            )

    # --- One tick ------------------------------------------------------------------------------

    def can_hand_over(self, shard: int) -> bool:
        """Whether nothing of the shard waits to be written that a successor could not find (a
        reading not kept in the database yet), and no reply is awaited (it would be lost)."""
        return (
            not self._orphans
            and not self._carried
            and not any(slot.shard == shard and slot.unheld() for slot in self._with_pending)
        )

    def run_tick(
        self,
        slot_start: float,
        confirm: Callable[[], bool] | None = None,
        holds: Callable[[], bool] | None = None,
    ) -> TickReport:
        """Poll the due users for the slot starting at `slot_start` (unix seconds).

        Readings are written as they come, every WRITE_EVERY_SECONDS while fetches are under way,
        not once the slowest gateway has answered: a crash loses only what arrived since. Those
        writes happen while `holds` says, without the database, that the shards are surely still
        ours; at the end, `confirm` says whether they are (and may renew the leases).
        """
        report = TickReport(
            scheduled_at=as_datetime(slot_start),
            started_at=timezone.now(),
            shards={shard: ShardCounts() for shard in sorted(self.shards)},
        )
        _close_stale_connection()
        self._refresh_users()
        batch = _TickBatch(now=timezone.now())

        def take() -> None:
            if self._arrived:
                batch.now = timezone.now()
                arrived = self._arrived.copy()
                self._arrived.clear()
                self._take_results(arrived, slot_start, batch, report)

        def write_so_far() -> None:
            if holds is None or holds():
                take()
                self._write(batch, report, durable=False)

        elapsed = time.time() - slot_start
        dispatch_seconds = dispatch_budget(self.period) - elapsed
        report.capacity = self.throughput.fetches_within(dispatch_budget(self.period))
        # Never measured (a new shard): every due user is admitted, and the dispatch deadline
        # holds back what does not fit, so the first tick measures the poller at full stretch.
        jobs, admitted = self._due_jobs(
            slot_start, report, self.throughput.fetches_within(dispatch_seconds)
        )
        run = self._loop.run_until_complete(
            self._fetch_all(
                jobs,
                admitted,
                dispatch_seconds=dispatch_seconds,
                seconds=fetch_budget(self.period) - elapsed,
                while_waiting=write_so_far,
            )
        )
        self.throughput.observe(run)
        report.capacity = self.throughput.fetches_within(dispatch_budget(self.period))
        for job in jobs[: run.sent]:
            job.slot.last_sent = slot_start
        self._skip(
            [job.slot for job in jobs[run.sent :] if job.record_type == DEMAND], batch, report
        )
        report.in_flight = (
            sum(slot.in_flight for slot in self.slots.values()) if self._carried else 0
        )
        if confirm is not None and not confirm():
            report.lease_lost = True
            logger.error("%s: lease lost; the rest of this tick is not written", self.holder)
            return report
        take()
        self._write(batch, report)
        self._prepare_next_hour(slot_start)
        self._save(batch, report)
        self.totals.add(report)
        return report

    def _prepare_next_hour(self, slot_start: float) -> None:
        """Create the users' files of the next hour, a share in each tick of its last
        PREPARE_HOUR_SECONDS: its first tick then opens them instead of creating thousands."""
        next_hour = int(slot_start // 3600) + 1
        seconds_left = next_hour * 3600 - slot_start
        if seconds_left > PREPARE_HOUR_SECONDS:
            return
        if self._preparing_hour != next_hour:
            self._preparing_hour = next_hour
            self._to_prepare = [slot.cloud_id for slot in self.slots.values()]
        ticks_left = max(1, math.ceil(seconds_left / self.period))
        count = math.ceil(len(self._to_prepare) / ticks_left)
        cloud_ids, self._to_prepare = self._to_prepare[:count], self._to_prepare[count:]
        try:
            self.writer.prepare(cloud_ids, next_hour)
        except OSError as exc:
            # Only an optimisation: the first reading of the hour creates its file.
            logger.warning("cannot create the files of the next hour: %s", exc)

    def _due_jobs(
        self, slot_start: float, report: TickReport, admissible: int | None
    ) -> tuple[list[FetchJob], int]:
        """The fetches due this tick in the order they are to be sent, and how many of them
        are admitted: at most `admissible` (None: all). Over capacity, the users sent longest
        ago go first, so the ones left waiting in a tick are polled in the next; their demand
        fetches come last, sent only if the admitted ones leave time to spare."""
        tick_number = round(slot_start / self.period)
        every = max(1, round(settings.INGEST_EXTRA_POLL_SECONDS / self.period))
        due: list[UserSlot] = []
        for slot in self.slots.values():
            if slot.in_flight:
                # Sent in an earlier tick, answered in this one.
                report.shards[slot.shard].due += 1
            elif slot.is_due(slot_start):
                report.shards[slot.shard].due += 1
                due.append(slot)
        due.sort(key=_sent_at)
        demand = [FetchJob(slot, DEMAND, slot.seen(DEMAND) or None) for slot in due]
        if admissible is not None and len(demand) > admissible:
            # Extra record types only with room to spare: they wait for their next turn.
            return demand, admissible
        extras = [
            FetchJob(slot, name, slot.seen(name) or None)
            for slot in due
            if slot.extra_types and (tick_number + slot.phase) % every == 0
            for name in slot.extra_types
        ]
        if admissible is not None:
            extras = extras[: max(0, admissible - len(demand))]
        jobs = demand + extras
        return jobs, len(jobs)

    def _skip(self, waiting: list[UserSlot], batch: _TickBatch, report: TickReport) -> None:
        """Count the polls of the users left waiting: per shard, and per user in FetchState."""
        for slot in waiting:
            report.shards[slot.shard].skipped += 1
            batch.skipped.append(slot.user_id)

    async def _fetch_all(
        self,
        jobs: list[FetchJob],
        admitted: int,
        dispatch_seconds: float,
        seconds: float,
        while_waiting: Callable[[], None],
    ) -> FetchRun:
        """Send the jobs' requests in order, none after `dispatch_seconds`, and put each answered
        job with its result in `_arrived`, until `seconds` have passed. Every
        WRITE_EVERY_SECONDS until then, `while_waiting` runs (in the event loop: it must not
        touch the database).

        The first `admitted` jobs are sent as long as the dispatch time lasts. Once they are all
        sent with time to spare (the estimate was low: a cold or restarted poller, a lighter
        tick), more are admitted: as many as the throughput estimate says fit in the time left,
        less the requests still awaiting their replies.

        Requests still unanswered then (and those of earlier ticks) are not cancelled: their
        workers go on in the next tick's event loop, so no reply sent is lost. Returns how many
        requests were sent (the first ones of `jobs`) and the throughput measurement."""
        loop = asyncio.get_running_loop()
        run = FetchRun(started_at=loop.time())
        dispatch_until = loop.time() + dispatch_seconds
        deadline = loop.time() + max(0.0, seconds)
        arrived = self._arrived
        fetch = self._client.fetch
        fetches_within = self.throughput.fetches_within

        def may_send(now: float) -> bool:
            nonlocal admitted
            if now >= dispatch_until:
                run.saturated = True
                return False
            if run.sent < admitted:
                return True
            awaiting = run.sent - run.replies
            admitted = run.sent + max(0, (fetches_within(dispatch_until - now) or 0) - awaiting)
            return run.sent < admitted

        async def fetch_some() -> None:
            # Jobs are taken in order, and only when they are sent: the ones sent are always
            # the first `run.sent`.
            while run.sent < len(jobs) and may_send(loop.time()):
                job = jobs[run.sent]
                run.sent += 1
                slot = job.slot
                slot.in_flight += 1
                try:
                    result = await fetch(slot.target, job.record_type, job.previous_timestamp)
                finally:
                    slot.in_flight -= 1
                arrived.append((job, result))
                run.replies += 1
                run.last_reply_at = loop.time()

        workers = [
            asyncio.ensure_future(fetch_some())
            for _ in range(min(settings.INGEST_CONCURRENCY, len(jobs)))
        ]
        unfinished: set[asyncio.Future[None]] = set(workers) | self._carried
        while unfinished and (remaining := deadline - loop.time()) > 0:
            done, unfinished = await asyncio.wait(
                unfinished, timeout=min(WRITE_EVERY_SECONDS, remaining)
            )
            for worker in done:
                # A bug in the client (it never raises for what a server sends) must not pass
                # quietly.
                worker.result()
            if unfinished:
                while_waiting()
        self._carried = unfinished
        return run

    def _take_results(
        self,
        arrived: list[tuple[FetchJob, Reading | FetchFailure]],
        slot_start: float,
        batch: _TickBatch,
        report: TickReport,
    ) -> None:
        for job, result in arrived:
            slot = job.slot
            if self.slots.get(slot.user_id) is not slot:
                # Dropped while its fetch was under way (deleted, suspended, moved): a reading is
                # written with the others no longer polled here.
                if isinstance(result, Reading) and result.meter_timestamp > slot.seen(
                    job.record_type
                ):
                    self._orphans.append(result)
                continue
            counts = report.shards[slot.shard]
            is_demand = job.record_type == DEMAND
            outcome = batch.outcome(slot, attempted=True)
            failure = None
            if isinstance(result, Reading):
                if result.meter_timestamp > slot.seen(job.record_type):
                    self._keep(slot, result)
                    self._succeeded(slot, job.record_type, True, batch)
                else:
                    report.repeats += 1
                    self._succeeded(slot, job.record_type, False, batch)
                outcome.succeeded = True
            elif result.failure_class is FailureClass.STALE_READING:
                report.repeats += 1
                self._succeeded(slot, job.record_type, False, batch)
                outcome.succeeded = True
            else:
                failure = result
                counts.failures += 1
                self._failed(slot, job.record_type, result, batch)
                if is_demand or not outcome.error_class:
                    outcome.error_class = result.failure_class.value
                    outcome.error = f"{job.record_type}: {result.message}"
            if is_demand:
                counts.polled += 1
                self._settle_backoff(slot, failure, slot_start, batch)
                batch.outcome(slot, attempted=True)

    def _keep(self, slot: UserSlot, reading: Reading) -> None:
        slot.pending.append(reading)
        self._with_pending.add(slot)
        if len(slot.pending) > PENDING_LIMIT:
            dropped = slot.pending.pop(0)
            logger.error(
                "%s: %d readings wait to be written; dropping the oldest (%s %s)",
                slot.cloud_id,
                PENDING_LIMIT,
                dropped.record_type,
                iso_utc(dropped.meter_time),
            )

    def _succeeded(self, slot: UserSlot, record_type: str, new: bool, batch: _TickBatch) -> None:
        if record_type == DEMAND:
            if new or slot.last_new_at is None:
                slot.last_new_at = batch.now
            elif batch.now - slot.last_new_at >= timedelta(seconds=settings.INGEST_STALL_SECONDS):
                self._stalled(slot, batch)
        for failure_class, run in list(slot.runs.items()):
            if failure_class is FailureClass.STALE_READING and not (new and record_type == DEMAND):
                continue
            if run.record_types is None or record_type in run.record_types:
                if run.incident_open:
                    batch.resolutions.add((slot.user_id, failure_class.value))
                del slot.runs[failure_class]

    def _stalled(self, slot: UserSlot, batch: _TickBatch) -> None:
        run = slot.runs.get(FailureClass.STALE_READING)
        if run is None:
            run = slot.runs[FailureClass.STALE_READING] = FailureRun(
                first_seen=slot.last_new_at or batch.now, record_types={DEMAND}
            )
        run.count += 1
        since = iso_utc(as_datetime(slot.seen(DEMAND))) if slot.seen(DEMAND) else "the start"
        batch.sightings.append(
            IncidentSighting(
                user_id=slot.user_id,
                failure_class=FailureClass.STALE_READING.value,
                opened_at=run.first_seen,
                seen_at=batch.now,
                occurrences=1,
                message=f"demand: the meter's reading has not changed since {since}",
            )
        )
        run.incident_open = True

    def _failed(
        self, slot: UserSlot, record_type: str, failure: FetchFailure, batch: _TickBatch
    ) -> None:
        failure_class = failure.failure_class
        run = slot.runs.get(failure_class)
        if run is None:
            run = slot.runs[failure_class] = FailureRun(first_seen=batch.now)
        run.count += 1
        if run.record_types is not None:
            run.record_types.add(record_type)
        if run.incident_open or run.count >= incident_threshold(failure_class):
            batch.sightings.append(
                IncidentSighting(
                    user_id=slot.user_id,
                    failure_class=failure_class.value,
                    opened_at=run.first_seen,
                    seen_at=batch.now,
                    occurrences=1 if run.incident_open else run.count,
                    message=f"{record_type}: {failure.message}",
                    raw_reply=redact(failure.raw_reply, [slot.target.password]),
                )
            )
            run.incident_open = True

    def _settle_backoff(
        self, slot: UserSlot, failure: FetchFailure | None, slot_start: float, batch: _TickBatch
    ) -> None:
        """Backoff and suspension follow the demand fetch, which every due user gets."""
        if failure is None:
            slot.failures = slot.auth_failures = 0
            slot.next_attempt = None
            return
        slot.failures += 1
        if failure.failure_class is FailureClass.BAD_CREDENTIALS:
            slot.auth_failures += 1
        if failure.failure_class in BACKOFF_CLASSES:
            slot.next_attempt = slot_start + backoff_delay(slot.failures)
        else:
            slot.next_attempt = None
        limit = settings.INGEST_SUSPEND_AFTER_AUTH_FAILURES
        if slot.auth_failures >= limit:
            batch.suspensions.append(
                (
                    slot,
                    f"Suspended by the poller after {slot.auth_failures} consecutive "
                    f"bad-credential failures (last: {failure.message}). Check the EAGLE "
                    "account's email and password, then activate the user again.",
                )
            )

    def _write(self, batch: _TickBatch, report: TickReport, durable: bool = True) -> None:
        """Append every reading waiting to be written and, if `durable`, make everything written
        since the last sync durable together (once a tick: a killed process loses nothing the
        kernel holds, only a machine that stops does)."""
        self._append_pending(batch, report)
        if durable:
            try:
                self.writer.sync()
            except OSError as exc:
                logger.error("cannot sync the hour files under %s: %s", self.root, exc)

    def _append_pending(self, batch: _TickBatch, report: TickReport) -> None:
        slots = list(self._with_pending)
        orphans, self._orphans = self._orphans, []
        readings = [reading for slot in slots for reading in slot.pending] + orphans
        if not readings:
            return
        result = self.writer.append(readings)
        remember_written(readings, result)
        unwritten = {id(reading) for reading in result.unwritten}
        for slot in slots:
            kept = []
            outcome = batch.outcome(slot)
            for reading in slot.pending:
                if id(reading) in unwritten:
                    kept.append(reading)
                    continue
                self._logged(slot, reading, outcome)
                report.shards[slot.shard].written += 1
            slot.pending = kept
            if not kept:
                self._with_pending.discard(slot)
                if slot.held:
                    slot.held = {}
                    batch.released.add(slot.user_id)
            else:
                for reading in slot.unheld():
                    batch.held.append((slot.user_id, reading))
                    slot.held[reading.record_type] = reading.meter_timestamp
        self._orphans = [reading for reading in orphans if id(reading) in unwritten]
        report.readings_kept = len(result.unwritten)
        self._register(result.written, batch)
        report.new_files = len(batch.new_files)

    @staticmethod
    def _logged(slot: UserSlot, reading: Reading, outcome: FetchOutcome) -> None:
        timestamp = reading.meter_timestamp
        name = reading.record_type
        slot.logged[name] = max(slot.logged.get(name, 0), timestamp)
        outcome.readings_written += 1
        if name == DEMAND:
            outcome.first_timestamp = min(outcome.first_timestamp or timestamp, timestamp)
            outcome.last_timestamp = max(outcome.last_timestamp or timestamp, timestamp)
        else:
            outcome.extra_timestamps[name] = max(outcome.extra_timestamps.get(name, 0), timestamp)

    def _register(self, written: Iterable[Any], batch: _TickBatch) -> None:
        """Manifest rows (state open) for files this process has not registered yet."""
        for item in written:
            key = (item.cloud_id, item.hour, item.part)
            if key in self._registered:
                continue
            self._registered.add(key)
            slot = self._by_cloud_id.get(item.cloud_id)
            batch.new_files.append(
                NewHourFile(
                    item.cloud_id,
                    item.hour,
                    item.part,
                    str(item.path),
                    slot.user_id if slot else None,
                )
            )
        if batch.new_files:
            oldest = hourfiles.hour_floor(batch.now) - timedelta(hours=REGISTERED_HOURS_KEPT)
            self._registered = {key for key in self._registered if key[1] >= oldest}

    def _save(self, batch: _TickBatch, report: TickReport) -> None:
        """Record the tick: metadata in one transaction, then the suspensions and Tick rows."""
        try:
            self._save_metadata(batch)
        except IntegrityError:
            # A user was deleted during the tick: keep what concerns the others.
            existing = set(
                EagleUser.objects.filter(pk__in=list(batch.outcomes)).values_list("pk", flat=True)
            )
            logger.warning("users were deleted during a tick; recording the others only")
            batch.outcomes = {pk: o for pk, o in batch.outcomes.items() if pk in existing}
            batch.sightings = [s for s in batch.sightings if s.user_id in existing]
            batch.new_files = [
                row if row.user_id in existing else replace(row, user_id=None)
                for row in batch.new_files
            ]
            batch.held = [(user_id, r) for user_id, r in batch.held if user_id in existing]
            self._save_metadata(batch)
        for slot, reason in batch.suspensions:
            user = EagleUser.objects.filter(pk=slot.user_id, is_active=True).first()
            if user is not None:
                user.suspend(reason)
                report.suspended += 1
                logger.warning("%s suspended: %s", slot.cloud_id, reason)
            if slot.user_id in self.slots:
                self._drop(slot)
        report.finished_at = timezone.now()
        report.late = bool(report.users_skipped or report.in_flight) or (
            report.seconds > self.period
        )
        self._record_capacity(report)
        Tick.objects.bulk_create(
            [
                Tick(
                    shard=shard,
                    holder=self.holder,
                    scheduled_at=report.scheduled_at,
                    started_at=report.started_at,
                    finished_at=report.finished_at,
                    users_due=counts.due,
                    users_polled=counts.polled,
                    readings_written=counts.written,
                    failures=counts.failures,
                    users_skipped=counts.skipped,
                    capacity=report.capacity,
                    late=report.late,
                )
                for shard, counts in report.shards.items()
            ]
        )

    def _record_capacity(self, report: TickReport) -> None:
        """Open or refresh the over-capacity incident of each shard skipping polls for
        INGEST_INCIDENT_AFTER_FAILURES ticks in a row; resolve it after as many ticks without."""
        ticks = settings.INGEST_INCIDENT_AFTER_FAILURES
        now = report.finished_at or timezone.now()
        for shard, counts in report.shards.items():
            if counts.skipped:
                self._fitting_ticks[shard] = 0
                self._short_ticks[shard] = self._short_ticks.get(shard, 0) + 1
                if shard in self._over_capacity or self._short_ticks[shard] >= ticks:
                    message = over_capacity_message(
                        shard, self.holder, report.users_due, report.capacity, counts.skipped
                    )
                    Incident.objects.record_over_capacity(shard, now, message)
                    if shard not in self._over_capacity:
                        logger.error("over capacity: %s", message)
                    self._over_capacity.add(shard)
                continue
            self._short_ticks[shard] = 0
            if shard in self._over_capacity:
                self._fitting_ticks[shard] = self._fitting_ticks.get(shard, 0) + 1
                if self._fitting_ticks[shard] >= ticks:
                    Incident.objects.resolve_over_capacity(
                        shard,
                        now,
                        f"Every due user polled in {ticks} ticks in a row "
                        f"({report.users_due:,} due, capacity {report.capacity or 0:,}).",
                    )
                    self._over_capacity.discard(shard)

    def _save_metadata(self, batch: _TickBatch) -> None:
        with transaction.atomic():
            FetchState.objects.apply_outcomes(list(batch.outcomes.values()))
            FetchState.objects.record_skipped(batch.skipped, batch.now)
            Incident.objects.record_sightings(batch.sightings)
            Incident.objects.resolve_pairs(batch.resolutions, batch.now)
            HourFile.objects.register_new(batch.new_files, batch.now)
            HeldReading.objects.release(batch.released)
            HeldReading.objects.hold(batch.held)

    def record_missed(self, first_slot: float, end_slot: float) -> int:
        """Late Tick rows for the slots in [first_slot, end_slot) that no tick ran in."""
        count = min(MISSED_TICKS_LIMIT, max(0, round((end_slot - first_slot) / self.period)))
        if not count:
            return 0
        now = timezone.now()
        skipped_from = end_slot - count * self.period
        Tick.objects.bulk_create(
            [
                Tick(
                    shard=shard,
                    holder=self.holder,
                    scheduled_at=as_datetime(skipped_from + i * self.period),
                    started_at=now,
                    finished_at=now,
                    late=True,
                )
                for i in range(count)
                for shard in sorted(self.shards)
            ]
        )
        logger.warning("%s: %d tick slots were missed", self.holder, count)
        self.totals.ticks += count
        self.totals.late += count
        return count


# --- Running ticks on the grid -----------------------------------------------------------------


def following_slot(previous_tick_at: datetime | None, period: float) -> float | None:
    """The slot after the previous holder's last tick, if that tick is recent enough to continue
    from (else None: start at the next slot and record nothing as missed)."""
    if previous_tick_at is None:
        return None
    previous = previous_tick_at.timestamp()
    if time.time() - previous > MISSED_TICKS_LIMIT * period:
        return None
    return previous + period


def run_ticks(
    poller: Poller,
    leases: Sequence[ShardLease],
    stop: threading.Event,
    *,
    hand_over: bool,
    first_slot: float | None = None,
    max_ticks: int | None = None,
    max_seconds: float | None = None,
    on_tick: Callable[[TickReport], None] | None = None,
    after_tick: Callable[[], object] | None = None,
) -> str:
    """Run ticks on the grid while the leases are ours; returns why it stopped.

    Paced by deadline: the wait before each slot is computed from the clock, so ticks never
    drift, and `stop` cuts the wait short. Slots that pass without a tick (the process was
    paused, or the previous holder died) are recorded as late ticks, never skipped silently.
    With `hand_over`, the shards go to a waiting successor after a tick. `after_tick` runs
    after each tick's lease renewal (its statements count as the tick's).
    """
    period = poller.period
    started = time.monotonic()
    slot = first_slot if first_slot is not None else grid_floor(time.time(), period) + period
    ticks = 0

    def leases_valid(margin: float = 1.0) -> bool:
        return all(lease.confirm(margin) for lease in leases)

    def leases_held() -> bool:
        return all(lease.is_valid() for lease in leases)

    try:
        with lighter_garbage_collection():
            while not stop.is_set():
                delay = slot - time.time()
                if delay > 0 and stop.wait(delay):
                    break
                current = grid_floor(time.time(), period)
                if current > slot:
                    poller.record_missed(slot, current)
                    slot = current
                with count_statements() as statements:
                    # Renewed first if it may run out during the tick: readings are written while
                    # the fetches go on only under a lease that surely holds (a lease just taken
                    # over lasts from the claim, which may be most of a period ago).
                    if not leases_valid(period):
                        return "lease lost"
                    report = poller.run_tick(slot, confirm=leases_valid, holds=leases_held)
                    if report.lease_lost:
                        return "lease lost"
                    tick_at = as_datetime(slot)
                    after = [
                        lease.after_tick(tick_at, hand_over and poller.can_hand_over(lease.shard))
                        for lease in leases
                    ]
                    if after_tick is not None:
                        after_tick()
                report.statements = statements[0]
                if on_tick is not None:
                    on_tick(report)
                if AfterTick.LOST in after:
                    return "lease lost"
                if all(outcome is AfterTick.HANDED_OVER for outcome in after):
                    return "handed over"
                ticks += 1
                if max_ticks is not None and ticks >= max_ticks:
                    return f"ran {ticks} ticks"
                if max_seconds is not None and time.monotonic() - started >= max_seconds:
                    return "window over"
                slot += period
            return "stopped"
    finally:
        for lease in leases:
            lease.release()


def window_wait_seconds() -> float:
    """How long a window task waits for its shard: its holder hands over within a tick, or a
    dead holder's lease expires within INGEST_LEASE_SECONDS."""
    return settings.INGEST_WINDOW_SECONDS + settings.INGEST_LEASE_SECONDS


def window_max_seconds() -> float:
    """How long a window task polls when no successor comes (the scheduler is late or down):
    long enough to bridge a missed minute, short enough to end well within the task timeout."""
    timeout = task_timeout() or 300
    budget = timeout - window_wait_seconds() - 2 * settings.INGEST_POLL_SECONDS
    return max(settings.INGEST_POLL_SECONDS, min(budget, 2 * settings.INGEST_WINDOW_SECONDS))


def run_window(shard: int, stop: threading.Event | None = None) -> str:
    """One polling window of one shard: wait for the shard, poll until a successor takes it.

    The per-minute django-q2 task. The next minute's task becomes the successor and gets the
    shard at a tick boundary, so windows neither overlap nor leave a gap.
    """
    if not 0 <= shard < settings.INGEST_SHARDS:
        raise ValueError(f"shard {shard} does not exist (INGEST_SHARDS={settings.INGEST_SHARDS})")
    stop = stop or threading.Event()
    session = HolderSession(WINDOW)
    lease = ShardLease(shard, session.holder, session=session)
    poller = Poller([shard], session.holder)

    def send_window(orphan: int) -> None:
        async_task(
            "ingestion.tasks.poll_window",
            orphan,
            sync=False,
            group=f"{POLL_SCHEDULE_PREFIX}{orphan}",
        )

    try:
        PollLease.objects.ensure(range(settings.INGEST_SHARDS))
        current = PollLease.objects.get(shard=shard)
        if is_foreground(current.holder) and is_live(current, timezone.now()):
            # `manage.py poll` keeps its shards: leave before loading anything.
            return f"shard {shard} not polled: {Acquisition.FOREGROUND_HOLDS.value}"
        poller.load_users()
        how = lease.acquire(stop, window_wait_seconds())
        if not how.acquired:
            return f"shard {shard} not polled: {how.value}"
        poller.resume(from_files=not lease.handed_over)
        ended = run_ticks(
            poller,
            [lease],
            stop,
            hand_over=True,
            first_slot=following_slot(lease.previous_tick_at, poller.period),
            max_seconds=window_max_seconds(),
            after_tick=lambda: rescue_orphaned_shards([shard], send_window),
        )
        return f"shard {shard} {how.value}, {len(poller.slots):,} users: {poller.totals.summary()}; {ended}"
    finally:
        lease.release()
        poller.close()
        session.close()
