"""Driving the poller against the EAGLE simulator with the clock under the test's control.

`PollingRun` owns a simulator whose meters follow a movable clock, the EAGLE users made from its
accounts, and a Poller. Each `tick()` moves the clock (time-machine for the process, the same
value for the meters) to the next slot of the grid and runs one tick there, so minutes of meter
time pass in a moment and every test sees the same sequence of readings.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import time_machine
from django.conf import settings
from django.db import connection

from ingestion.eagle.simulator import FaultPlan, Simulator
from ingestion.hourfiles import iter_records
from ingestion.polling.engine import Poller, TickReport
from ingestion.polling.leases import holder_name
from users.models import EagleUser

# A multiple of 6 and of 60: slots of the default grid start here.
START = 1_790_000_040.0
Key = tuple[str, str, int]


class Clock:
    """The simulator's clock; `PollingRun` moves it together with the process's time."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def create_users(sim: Simulator, count: int | None = None) -> list[EagleUser]:
    accounts = sim.accounts()[:count]
    return [
        EagleUser.objects.create(
            cloud_id=account["cloud_id"],
            email=account["user_email"],
            eagle_password=account["user_pw"],
        )
        for account in accounts
    ]


def wait_until(condition: Callable[[], object], seconds: float, what: str) -> None:
    """Poll for what other processes bring about (bounded; never a fixed sleep)."""
    pause = threading.Event()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        pause.wait(0.25)
    raise AssertionError(f"within {seconds} s: {what}")


def current_database_url() -> str:
    """The URL of the database this test runs against, for a process started by the test."""
    database = connection.settings_dict
    return (
        f"postgres://{database['USER']}@{database['HOST'] or '127.0.0.1'}:"
        f"{database['PORT'] or 5432}/{database['NAME']}"
    )


def logged_keys(root: Path | None = None) -> list[Key]:
    """(cloud_id, record type, meter timestamp) of every line in every local hour file."""
    keys = []
    for path in sorted(Path(root or settings.LOG_ROOT).glob("*/*.jl")):
        for record in iter_records(path):
            keys.append((record["cloud_id"], record["record_type"], record["meter_timestamp"]))
    return keys


def duplicates(keys: list[Key]) -> list[Key]:
    return [key for key, count in Counter(keys).items() if count > 1]


class PollingRun:
    def __init__(self, sim: Simulator, clock: Clock, traveller: time_machine.Coordinates) -> None:
        self.sim = sim
        self.clock = clock
        self.traveller = traveller
        self.poller = self.new_poller()

    def new_poller(self, from_files: bool = True, poller_class: type[Poller] = Poller) -> Poller:
        poller = poller_class([0], holder_name("test"))
        poller.load_users()
        poller.resume(from_files=from_files)
        return poller

    def restart(self, from_files: bool = True, poller_class: type[Poller] = Poller) -> Poller:
        """A new poller, as after a restart (the old one's files are closed, nothing else)."""
        self.poller.close()
        self.poller = self.new_poller(from_files, poller_class)
        return self.poller

    def move_to(self, moment: float) -> None:
        self.clock.now = moment
        self.traveller.move_to(moment)

    def tick(self) -> TickReport:
        """Run the tick of the next slot of the grid."""
        period = settings.INGEST_POLL_SECONDS
        self.move_to((self.clock.now // period + 1) * period)
        return self.poller.run_tick(self.clock.now)

    def served(self, record_type: str | None = None) -> set[Key]:
        """Every reading the simulator sent in a good reply up to now."""
        return {
            truth.dedup_key
            for truth in self.sim.ground_truth(record_type=record_type)
            if truth.served
        }


@contextmanager
def polling_run(
    settings: Any,
    users: int,
    *,
    create: int | None = None,
    faults: FaultPlan | None = None,
    start: float = START,
    seed: int = 3,
    latency: float = 0.0,
) -> Iterator[PollingRun]:
    """A simulator with `users` gateways answering after `latency` seconds, `create` of them
    (default all) as EAGLE users, and a poller resumed at `start`. `settings` is pytest-django's
    fixture; configure it before entering: the poller reads it."""
    clock = Clock(start)
    with time_machine.travel(start, tick=False) as traveller:
        with Simulator(
            users, latency=latency, seed=seed, faults=faults, clock=clock, timeout_hold=2.0
        ) as sim:
            settings.EAGLE_CLOUD_URL = sim.cloud_url
            create_users(sim, create if create is not None else users)
            run = PollingRun(sim, clock, traveller)
            try:
                yield run
            finally:
                run.poller.close()
