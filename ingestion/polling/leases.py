"""Shard leases: which process polls which users, handed from one polling window to the next.

Users are split into INGEST_SHARDS shards by a stable hash of their cloud_id (`shard_of`). A process
polls a shard only while it holds that shard's PollLease row, and every change to the row is a
conditional UPDATE whose row count says whether it happened:

- claim: succeeds only if nobody holds the lease, its holder let it expire, or it is ours;
- renew: after every tick, `expires_at = now + INGEST_LEASE_SECONDS` where the holder is us. A
  holder that dies stops renewing, and its shard can be claimed once the lease has expired;
- hand-over: the next window task does not wait for expiry. It writes its name in `successor` and
  waits; the holder, once a tick is finished (files synced, metadata committed), sets
  holder = successor in one UPDATE, and the successor runs from the next tick boundary
  (`last_tick_at` + one tick). Consecutive windows therefore neither overlap nor leave a gap. A
  newer waiting task replaces an older one as successor, and the older one gives up;
- release: when a holder stops, to the waiting successor if there is one, else to nobody;
- liveness: on PostgreSQL a holder also holds, for its whole life, a session-level advisory lock
  on a connection of its own (`HolderSession`), its key written in its name. The server frees
  it the moment the process dies (SIGKILL, a crash: the connection closes), so a standby, which
  looks at the row every SUCCESSOR_POLL_SECONDS, takes a dead holder's shard at once instead of
  waiting for its lease to expire: a kill costs at most the tick it cut short. The holder stops
  writing as soon as that connection is gone, so a holder cut off from the server while alive
  gives way too. A holder that hangs alive keeps its lock and is passed over only when its lease expires;
  on SQLite, which has no such locks, expiry is the only way;
- rescue: a holder that dies mid-window leaves its shard unpolled until the next scheduled window
  arrives, up to a minute later. So every window task also looks, after each tick, for shards
  left unclaimed since its lease expired, and sends a window task for each at once
  (`rescue_orphaned_shards`): with several shards on several clusters, a dead cluster's shards
  move within a lease's length and two ticks.

Foreground pollers (`manage.py poll`) keep their shards until they stop: a window task that finds
one holding its shard, or waiting for it, leaves at once instead of waiting.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import select
import socket
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from django.conf import settings
from django.db import connection, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from ingestion.models import PollLease

logger = logging.getLogger(__name__)

WINDOW = "window"
FOREGROUND = "poll"
# How often a waiting successor looks at the lease row (one primary-key read, and one lock probe
# while it is held).
SUCCESSOR_POLL_SECONDS = 0.2
# In a holder's name: the key of the advisory lock it holds for as long as it lives.
SESSION_LOCK_MARK = "#lock="
SESSION_LOCK_KEY = re.compile(re.escape(SESSION_LOCK_MARK) + r"(\d+)$")


def shard_of(cloud_id: str, shards: int | None = None) -> int:
    """The shard of a user: stable across processes, machines and Python versions."""
    digest = hashlib.md5(cloud_id.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:4], "big") % (shards or settings.INGEST_SHARDS)


def holder_name(kind: str) -> str:
    """A name unique to this process and run, saying what kind of poller holds a lease."""
    return f"{kind}@{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def is_foreground(holder: str) -> bool:
    return holder.startswith(f"{FOREGROUND}@")


class HolderSession:
    """A poller process's proof of life, for as long as it may hold leases.

    On PostgreSQL: a connection of its own (never closed by Django's connection management, which
    may close the default one between ticks) holding a session-level advisory lock whose key is
    in the holder's name. Elsewhere: just the name, and leases end by expiry only.
    """

    def __init__(self, kind: str) -> None:
        self._wrapper: BaseDatabaseWrapper | None = None
        if connection.vendor != "postgresql":
            self.holder = holder_name(kind)
            return
        key = secrets.randbits(63)
        self.holder = f"{holder_name(kind)}{SESSION_LOCK_MARK}{key}"
        self._wrapper = connections.create_connection("default")
        with self._wrapper.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [key])
        self._socket = self._wrapper.connection.fileno()

    def intact(self) -> bool:
        """Whether the lock surely still holds, without a round trip: nothing ever arrives on
        that connection unless the server ends it (a restart, pg_terminate_backend)."""
        if self._wrapper is None:
            return True
        if self._wrapper.connection is None:
            return False
        readable, _, _ = select.select([self._socket], [], [], 0)
        return not readable

    def close(self) -> None:
        if self._wrapper is not None:
            self._wrapper.close()
            self._wrapper = None


def is_gone(holder: str) -> bool:
    """Whether a holder that proves its life with a session lock is dead: its lock is free.

    A transaction-level try-lock taken and dropped at once (autocommit), so a dead holder's key is
    never held by the one who looked.
    """
    found = SESSION_LOCK_KEY.search(holder)
    if found is None or connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [int(found.group(1))])
        return bool(cursor.fetchone()[0])


def is_live(row: PollLease, now: datetime) -> bool:
    """Whether the lease is held by a holder still alive (not expired, and not known dead)."""
    return row.is_held(now) and not is_gone(row.holder)


class Acquisition(StrEnum):
    CLAIMED = "claimed"
    HANDED_OVER = "handed over"
    FOREGROUND_HOLDS = "held by a foreground poller"
    SUPERSEDED = "a newer task is waiting for it"
    GAVE_UP = "still held when the wait ended"
    STOPPED = "stopped while waiting"

    @property
    def acquired(self) -> bool:
        return self in (Acquisition.CLAIMED, Acquisition.HANDED_OVER)


class AfterTick(StrEnum):
    KEPT = "kept"
    HANDED_OVER = "handed over"
    LOST = "lost"


@dataclass(slots=True)
class ShardLease:
    """This process's side of one shard's lease."""

    shard: int
    holder: str
    seconds: float = field(default_factory=lambda: float(settings.INGEST_LEASE_SECONDS))
    # The holder's proof of life (None: the lease ends by expiry only).
    session: HolderSession | None = None
    # Until when the lease is ours, as of our last claim or renewal.
    valid_until: datetime | None = None
    # The last tick the previous holder ran, as recorded when we took the lease.
    previous_tick_at: datetime | None = None
    held: bool = False
    # Given to us by a holder that committed its last tick (no crash to recover from).
    handed_over: bool = False

    def acquire(
        self,
        stop: threading.Event,
        wait_seconds: float,
        leave_to_foreground: bool = True,
        on_wait: Callable[[PollLease], None] | None = None,
    ) -> Acquisition:
        """Claim the shard, or wait as its successor until it is handed over or expires.

        `on_wait` is called once, with the row, when we start waiting.
        """
        PollLease.objects.ensure([self.shard])
        give_up_at = time.monotonic() + wait_seconds
        waiting = False
        while True:
            now = timezone.now()
            row = PollLease.objects.get(shard=self.shard)
            if row.holder == self.holder:
                return self._took(row, Acquisition.HANDED_OVER)
            if not is_live(row, now):
                dead = row.holder if row.is_held(now) else None
                if PollLease.objects.claim(self.shard, self.holder, now, self.seconds, dead):
                    if dead:
                        logger.warning(
                            "%s took shard %d from %s, which died", self.holder, self.shard, dead
                        )
                    return self._took(row, Acquisition.CLAIMED)
                continue
            if leave_to_foreground and (is_foreground(row.holder) or is_foreground(row.successor)):
                return self._stop_waiting(waiting, Acquisition.FOREGROUND_HOLDS)
            if waiting and row.successor != self.holder:
                return self._stop_waiting(waiting, Acquisition.SUPERSEDED)
            if not waiting:
                waiting = PollLease.objects.wait_as_successor(self.shard, self.holder, now)
                if on_wait is not None:
                    on_wait(row)
            if time.monotonic() >= give_up_at:
                return self._stop_waiting(waiting, Acquisition.GAVE_UP)
            if stop.wait(SUCCESSOR_POLL_SECONDS):
                return self._stop_waiting(waiting, Acquisition.STOPPED)

    def _took(self, row: PollLease, how: Acquisition) -> Acquisition:
        now = timezone.now()
        self.held = True
        self.handed_over = how is Acquisition.HANDED_OVER
        if self.handed_over:
            self.valid_until = row.expires_at
        else:
            self.valid_until = now + timedelta(seconds=self.seconds)
        self.previous_tick_at = row.last_tick()
        logger.info("%s took shard %d (%s)", self.holder, self.shard, how.value)
        return how

    def _stop_waiting(self, waiting: bool, why: Acquisition) -> Acquisition:
        if waiting:
            now = timezone.now()
            PollLease.objects.withdraw(self.shard, self.holder, now)
            # The holder may have handed over just before we withdrew: pass it on, never sit on it.
            PollLease.objects.release(self.shard, self.holder, now, self.seconds)
        return why

    def is_valid(self, margin: float = 1.0) -> bool:
        """Whether the lease is surely still ours for `margin` seconds (no database access)."""
        return (
            self.held
            and self.valid_until is not None
            and timezone.now() + timedelta(seconds=margin) < self.valid_until
            and (self.session is None or self.session.intact())
        )

    def confirm(self, margin: float = 1.0) -> bool:
        """Renew now, before acting on the shard, when the lease may run out within `margin`
        seconds."""
        if self.is_valid(margin):
            return True
        return self.after_tick(self.previous_tick_at or timezone.now(), False) is AfterTick.KEPT

    def after_tick(self, tick_at: datetime, may_hand_over: bool) -> AfterTick:
        """Renew after a tick, or hand the shard to a waiting successor when allowed."""
        now = timezone.now()
        if self.session is not None and not self.session.intact():
            # A standby may already have taken the shard: stop at once, keep nothing.
            self.release()
            logger.error("shard %d: %s lost its session lock", self.shard, self.holder)
            return AfterTick.LOST
        if may_hand_over and PollLease.objects.hand_over(
            self.shard, self.holder, now, self.seconds, tick_at
        ):
            self.held = False
            logger.info("shard %d handed over by %s after %s", self.shard, self.holder, tick_at)
            return AfterTick.HANDED_OVER
        if PollLease.objects.renew(self.shard, self.holder, now, self.seconds, tick_at):
            self.valid_until = now + timedelta(seconds=self.seconds)
            self.previous_tick_at = tick_at
            return AfterTick.KEPT
        self.held = False
        logger.error("shard %d: %s lost its lease", self.shard, self.holder)
        return AfterTick.LOST

    def release(self) -> None:
        if self.held:
            PollLease.objects.release(self.shard, self.holder, timezone.now(), self.seconds)
            self.held = False


def rescue_orphaned_shards(exclude: Collection[int], send: Callable[[int], object]) -> list[int]:
    """Send a window task (`send(shard)`) for each shard whose holder died or left without a
    successor; one rescuer per shard wins the conditional UPDATE. Returns the shards sent for.

    A shard counts as orphaned two ticks after its lease expired unclaimed: a live successor
    claims an expired lease within SUCCESSOR_POLL_SECONDS, so by then nobody is coming.
    """
    now = timezone.now()
    idle = settings.INGEST_LEASE_SECONDS + 2 * settings.INGEST_POLL_SECONDS
    shards = settings.INGEST_SHARDS
    rescued = []
    orphaned = PollLease.objects.orphaned(now, idle, shards).exclude(shard__in=exclude)
    for shard in orphaned.values_list("shard", flat=True):
        if PollLease.objects.mark_rescued(shard, now, idle, shards):
            logger.warning("shard %d has no live holder: a window task was sent for it", shard)
            send(shard)
            rescued.append(shard)
    return rescued
