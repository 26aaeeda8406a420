"""Pollers stop within 30 s of SIGTERM and hand their shard over at once; a standby takes a dead
holder's shard. Real processes (`manage.py poll`, `manage.py qcluster`) against the simulator;
the bounds are the requirements' (30 s to stop), not measures of speed."""

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from django.conf import settings as django_settings
from django.utils import timezone
from django_q.brokers.redis_broker import Redis
from django_q.conf import Conf
from django_q.models import Schedule
from django_q.tasks import async_task
from pytest_django.fixtures import Settings

from ingestion.eagle.simulator import Simulator
from ingestion.models import PollLease, Tick
from ingestion.polling.leases import FOREGROUND, WINDOW
from tests.polling import create_users, current_database_url, wait_until

REDIS_URL = "redis://127.0.0.1:6379/0"
POLL_SECONDS = 2
LEASE_SECONDS = 5
# What is asked of every poller: gone, its shard free, within this long of SIGTERM.
STOP_SECONDS = 30

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def simulator(db: None) -> Iterator[Simulator]:
    with Simulator(users=12, seed=5) as sim:
        create_users(sim)
        yield sim


def environment(settings: Settings, sim: Simulator, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": current_database_url(),
        "Q_SYNC": "0",
        "INGEST_SHARDS": "1",
        "INGEST_POLL_SECONDS": str(POLL_SECONDS),
        "INGEST_REQUEST_TIMEOUT": "0.5",
        "INGEST_LEASE_SECONDS": str(LEASE_SECONDS),
        "LOG_ROOT": str(settings.LOG_ROOT),
        "EAGLE_CLOUD_URL": sim.cloud_url,
        **extra,
    }


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as output:
        return subprocess.Popen(
            [sys.executable, str(Path(django_settings.BASE_DIR) / "manage.py"), *command],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def lease() -> PollLease:
    PollLease.objects.ensure([0])
    return PollLease.objects.get(shard=0)


def polled_by(kind: str, pid: int | None = None) -> bool:
    """Whether a holder of that kind (in that process) holds shard 0 and has polled it."""
    holder = lease().holder
    if not holder.startswith(f"{kind}@") or (pid is not None and f":{pid}:" not in holder):
        return False
    return Tick.objects.filter(holder=holder, users_polled__gt=0).exists()


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def stopped_within(process: subprocess.Popen[bytes], seconds: float, log: Path) -> int:
    try:
        return process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        left = subprocess.run(
            ["ps", "-o", "pid,ppid,stat,wchan:24,args", "-g", str(process.pid)],
            capture_output=True,
            text=True,
        ).stdout
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise AssertionError(
            f"still running {seconds} s after SIGTERM:\n{left}\n{log.read_text()}"
        ) from None


def kill_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if not group_gone(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextmanager
def poller_and_standby(
    env: dict[str, str], log: Path
) -> Iterator[tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]]:
    """A `manage.py poll` polling shard 0, and a second one waiting for it."""
    started = [start(["poll"], env, log)]
    try:
        wait_until(lambda: polled_by(FOREGROUND, started[0].pid), 60, "the first poller polls")
        started.append(start(["poll"], env, log))
        wait_until(lambda: lease().successor != "", 60, "the standby waits for the shard")
        yield started[0], started[1]
    finally:
        kill_all(started)


def test_manage_py_poll_stops_on_sigterm_and_hands_the_shard_to_its_standby_at_once(
    settings: Settings, simulator: Simulator, tmp_path: Path
) -> None:
    log = tmp_path / "poll.log"
    with poller_and_standby(environment(settings, simulator), log) as (first, standby):
        first.send_signal(signal.SIGTERM)
        assert stopped_within(first, STOP_SECONDS, log) == 0
        wait_until(lambda: polled_by(FOREGROUND, standby.pid), 60, "the standby polls")
    slots = list(Tick.objects.order_by("scheduled_at").values_list("scheduled_at", "holder"))
    handed_over_at = next(i for i, (_, holder) in enumerate(slots) if f":{standby.pid}:" in holder)
    # Handed over at a tick boundary: the standby's first tick is the slot after the last one.
    previous, first_of_standby = slots[handed_over_at - 1][0], slots[handed_over_at][0]
    assert (first_of_standby - previous).total_seconds() == POLL_SECONDS


def test_a_standby_takes_a_killed_pollers_shard_once_its_lease_runs_out(
    settings: Settings, simulator: Simulator, tmp_path: Path
) -> None:
    with poller_and_standby(environment(settings, simulator), tmp_path / "poll.log") as (
        first,
        standby,
    ):
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        wait_until(lambda: polled_by(FOREGROUND, standby.pid), 60, "the standby polls")
    # The slots the dead holder left are recorded as late, none silently skipped, and no more
    # than a lease's length of them.
    slots = list(Tick.objects.order_by("scheduled_at").values_list("scheduled_at", flat=True))
    assert all(
        (b - a).total_seconds() == POLL_SECONDS for a, b in zip(slots, slots[1:], strict=False)
    )
    missed = Tick.objects.filter(users_polled=0, users_due=0, late=True).count()
    assert missed <= LEASE_SECONDS // POLL_SECONDS + 1


def test_a_standby_takes_a_killed_pollers_shard_at_once_without_waiting_for_its_lease(
    settings: Settings, simulator: Simulator, tmp_path: Path
) -> None:
    """The dead holder's session lock frees as its connection closes: the standby takes the shard
    long before a 30-s lease would run out, and the kill costs at most the slot it was in."""
    log = tmp_path / "poll.log"
    env = environment(settings, simulator, INGEST_LEASE_SECONDS="30")
    with poller_and_standby(env, log) as (first, standby):
        dead_until = lease().expires_at
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        wait_until(lambda: f":{standby.pid}:" in lease().holder, 60, "the standby takes the shard")
        taken_at = timezone.now()
        wait_until(lambda: polled_by(FOREGROUND, standby.pid), 60, "the standby polls")
    assert dead_until is not None and taken_at < dead_until, log.read_text()
    ticks = list(Tick.objects.order_by("scheduled_at").values_list("scheduled_at", "holder"))
    slots = [at for at, _ in ticks]
    # Each slot once: the standby neither runs the dead holder's last tick again nor skips one.
    assert all(
        (b - a).total_seconds() == POLL_SECONDS for a, b in zip(slots, slots[1:], strict=False)
    ), ticks
    assert Tick.objects.filter(users_polled=0, users_due=0, late=True).count() <= 1


@pytest.mark.parametrize("to_every_process", [False, True], ids=["main-process", "every-process"])
def test_qcluster_stops_within_30_seconds_of_sigterm_and_frees_the_shard(
    settings: Settings,
    simulator: Simulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    to_every_process: bool,
) -> None:
    """`kill <pid>` reaches the main process only; systemd's default reaches every process."""
    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.ConnectionError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    name = f"rainlog-test-{secrets.token_hex(4)}"
    Schedule.objects.all().delete()
    env = environment(settings, simulator, REDIS_URL=REDIS_URL, Q_CLUSTER_NAME=name, Q_WORKERS="2")
    broker = Redis(list_key=name)
    # Tasks are signed with the cluster's name: sign ours as the cluster's scheduler would.
    monkeypatch.setattr(Conf, "PREFIX", name)
    log = tmp_path / "cluster.log"
    cluster = start(["qcluster"], env, log)
    try:
        async_task("ingestion.tasks.poll_window", 0, broker=broker, sync=False)
        wait_until(lambda: polled_by(WINDOW), 60, "a window polls")
        stop_asked = timezone.now()
        if to_every_process:
            os.killpg(cluster.pid, signal.SIGTERM)
        else:
            cluster.send_signal(signal.SIGTERM)
        stopped_within(cluster, STOP_SECONDS, log)
        wait_until(lambda: group_gone(cluster.pid), STOP_SECONDS, "every process of it gone")
    finally:
        kill_all([cluster])
        broker.delete_queue()
    shard = lease()
    assert shard.holder == "", log.read_text()
    # It stopped after the tick under way, not at the end of its window.
    last_tick = Tick.objects.order_by("-scheduled_at").first()
    assert last_tick is not None and last_tick.finished_at <= shard.updated_at
    assert (shard.updated_at - stop_asked).total_seconds() < STOP_SECONDS
