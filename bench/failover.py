"""`make bench-failover`: how soon a standby `manage.py poll` takes the shards of one that dies or
stops, and what that costs the users.

    python -m bench.failover [--users 500] [--rounds 3]

Set-up, in a temporary directory removed at the end: a fresh bench database (BENCH_DATABASE_URL,
default postgres://postgres@127.0.0.1:5432/rainlog_bench_failover) holding one EAGLE user per
gateway of the simulator (in this process), and two `manage.py poll` processes for every shard:
one polls, the other stands by.

Each round SIGKILLs the poller holding the shards, starts it again (the new standby), then sends
SIGTERM to the one holding them and starts that one again. For each signal: the seconds until the
standby holds the lease (its row read every 10 ms), how long the dead holder's lease still had
to run (what a standby would wait without the session lock), and the tick slots of the 6-second
grid left unpolled between the last tick of one holder and the first of the next (0: no user
missed a poll).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.support import configure_django, load_average, recreate_database

DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/rainlog_bench_failover"
)
BASE_DIR = Path(__file__).resolve().parent.parent
POLL_SECONDS = 6.0
# How often the lease row is read while waiting for a takeover.
WATCH_SECONDS = 0.01


def wait_until(condition: Callable[[], object], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not within {seconds:.0f} s: {what}")
        time.sleep(WATCH_SECONDS)


class Poller:
    """One `manage.py poll` in a process group of its own."""

    def __init__(self, label: str, env: dict[str, str], work: Path) -> None:
        self.label = label
        self.env = env
        self.log = work / f"poll-{label}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "poll"],
                cwd=BASE_DIR,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def holder() -> str:
    from ingestion.models import PollLease

    return PollLease.objects.filter(shard=0).values_list("holder", flat=True).first() or ""


def successor() -> str:
    from ingestion.models import PollLease

    return PollLease.objects.filter(shard=0).values_list("successor", flat=True).first() or ""


def holds(poller: Poller) -> bool:
    return f":{poller.pid}:" in holder()


def has_polled(poller: Poller) -> bool:
    from ingestion.models import Tick

    name = holder()
    return (
        f":{poller.pid}:" in name and Tick.objects.filter(holder=name, users_polled__gt=0).exists()
    )


def missed_slots(before: str, after: str) -> int:
    """Grid slots between the last polled tick of `before` and the first of `after`."""
    from ingestion.models import Tick

    polled = Tick.objects.filter(users_polled__gt=0)
    last = polled.filter(holder=before).order_by("-scheduled_at").first()
    first = polled.filter(holder=after).order_by("scheduled_at").first()
    assert last is not None and first is not None
    return round((first.scheduled_at - last.scheduled_at).total_seconds() / POLL_SECONDS) - 1


def take_over(
    signum: int, holding: Poller, standby: Poller
) -> tuple[float, float | None, int, float]:
    """Signal the holder; (seconds until the standby holds the shard, seconds the dead holder's
    lease still had to run then (SIGKILL), slots missed, seconds until the holder was gone)."""
    from django.conf import settings

    from ingestion.models import PollLease, Tick

    dead_holder = holder()
    renewed_at = PollLease.objects.get(shard=0).expires_at
    signalled = time.time()
    assert holding.process is not None and renewed_at is not None
    if signum == signal.SIGKILL:
        os.killpg(holding.pid, signum)
    else:
        holding.process.send_signal(signum)
    wait_until(lambda: holds(standby), 60, "the standby takes the shard")
    took = time.time() - signalled
    lease_left = None
    if signum == signal.SIGKILL:
        # Its last renewal may have come after the row was read.
        last = Tick.objects.filter(holder=dead_holder).order_by("-finished_at").first()
        expires = renewed_at.timestamp()
        if last is not None:
            expires = max(expires, last.finished_at.timestamp() + settings.INGEST_LEASE_SECONDS)
        lease_left = expires - (signalled + took)
    holding.process.wait(60)
    gone = time.time() - signalled
    wait_until(lambda: has_polled(standby), 60, "the standby polls")
    return took, lease_left, missed_slots(dead_holder, holder()), gone


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rainlog-bench-failover-"))
    pollers: list[Poller] = []
    try:
        configure_django(work, DATABASE_URL, INGEST_POLL_SECONDS=str(POLL_SECONDS))
        recreate_database(DATABASE_URL)
        import django

        django.setup()
        from django.core.management import call_command

        from bench.poll import create_users
        from ingestion.eagle.simulator import Simulator

        call_command("migrate", verbosity=0)
        # A killed poller leaves requests half-read: the simulator's server would log each.
        logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
        simulator = Simulator(args.users, latency=0.05, seed=1).start()
        create_users(simulator.accounts())
        env = {**os.environ, "EAGLE_CLOUD_URL": simulator.cloud_url}
        pollers = [Poller(label, env, work) for label in ("a", "b")]
        pollers[0].start()
        wait_until(lambda: has_polled(pollers[0]), 120, "the first poller polls")
        pollers[1].start()
        wait_until(lambda: f":{pollers[1].pid}:" in successor(), 120, "the standby waits")
        print(f"bench-failover: {args.users:,} users, two `manage.py poll`, load {load_average()}")
        results: dict[str, list[float]] = {"SIGKILL": [], "SIGTERM": []}
        holding, standby = pollers
        for _ in range(args.rounds):
            for signum in (signal.SIGKILL, signal.SIGTERM):
                name = signal.Signals(signum).name
                took, lease_left, missed, gone = take_over(signum, holding, standby)
                results[name].append(took)
                line = f"  {name}: the standby held the shard after {took:.2f} s"
                if lease_left is not None:
                    line += f" (the dead holder's lease had {lease_left:.1f} s left)"
                else:
                    line += f" (the holder had exited after {gone:.2f} s)"
                print(f"{line}; {missed} tick slots missed")
                holding.start()
                wait_until(lambda h=holding: f":{h.pid}:" in successor(), 120, "a new standby")
                holding, standby = standby, holding
        for name, times in results.items():
            print(
                f"{name}: takeover median {statistics.median(times):.2f} s, "
                f"max {max(times):.2f} s over {len(times)}"
            )
        print(f"load {load_average()}")
        simulator.stop()
        return 0
    finally:
        for poller in pollers:
            poller.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
