"""Shard leases: one holder at a time, hand-over at a tick boundary, expiry when a holder dies."""

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.db import connection
from django.utils import timezone
from pytest_django.fixtures import Settings

from ingestion.eagle.simulator import Simulator
from ingestion.models import PollLease, Tick
from ingestion.polling.engine import run_window
from ingestion.polling.leases import (
    FOREGROUND,
    WINDOW,
    Acquisition,
    AfterTick,
    HolderSession,
    ShardLease,
    holder_name,
    is_gone,
    shard_of,
)
from tests.polling import create_users, duplicates, logged_keys

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def lease(kind: str = WINDOW, shard: int = 0) -> ShardLease:
    return ShardLease(shard, holder_name(kind), seconds=30)


def row(shard: int = 0) -> PollLease:
    return PollLease.objects.get(shard=shard)


def test_each_cloud_id_has_a_stable_shard_and_shards_are_even() -> None:
    # Fixed values: a user's shard must not move with Python's hash seed, version or machine.
    assert [shard_of(cloud_id, 4) for cloud_id in ("000001", "002738", "0a1b2c")] == [3, 3, 2]
    counts = Counter(shard_of(f"{n:06x}", 4) for n in range(4000))
    assert set(counts) == {0, 1, 2, 3}
    assert all(900 < count < 1100 for count in counts.values())


@pytest.mark.django_db
def test_only_one_holder_claims_a_live_lease_and_a_dead_ones_expires() -> None:
    first, second = lease(), lease()
    stop = threading.Event()
    with time_machine.travel(NOW, tick=False) as traveller:
        assert first.acquire(stop, wait_seconds=0) is Acquisition.CLAIMED
        assert second.acquire(stop, wait_seconds=0) is Acquisition.GAVE_UP
        # Waiting and giving up leaves no successor behind.
        assert row().successor == ""
        assert first.after_tick(NOW, may_hand_over=True) is AfterTick.KEPT
        # The holder dies: no renewal for longer than the lease.
        traveller.move_to(NOW + timedelta(seconds=31))
        assert second.acquire(stop, wait_seconds=0) is Acquisition.CLAIMED
        assert row().holder == second.holder and not second.handed_over
        assert second.previous_tick_at == NOW
        assert first.after_tick(NOW + timedelta(seconds=36), may_hand_over=True) is AfterTick.LOST
        assert not first.is_valid()


@pytest.mark.django_db
def test_a_holder_killed_between_its_tick_and_its_renewal_is_followed_after_that_tick() -> None:
    first, second = lease(), lease()
    stop = threading.Event()
    with time_machine.travel(NOW, tick=False) as traveller:
        assert first.acquire(stop, wait_seconds=0) is Acquisition.CLAIMED
        assert first.after_tick(NOW, may_hand_over=False) is AfterTick.KEPT
        # Its next tick is written; it dies before renewing the lease with it.
        written = NOW + timedelta(seconds=6)
        Tick.objects.create(
            shard=0,
            holder=first.holder,
            scheduled_at=written,
            started_at=written,
            finished_at=written,
        )
        Tick.objects.create(
            shard=1, scheduled_at=written + timedelta(seconds=6), started_at=NOW, finished_at=NOW
        )
        traveller.move_to(NOW + timedelta(seconds=31))
        assert second.acquire(stop, wait_seconds=0) is Acquisition.CLAIMED
        # The slot after the tick written, not that tick's slot again (another shard's ticks
        # are not this shard's).
        assert second.previous_tick_at == written


@pytest.mark.django_db
def test_a_holder_hands_its_shard_to_the_waiting_successor_after_a_tick() -> None:
    holder, successor = lease(), lease()
    stop = threading.Event()
    with time_machine.travel(NOW, tick=False):
        holder.acquire(stop, wait_seconds=0)
        assert PollLease.objects.wait_as_successor(0, successor.holder, NOW)
        # Not allowed to hand over (readings wait to be written): it keeps the shard.
        assert holder.after_tick(NOW, may_hand_over=False) is AfterTick.KEPT
        tick_at = NOW + timedelta(seconds=6)
        assert holder.after_tick(tick_at, may_hand_over=True) is AfterTick.HANDED_OVER
        assert (row().holder, row().successor, row().last_tick_at) == (
            successor.holder,
            "",
            tick_at,
        )
        assert successor.acquire(stop, wait_seconds=0) is Acquisition.HANDED_OVER
        assert successor.handed_over and successor.previous_tick_at == tick_at
        assert successor.is_valid()
        assert holder.after_tick(tick_at + timedelta(seconds=6), False) is AfterTick.LOST


@pytest.mark.django_db
def test_releasing_passes_the_shard_to_a_waiting_successor_or_frees_it() -> None:
    holder, successor = lease(), lease()
    stop = threading.Event()
    with time_machine.travel(NOW, tick=False):
        holder.acquire(stop, wait_seconds=0)
        PollLease.objects.wait_as_successor(0, successor.holder, NOW)
        holder.release()
        assert row().holder == successor.holder and row().expires_at > NOW
        assert successor.acquire(stop, wait_seconds=0) is Acquisition.HANDED_OVER
        successor.release()
        assert (row().holder, row().expires_at) == ("", None)


@pytest.mark.django_db
def test_a_successor_that_stops_waiting_never_sits_on_a_shard_handed_to_it() -> None:
    holder, successor = lease(), lease()
    with time_machine.travel(NOW, tick=False):
        holder.acquire(threading.Event(), wait_seconds=0)
        PollLease.objects.wait_as_successor(0, successor.holder, NOW)
        # The hand-over lands just as the successor gives up.
        holder.after_tick(NOW, may_hand_over=True)
        successor._stop_waiting(True, Acquisition.STOPPED)
        assert (row().holder, row().successor) == ("", "")


@pytest.mark.django_db
def test_a_window_leaves_a_shard_held_by_a_foreground_poller_at_once() -> None:
    foreground, window = lease(FOREGROUND), lease(WINDOW)
    stop = threading.Event()
    with time_machine.travel(NOW, tick=False):
        foreground.acquire(stop, wait_seconds=0)
        assert window.acquire(stop, wait_seconds=60) is Acquisition.FOREGROUND_HOLDS
        assert row().successor == ""
        # A foreground poller does wait for a window's shard, as its successor.
        other_window = lease(WINDOW, shard=1)
        other_foreground = ShardLease(1, foreground.holder, seconds=30)
        other_window.acquire(stop, wait_seconds=0)
        assert (
            other_foreground.acquire(stop, wait_seconds=0, leave_to_foreground=False)
            is Acquisition.GAVE_UP
        )
        # A window never pushes a waiting foreground poller out of the queue.
        PollLease.objects.wait_as_successor(1, other_foreground.holder, NOW)
        assert lease(WINDOW, shard=1).acquire(stop, wait_seconds=60) is (
            Acquisition.FOREGROUND_HOLDS
        )
        assert row(1).successor == other_foreground.holder


@pytest.mark.django_db(transaction=True)
def test_a_newer_waiting_task_supersedes_an_older_one() -> None:
    holder, older, newer = lease(), lease(), lease()
    holder.acquire(threading.Event(), wait_seconds=0)
    outcome: list[Acquisition] = []

    def wait_older() -> None:
        try:
            outcome.append(older.acquire(threading.Event(), wait_seconds=30))
        finally:
            connection.close()

    thread = threading.Thread(target=wait_older)
    thread.start()
    wait_until(lambda: row().successor == older.holder)
    PollLease.objects.wait_as_successor(0, newer.holder, datetime.now(UTC))
    thread.join(timeout=10)
    assert outcome == [Acquisition.SUPERSEDED]
    assert row().successor == newer.holder


def wait_until(condition: Any, seconds: float = 20.0) -> None:
    """Poll a condition another thread brings about (bounded; not a wait for wall-clock time)."""
    done = threading.Event()
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        done.wait(0.05)
    raise AssertionError("the condition never held")


@pytest.mark.django_db(transaction=True)
def test_consecutive_windows_neither_overlap_nor_leave_a_gap(settings: Settings) -> None:
    settings.INGEST_POLL_SECONDS = 1.0
    settings.INGEST_REQUEST_TIMEOUT = 0.5
    with Simulator(users=6, seed=5) as sim:
        settings.EAGLE_CLOUD_URL = sim.cloud_url
        create_users(sim)
        stops = [threading.Event(), threading.Event()]
        results: list[str] = []

        def window(stop: threading.Event) -> None:
            try:
                results.append(run_window(0, stop))
            finally:
                connection.close()

        first = threading.Thread(target=window, args=(stops[0],))
        first.start()
        wait_until(lambda: Tick.objects.count() >= 2)
        second = threading.Thread(target=window, args=(stops[1],))
        second.start()
        wait_until(lambda: Tick.objects.values("holder").distinct().count() == 2)
        first.join(timeout=10)
        wait_until(lambda: Tick.objects.count() >= 6)
        stops[1].set()
        second.join(timeout=10)
    ticks = list(Tick.objects.order_by("scheduled_at"))
    slots = [tick.scheduled_at.timestamp() for tick in ticks]
    # One tick per slot, one after the other: never two windows at once, no slot left out.
    assert slots == [slots[0] + i for i in range(len(slots))]
    holders = [tick.holder for tick in ticks]
    switch = holders.index(holders[-1])
    assert len(set(holders[:switch])) == len(set(holders[switch:])) == 1
    # The successor polled the very next slot after the last one of its predecessor.
    assert ticks[switch - 1].users_polled == ticks[switch].users_polled == 6
    assert "handed over" in results[0] and results[1].endswith("stopped")
    assert duplicates(logged_keys()) == []
    assert row().holder == ""


@pytest.mark.django_db
def test_a_window_task_leaves_at_once_when_a_foreground_poller_holds_its_shard() -> None:
    foreground = lease(FOREGROUND)
    foreground.acquire(threading.Event(), wait_seconds=0)
    assert run_window(0) == "shard 0 not polled: held by a foreground poller"
    assert (row().holder, row().successor) == (foreground.holder, "")
    assert not Tick.objects.exists()


@pytest.mark.django_db
def test_a_lease_taken_over_from_a_dead_holder_is_never_handed_to_a_dead_successor() -> None:
    # Found by the soak: a window queued up as successor, its cluster was killed, and the window
    # that later claimed the expired lease handed the shard to that dead successor after one tick.
    dead_holder, dead_successor, rescuer = lease(), lease(), lease()
    stop = threading.Event()
    with time_machine.travel(NOW, tick=False) as traveller:
        assert dead_holder.acquire(stop, wait_seconds=0) is Acquisition.CLAIMED
        assert PollLease.objects.wait_as_successor(0, dead_successor.holder, NOW)
        traveller.shift(timedelta(seconds=31))
        assert rescuer.acquire(stop, wait_seconds=0) is Acquisition.CLAIMED
        assert row().successor == ""
        tick_at = NOW + timedelta(seconds=36)
        traveller.move_to(tick_at)
        assert rescuer.after_tick(tick_at, may_hand_over=True) is AfterTick.KEPT
        assert row().holder == rescuer.holder


def session_lease(sessions: list[HolderSession], kind: str = FOREGROUND) -> ShardLease:
    session = HolderSession(kind)
    sessions.append(session)
    return ShardLease(0, session.holder, seconds=30, session=session)


@pytest.fixture
def sessions() -> Iterator[list[HolderSession]]:
    opened: list[HolderSession] = []
    yield opened
    for session in opened:
        session.close()


@pytest.mark.postgresql
@pytest.mark.django_db
def test_a_standby_takes_the_shard_of_a_holder_whose_session_ended_before_its_lease_expires(
    sessions: list[HolderSession],
) -> None:
    holder, standby = session_lease(sessions), session_lease(sessions)
    stop = threading.Event()
    assert holder.acquire(stop, wait_seconds=0) is Acquisition.CLAIMED
    # Alive: the standby waits, whatever its kind.
    assert standby.acquire(stop, wait_seconds=0, leave_to_foreground=False) is Acquisition.GAVE_UP
    assert not is_gone(holder.holder)
    # The holder's process dies: its connection closes and the server frees its lock.
    sessions[0].close()
    wait_until(lambda: is_gone(holder.holder))
    assert row().expires_at is not None and row().expires_at > timezone.now()
    assert standby.acquire(stop, wait_seconds=0, leave_to_foreground=False) is (Acquisition.CLAIMED)
    assert row().holder == standby.holder and not standby.handed_over
    # A window task, too, passes over a dead foreground holder instead of leaving.
    sessions[1].close()
    window = session_lease(sessions, WINDOW)
    assert window.acquire(stop, wait_seconds=0) is Acquisition.CLAIMED


@pytest.mark.postgresql
@pytest.mark.django_db
def test_a_holder_cut_off_from_its_session_lock_stops_writing_and_gives_the_shard_up(
    sessions: list[HolderSession],
) -> None:
    holder = session_lease(sessions)
    holder.acquire(threading.Event(), wait_seconds=0)
    assert holder.is_valid() and sessions[0].intact()
    key = int(holder.holder.rsplit("=", 1)[1])
    with connection.cursor() as cursor:
        # Its lock's backend, ended by the server (a restart, an administrator).
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND classid = %s AND objid = %s AND objsubid = 1",
            [key >> 32, key & 0xFFFFFFFF],
        )
        assert cursor.fetchall() == [(True,)]
    wait_until(lambda: not sessions[0].intact())
    assert not holder.is_valid()
    assert holder.after_tick(timezone.now(), may_hand_over=True) is AfterTick.LOST
    assert row().holder == ""


def test_a_holder_name_without_a_session_lock_is_never_taken_for_dead() -> None:
    # A holder on SQLite, or named by hand: only its lease's expiry frees the shard.
    assert not is_gone(holder_name(FOREGROUND))
