"""`make soak`: the whole chain under faults, from simulated EAGLEs to S3, checked against ground truth.

    SOAK_MINUTES=10 SOAK_USERS=2000 SOAK_SEED=<random> python -m bench.soak

Set-up, all on 127.0.0.1, everything removed at the end (also on Ctrl-C or failure):
- a dedicated PostgreSQL database (SOAK_DATABASE_URL, default .../rainlog_soak), created, migrated
  and dropped; Redis (REDIS_URL, default redis://127.0.0.1:6379/0) as the django-q2 broker, with
  cluster names unique to the run;
- moto's S3 server in a process of its own, reached through a TCP proxy the soak controls (an
  S3 outage refuses and drops connections while moto keeps its objects);
- the EAGLE simulator (in this process) with SOAK_USERS gateways, every fault class on at low
  fleet-wide rates, and a simulated clock: it starts two days back and, every SEGMENT real
  seconds, jumps to just before the next hour boundary, so every segment crosses an hour and
  many hours close and rotate within minutes;
- LOG_ROOT on a small tmpfs mounted for the run (a disk that can be filled);
- two `manage.py poll` processes, each in a process group of its own: one polls, the other stands
  by for the shards and takes them when the first dies (its session lock frees) or stops;
- a `manage.py qcluster` for the rotation, which runs `rotate_closed_hours` with the simulated
  time the soak sends it. The production schedules are removed: the polling windows would leave
  the foreground pollers' shards alone anyway, and the rotation judges hours closed by the real
  clock, for which every simulated hour is long over.

During the run: the poller holding the shards and the rotation are killed (SIGKILL to the
process group) at random moments and restarted (a restarted poller is the new standby), S3 goes
away for a while, the log disk fills up and empties again, some
accounts' credentials turn bad (the poller suspends them) and good again (an operator reactivates
them with `EagleUser.activate()`), some gateways stall or lose their meter.

At the end the clusters are stopped, the clock moves past the last hour, a final rotation ships
everything closed, and every demand reading the meters produced is looked for in the archive (every
object under the prefix, read with boto3 and checked against the manifest), through
`ingestion.retrieval.iter_readings` (for a sample of users) and in local leftovers. A reading
missing from the archive is excluded from "lost" only when it could not be observed, each reason
counted on its own: the gateway failed every poll during the reading's life (or was being backed
off from after a failure, or refused the account; a request the poller gave up on before the
answer, its timeout on a loaded machine, is a failure), or no poller was alive while it was current,
(from a kill until the first request of the poller that took over), or the poller that fetched
it was killed before it could write it, or the simulator answered a
killed poller's request after its death, or the poller recorded a late tick for the reading's
shard while it was current or when it was answered (it fell behind: a loaded machine), or a jump
of the simulated clock cut its life shorter than the time between two requests of consecutive
ticks. Anything else missing, any
duplicate, or anything left unarchived fails the run (exit status 1). How much was archived
("coverage %") depends on the machine's load and is reported, not judged.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.support import drop_database, free_port, moto_server, recreate_database

BASE_DIR = Path(__file__).resolve().parent.parent
BUCKET = "rainlog-soak"
HOUR = 3600.0
DAY = 86400.0
FLEET_FAULT_RATES = {
    # Per request, fleet-wide: roughly one request in a hundred goes wrong somehow.
    "timeout": 0.002,
    "reset": 0.002,
    "http_5xx": 0.002,
    "html": 0.001,
    "truncated": 0.001,
    "wrong_root": 0.001,
    "error_reply": 0.002,
    "false_zero": 0.001,
    "unknown_cloud_id": 0.0003,
    "bad_credentials": 0.0003,
}
# The line of the report that carries the figures as JSON (read by the short soak test).
FIGURES_PREFIX = "soak figures: "
POLL_SECONDS = 6.0
# The pollers' INGEST_REQUEST_TIMEOUT.
REQUEST_TIMEOUT_SECONDS = 4.0
# Threads reading the archive back at the end.
READERS = 16
# How long one rotation task runs. Scheduled every minute, so two overlap (two rotations at
# once are safe by design, and the soak checks it); after a kill the cluster's scheduler starts
# the next one within about half a minute.
ROTATION_TASK_SECONDS = 110.0
# Seconds between two rotation passes in the rotation cluster's task.
ROTATION_PAUSE_SECONDS = 2.0
# The final rotation gives up after this long even while it makes progress (a broken run).
FINAL_ROTATION_CAP_SECONDS = 1800.0
# Gateways put in a window fault (stall, not joined) per occurrence, as a share of the fleet.
WINDOW_FAULT_SHARE = 0.005


@dataclass(frozen=True)
class SoakConfig:
    minutes: float = 10.0
    users: int = 2000
    seed: int = 0
    # Real seconds per simulated hour (each segment crosses one hour boundary).
    segment_seconds: float = 20.0
    database_url: str = "postgres://postgres@127.0.0.1:5432/rainlog_soak"
    redis_url: str = "redis://127.0.0.1:6379/0"
    name: str = "soak"
    poller_kills: int = 4
    rotation_kills: int = 4
    s3_outage_seconds: float = 45.0
    disk_full_seconds: float = 30.0
    bad_credential_users: int = 10
    bad_credential_seconds: float = 90.0
    suspend_after: int = 3
    max_backoff_seconds: int = 60
    lease_seconds: int = 10
    # Real seconds from a kill to the restart.
    restart_after: tuple[float, float] = (2.0, 8.0)
    # Users whose archive is also read through the retrieval API.
    retrieval_sample: int = 40
    stop_seconds: float = 10.0
    tmpfs_size: str = "256m"

    @property
    def seconds(self) -> float:
        return self.minutes * 60


# --- The simulated clock and the recording simulator ----------------------------------------------


class SimulatedClock:
    """Unix seconds that run with the real clock but jump forward between segments.

    Segment i covers simulated [H_i - half, H_i + half) for the hour boundary H_i, so the hours
    skipped by a jump hold no reading anyone could have seen.
    """

    def __init__(self, first_boundary: float, segment_seconds: float, share: Path) -> None:
        self.half = segment_seconds / 2
        self.boundary = first_boundary
        # Where the rotation cluster reads the clock: the offset from the real clock.
        self.share = share
        now = time.time()
        self.offset = first_boundary - self.half - now
        # (simulated start, real start, simulated end or None while current)
        self.segments: list[list[Any]] = [[first_boundary - self.half, now, None]]
        self._lock = threading.Lock()
        self._publish()

    def _publish(self) -> None:
        temporary = self.share.with_name(self.share.name + ".new")
        temporary.write_text(repr(self.offset))
        os.replace(temporary, self.share)

    def __call__(self) -> float:
        return time.time() + self.offset

    def jump_if_due(self) -> bool:
        if self() < self.boundary + self.half:
            return False
        self.jump_to(self.boundary + HOUR - self.half)
        self.boundary += HOUR
        return True

    def jump_to(self, simulated: float) -> None:
        with self._lock:
            now = time.time()
            self.segments[-1][2] = now + self.offset
            self.offset = simulated - now
            self.segments.append([simulated, now, None])
            self._publish()

    def close(self) -> None:
        self.segments[-1][2] = self()

    def observable_seconds(self, start: float, end: float) -> float:
        """How long the clock showed a moment in [start, end): its overlap with the segments."""
        return sum(
            max(0.0, min(end, sim_end if sim_end is not None else self()) - max(start, sim_start))
            for sim_start, _, sim_end in self.segments
        )

    def to_simulated(self, real: float) -> float:
        """What the clock showed at the real moment `real` (unix seconds)."""
        starts = [segment[1] for segment in self.segments]
        i = max(0, bisect.bisect_right(starts, real) - 1)
        sim_start, real_start, _ = self.segments[i]
        return sim_start + (real - real_start)

    def to_real(self, simulated: float) -> float:
        """The real moment the clock showed `simulated` (the next segment's start if skipped)."""
        starts = [segment[0] for segment in self.segments]
        i = max(0, bisect.bisect_right(starts, simulated) - 1)
        sim_start, real_start, sim_end = self.segments[i]
        if sim_end is not None and simulated >= sim_end and i + 1 < len(self.segments):
            return self.segments[i + 1][1]
        return real_start + (simulated - sim_start)


def make_simulator(users: int, seed: int, clock: SimulatedClock, timeout_hold: float) -> Any:
    from ingestion.eagle.simulator import Simulator

    class RecordingSimulator(Simulator):
        """The simulator, also noting every request it answered: when, and whether it went well
        (for the poller: one it gave up on before the answer was a failure, which it backed
        off from, like one the simulator failed on purpose)."""

        def __init__(self) -> None:
            super().__init__(users, latency=0.05, seed=seed, clock=clock, timeout_hold=timeout_hold)
            # cloud_id -> [(simulated time, good?)]
            self.request_log: dict[str, list[tuple[float, bool]]] = defaultdict(list)
            self.request_times: list[float] = []
            # (cloud_id, simulated time) of the good replies the poller had given up on.
            self.given_up: set[tuple[str, float]] = set()
            # id(request) -> when it arrived; (cloud_id, index in its log) of the one answered.
            self._arrived: dict[int, float] = {}
            self._answering: tuple[str, int] | None = None

        def _faults_for(self, cloud_id: str, now: float) -> Any:
            event, stall, not_joined = super()._faults_for(cloud_id, now)
            good = event is None and stall is None and not not_joined
            self.request_log[cloud_id].append((now, good))
            self.request_times.append(now)
            self._answering = (cloud_id, len(self.request_log[cloud_id]) - 1)
            return event, stall, not_joined

        def _receive(self, request: Any) -> None:
            self._arrived[id(request)] = time.monotonic()
            super()._receive(request)

        def _answer(self, request: Any) -> None:
            # The pollers' HTTP client closes the connection of a request it gives up on (its
            # timeout), never only its sending half.
            gone = request.client_closed
            self._answering = None
            super()._answer(request)
            arrived = self._arrived.pop(id(request), None)
            late = arrived is not None and time.monotonic() - arrived > REQUEST_TIMEOUT_SECONDS
            if self._answering is not None and (gone or late):
                # The poller's request timed out (a loaded machine): a failure as it saw it.
                cloud_id, index = self._answering
                moment, good = self.request_log[cloud_id][index]
                self.request_log[cloud_id][index] = (moment, False)
                if good:
                    self.given_up.add((cloud_id, moment))

    return RecordingSimulator()


# --- Processes and plumbing --------------------------------------------------------------------


class S3Proxy:
    """A TCP proxy in front of moto's server that can refuse and drop every connection."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.down = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="s3-proxy", daemon=True)

    def start(self) -> S3Proxy:
        self._thread.start()
        self._started.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def set_down(self, down: bool) -> None:
        self.down = down
        if down:
            self._loop.call_soon_threadsafe(self._drop_all)

    def _drop_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", self.port)
        )
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            self._loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with suppress(OSError, asyncio.CancelledError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort() if self.down else sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))


class Cluster:
    """One `manage.py` command (`qcluster`, `poll`) in a process group of its own, so a kill takes
    its workers too."""

    def __init__(
        self, name: str, env: dict[str, str], log: Path, command: str = "qcluster"
    ) -> None:
        self.name = name
        self.env = {**env, "Q_CLUSTER_NAME": name}
        self.log = log
        self.command = command
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def label(self) -> str:
        return self.name.rsplit("-", 1)[1]

    def start(self) -> None:
        with open(self.log, "ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", self.command],
                cwd=BASE_DIR,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1

    def _signal(self, signum: int) -> None:
        if self.process is not None:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()
        self.process = None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL for whatever of the group is left after `timeout` seconds."""
        if self.process is None:
            return
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        self._signal(signal.SIGKILL)
        self.process.wait()
        self.process = None


@contextmanager
def log_disk(path: Path, size: str) -> Iterator[bool]:
    """A tmpfs of `size` at `path` for LOG_ROOT; yields False (a plain directory) if it cannot."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "soak-logs", str(path)],
            capture_output=True,
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted and subprocess.run(["umount", str(path)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill_disk(root: Path) -> Path:
    """Fill the file system of `root` with one file; returns it (remove it to free the space)."""
    filler = root / ".soak-filler"
    chunk = b"\0" * (1 << 20)
    with open(filler, "wb", buffering=0) as out:
        with suppress(OSError):
            while True:
                out.write(chunk)
        # The last partial pages too: a write of a few bytes must fail as well.
        with suppress(OSError):
            while True:
                out.write(b"\0" * 4096)
    return filler


def keep_logs(work: Path, target: Path) -> None:
    """The clusters' and moto's logs of the last run, for a look after a failure."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True, exist_ok=True)
    for log in work.glob("*.log"):
        shutil.copy(log, target / log.name)


def soak_environment(config: SoakConfig, work: Path, s3_endpoint: str) -> dict[str, str]:
    return {
        "DJANGO_SETTINGS_MODULE": "rainlog.settings",
        "RAINLOG_ENV_FILE": str(work / "no.env"),
        "DEBUG": "0",
        "SECRET_KEY": "soak-secret-key-long-enough-for-django-checks-0123456789abcdef",
        "FIELD_ENCRYPTION_KEYS": "c29hay1rZXktc29hay1rZXktc29hay1rZXktc29hay0=",
        "DATABASE_URL": config.database_url,
        "REDIS_URL": config.redis_url,
        "SECURE_SSL_REDIRECT": "0",
        "VAR_DIR": str(work),
        "LOG_ROOT": str(work / "logs"),
        "ARCHIVE_BUCKET": BUCKET,
        "AWS_S3_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "soak",
        "AWS_SECRET_ACCESS_KEY": "soak",
        "AWS_DEFAULT_REGION": "us-east-1",
        # Tasks go through Redis to the clusters, never run in the caller (a test suite's Q_SYNC).
        "Q_SYNC": "0",
        "ERROR_REPORT_URL": "",
        "Q_WORKERS": "3",
        "INGEST_POLL_SECONDS": str(POLL_SECONDS),
        "INGEST_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT_SECONDS),
        "INGEST_LEASE_SECONDS": str(config.lease_seconds),
        "INGEST_SUSPEND_AFTER_AUTH_FAILURES": str(config.suspend_after),
        "INGEST_MAX_BACKOFF_SECONDS": str(config.max_backoff_seconds),
        "ROTATE_LEASE_SECONDS": "30",
        "ROTATE_RETRY_MAX_SECONDS": "60",
        "ROTATE_GRACE_SECONDS": str(max(1, math.floor(config.segment_seconds / 4))),
        "LOG_LEVEL": os.environ.get("SOAK_LOG_LEVEL", "WARNING"),
        "SOAK_CLOCK_FILE": str(work / "clock"),
    }


# --- The rotation task (run by the rotation cluster) -------------------------------------------


def rotate_simulated_hours(seconds: float) -> dict[str, int]:
    """The rotation cluster's task, scheduled every minute: for `seconds`, every few seconds, ship
    the hours closed at the soak's simulated time (read from SOAK_CLOCK_FILE)."""
    share = Path(os.environ["SOAK_CLOCK_FILE"])
    deadline = time.monotonic() + seconds
    totals: Counter[str] = Counter()
    while time.monotonic() < deadline:
        totals.update(rotate_closed_hours(time.time() + float(share.read_text())))
        time.sleep(ROTATION_PAUSE_SECONDS)
    return dict(totals)


def rotate_closed_hours(simulated_now: float) -> dict[str, int]:
    """Ship the hours that are closed at `simulated_now` (over plus ROTATE_GRACE_SECONDS).

    `rotation.rotate()` takes no `now`: it judges hours by the real clock, for which every
    simulated hour is over, so each closed simulated hour is rotated by name instead.
    """
    from django.conf import settings

    from ingestion.archive import rotation

    closed_before = simulated_now - HOUR - settings.ROTATE_GRACE_SECONDS
    totals: Counter[str] = Counter()
    for hour in local_hours(Path(settings.LOG_ROOT)):
        if hour.timestamp() <= closed_before:
            report = rotation.rotate(hour=hour)
            totals.update({"hours": 1, "shipped": report.shipped, "failed": report.failed})
    return dict(totals)


def local_hours(root: Path) -> list[datetime]:
    from ingestion import hourfiles

    hours = []
    for entry in sorted(os.listdir(root)) if root.exists() else []:
        with suppress(ValueError):
            hours.append(hourfiles.parse_hour_label(entry))
    return hours


# --- The run -----------------------------------------------------------------------------------


@dataclass
class Timeline:
    """What the soak did, in simulated time, to classify what could not be observed."""

    # [simulated start, simulated end) while no poller was polling, and the kill moments.
    poller_down: list[list[float]] = field(default_factory=list)
    poller_kills: list[float] = field(default_factory=list)
    # Kill moment -> the holder name of the poller killed then ("" for the start).
    killed_holders: dict[float, str] = field(default_factory=dict)
    # Kill moment -> tick slots between the killed poller's last tick and the next poller's first.
    missed_slots: dict[float, int] = field(default_factory=dict)
    # cloud_id -> [simulated start, simulated end) of refused credentials until reactivation.
    refused: dict[str, list[list[float]]] = field(default_factory=lambda: defaultdict(list))
    events: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@dataclass
class SoakResult:
    figures: dict[str, Any]
    excluded: dict[str, int]
    incidents: dict[str, tuple[int, int]]
    problems: list[str]
    lines: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


class Soak:
    def __init__(self, config: SoakConfig, out: Callable[[str], None] = print) -> None:
        self.config = config
        self.out = out
        self.rng = random.Random(config.seed)
        self._late_ticks: dict[str, list[tuple[float, float]]] = {}
        # Simulated time of a kill (or the final stop) -> readings the simulator served to the
        # poller it ended that were never written.
        self._unwritten_by_kill: Counter[float] = Counter()
        # The same moment -> readings served only in replies to the poller it ended, written
        # after its death into connections nobody read any more.
        self._answered_after_kill: Counter[float] = Counter()
        run_id = f"{config.name}-{os.getpid()}-{random.getrandbits(24):06x}"
        self.poller_name = f"{run_id}-poll"
        self.rotation_name = f"{run_id}-rotate"
        self.timeline = Timeline()
        self.simulator: Any = None
        self.started = 0.0

    def note(self, text: str) -> None:
        elapsed = time.monotonic() - self.started if self.started else 0.0
        line = f"  [{elapsed:6.1f} s] {text}"
        self.timeline.events.append(line)
        self.out(line)

    # --- Set-up ---------------------------------------------------------------------------------

    def run(self) -> SoakResult:
        config = self.config
        work = Path(tempfile.mkdtemp(prefix=f"rainlog-{config.name}-"))
        with ExitStack() as stack:
            stack.callback(shutil.rmtree, work, True)
            stack.callback(keep_logs, work, BASE_DIR / "var" / config.name)
            mounted = stack.enter_context(log_disk(work / "logs", config.tmpfs_size))
            if not mounted:
                self.timeline.skipped.append(
                    "disk full: no tmpfs could be mounted for LOG_ROOT (not root?); not injected"
                )
            moto_port = free_port()
            moto_endpoint, _ = stack.enter_context(moto_server(moto_port, work / "moto.log"))
            proxy = S3Proxy(moto_port).start()
            stack.callback(proxy.stop)
            env = {**os.environ, **soak_environment(config, work, f"http://127.0.0.1:{proxy.port}")}
            env["Q_CLUSTER_NAME"] = self.rotation_name
            os.environ.update(env)
            recreate_database(config.database_url)
            stack.callback(drop_database, config.database_url)
            import django

            django.setup()
            from django.db import connections

            stack.callback(connections.close_all)
            stack.callback(self._purge_redis)
            import boto3
            from botocore.config import Config

            s3 = boto3.client(
                "s3",
                endpoint_url=moto_endpoint,
                region_name="us-east-1",
                config=Config(max_pool_connections=READERS),
            )
            s3.create_bucket(Bucket=BUCKET)
            from django.core.management import call_command

            call_command("migrate", verbosity=0, skip_checks=True)
            self._prepare_schedules()

            first_boundary = (time.time() // HOUR) * HOUR - 2 * DAY
            clock = self.clock = SimulatedClock(
                first_boundary, config.segment_seconds, work / "clock"
            )
            # A killed poller leaves requests half-read: the simulator's server would log a
            # traceback for each of them.
            logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
            simulator = make_simulator(config.users, config.seed, clock, timeout_hold=5.0)
            for kind, rate in FLEET_FAULT_RATES.items():
                simulator.set_fault(None, kind, rate)
            simulator.start()
            stack.callback(simulator.stop)
            os.environ["EAGLE_CLOUD_URL"] = env["EAGLE_CLOUD_URL"] = simulator.cloud_url
            from bench.poll import create_users

            create_users(simulator.accounts())

            pollers = [
                Cluster(f"{self.poller_name}-{label}", env, work / f"poller-{label}.log", "poll")
                for label in ("a", "b")
            ]
            rotation = Cluster(self.rotation_name, env, work / "rotation.log")
            for cluster in (*pollers, rotation):
                stack.callback(cluster.stop, 10)
            self.out(
                f"soak: seed {config.seed}, {config.users:,} gateways, {config.minutes:g} min, "
                f"one simulated hour every {config.segment_seconds:g} s, LOG_ROOT on "
                f"{'a ' + config.tmpfs_size + ' tmpfs' if mounted else 'the local disk'}"
            )
            self.started = time.monotonic()
            self.timeline.poller_down.append([clock(), math.inf])
            for cluster in pollers:
                cluster.start()
            rotation.start()
            self._drive(clock, simulator, pollers, rotation, proxy, work / "logs", mounted)
            # The pollers' last ticks may hold fetched readings: like a kill for those. Ground
            # truth ends once they have stopped, so that whatever those ticks archive was produced.
            stopped_at = clock()
            stopping = [
                threading.Thread(target=c.stop, args=(config.stop_seconds,))
                for c in (*pollers, rotation)
            ]
            for thread in stopping:
                thread.start()
            for thread in stopping:
                thread.join()
            clock.close()
            self._close_down_windows(simulator)
            self.timeline.poller_kills.append(stopped_at)
            self.timeline.poller_down.append([stopped_at, math.inf])
            self.note("clusters stopped; final rotation")
            final_problems = self._final_rotation(clock, proxy)
            return self._verify(clock, simulator, s3, work / "logs", final_problems)
        raise AssertionError("unreachable")

    def _prepare_schedules(self) -> None:
        """The soak's rotation for the rotation cluster, and none of the production schedules
        (registered by `migrate`)."""
        from django.utils import timezone
        from django_q.models import Schedule

        Schedule.objects.all().delete()
        Schedule.objects.create(
            name="soak-rotation",
            func="bench.soak.rotate_simulated_hours",
            args=repr((ROTATION_TASK_SECONDS,)),
            schedule_type=Schedule.MINUTES,
            minutes=1,
            repeats=-1,
            next_run=timezone.now(),
            cluster=self.rotation_name,
        )

    def _purge_redis(self) -> None:
        import redis

        client = redis.Redis.from_url(self.config.redis_url)
        for name in (self.rotation_name,):
            keys = list(client.scan_iter(f"*{name}*"))
            if keys:
                client.delete(*keys)
        client.close()

    # --- The faults -----------------------------------------------------------------------------

    def _plan(self) -> list[tuple[float, str, Any]]:
        """(real seconds from the start, action, argument), in order."""
        config, rng = self.config, self.rng
        span = config.seconds
        plan: list[tuple[float, str, Any]] = []
        for _ in range(config.poller_kills):
            plan.append(
                (rng.uniform(0.15, 0.8) * span, "kill_poller", rng.uniform(*config.restart_after))
            )
        for _ in range(config.rotation_kills):
            plan.append(
                (rng.uniform(0.1, 0.85) * span, "kill_rotation", rng.uniform(*config.restart_after))
            )
        outage = rng.uniform(0.2, 0.6) * span
        plan += [(outage, "s3", True), (outage + config.s3_outage_seconds, "s3", False)]
        full = rng.uniform(0.3, 0.6) * span
        plan += [(full, "disk", True), (full + config.disk_full_seconds, "disk", False)]
        bad = rng.uniform(0.05, 0.2) * span
        plan += [
            (bad, "credentials", True),
            (bad + config.bad_credential_seconds, "credentials", False),
        ]
        for kind in ("stall", "not_joined"):
            start = rng.uniform(0.1, 0.7) * span
            plan += [
                (start, "window", (kind, True)),
                (start + span * 0.15, "window", (kind, False)),
            ]
        return sorted(plan, key=lambda item: item[0])

    def _drive(
        self,
        clock: SimulatedClock,
        simulator: Any,
        pollers: list[Cluster],
        rotation: Cluster,
        proxy: S3Proxy,
        log_root: Path,
        can_fill: bool,
    ) -> None:
        config, rng = self.config, self.rng
        plan = self._plan()
        restarts: list[tuple[float, Cluster]] = []
        ids = sorted(simulator.gateways)
        bad_ids = rng.sample(ids, min(len(ids), config.bad_credential_users))
        window_ids: dict[str, list[str]] = {}
        filler: Path | None = None
        reactivating = False
        next_reactivation = 0.0
        hours = 0
        end = self.started + config.seconds
        while (now := time.monotonic()) < end:
            elapsed = now - self.started
            if clock.jump_if_due():
                hours += 1
            for due_at, cluster in [r for r in restarts if r[0] <= now]:
                restarts.remove((due_at, cluster))
                cluster.start()
                self.note(f"{cluster.label} restarted")
            while plan and plan[0][0] <= elapsed:
                _, action, argument = plan.pop(0)
                if action in ("kill_poller", "kill_rotation"):
                    holder = ""
                    if action == "kill_poller":
                        found = self._polling(pollers)
                        if found is None:
                            continue
                        cluster, holder = found
                    else:
                        cluster = rotation
                    if cluster.process is None:
                        continue
                    cluster.kill()
                    if holder:
                        killed_at = clock()
                        self.timeline.poller_kills.append(killed_at)
                        self.timeline.poller_down.append([killed_at, math.inf])
                        self.timeline.killed_holders[killed_at] = holder
                    restarts.append((now + argument, cluster))
                    self.note(f"SIGKILL {cluster.label}; restart in {argument:.1f} s")
                elif action == "s3":
                    proxy.set_down(argument)
                    self.note("S3 unavailable" if argument else "S3 back")
                elif action == "disk":
                    if not can_fill:
                        continue
                    if argument:
                        filler = fill_disk(log_root)
                        self.note(f"log disk full ({filler.stat().st_size >> 20} MiB filler)")
                    elif filler is not None:
                        filler.unlink()
                        self.note("log disk space back")
                elif action == "credentials":
                    if argument:
                        for cloud_id in bad_ids:
                            simulator.set_fault(cloud_id, "bad_credentials")
                            self.timeline.refused[cloud_id].append([clock(), math.inf])
                        self.note(f"credentials bad for {len(bad_ids)} accounts")
                    else:
                        for cloud_id in bad_ids:
                            simulator.clear_faults(cloud_id, "bad_credentials")
                        reactivating = True
                        self.note("credentials good again")
                elif action == "window":
                    kind, on = argument
                    if on:
                        chosen = rng.sample(ids, max(1, round(len(ids) * WINDOW_FAULT_SHARE)))
                        window_ids[kind] = chosen
                        for cloud_id in chosen:
                            simulator.set_fault(cloud_id, kind)
                        self.note(f"{kind} on {len(chosen)} gateways")
                    else:
                        for cloud_id in window_ids.pop(kind, []):
                            simulator.clear_faults(cloud_id, kind)
                        self.note(f"{kind} over")
            if reactivating and now >= next_reactivation:
                # As an operator answering the incidents: a tick already under way when the
                # credentials turned good may still suspend an account, so look again later.
                reactivated = self._reactivate(bad_ids, clock())
                if reactivated:
                    self.note(f"{reactivated} suspended accounts reactivated")
                next_reactivation = now + 2.0
            for cluster in (*pollers, rotation):
                if cluster.process is not None and cluster.process.poll() is not None:
                    self.note(
                        f"{cluster.name} exited by itself ({cluster.process.returncode}); restarting"
                    )
                    cluster.start()
            time.sleep(0.25)
        if filler is not None and filler.exists():
            filler.unlink()
        proxy.set_down(False)
        simulator.clear_faults()
        self.note(f"faults over after {hours} simulated hours")

    @staticmethod
    def _polling(pollers: list[Cluster]) -> tuple[Cluster, str] | None:
        """The poller holding the shards, and its holder name (None: neither holds them now)."""
        from ingestion.models import PollLease

        for holder in PollLease.objects.exclude(holder="").values_list("holder", flat=True):
            for cluster in pollers:
                if cluster.process is not None and f":{cluster.process.pid}:" in holder:
                    return cluster, holder
        return None

    def _reactivate(self, cloud_ids: list[str], now: float) -> int:
        """Activate the suspended accounts among `cloud_ids`; their refused window ends now."""
        from users.models import EagleUser

        count = 0
        for user in EagleUser.objects.filter(cloud_id__in=cloud_ids, is_active=False):
            user.activate()
            count += 1
        for cloud_id in cloud_ids:
            if count or self.timeline.refused[cloud_id][-1][1] == math.inf:
                self.timeline.refused[cloud_id][-1][1] = now
        return count

    def _close_down_windows(self, simulator: Any) -> None:
        """A down window ends at the first request made after another poller than the one killed
        started a tick (the standby that took over, or the first poller to start): a request
        that arrives between a kill and that tick is the killed poller's."""
        from ingestion.models import Tick

        times = sorted(simulator.request_times)
        ticks = list(Tick.objects.order_by("started_at").values_list("started_at", "holder"))
        polled_slots = list(
            Tick.objects.filter(users_polled__gt=0)
            .order_by("scheduled_at")
            .values_list("scheduled_at", flat=True)
        )
        for window in self.timeline.poller_down:
            killed = self.timeline.killed_holders.get(window[0], "")
            killed_at = self.clock.to_real(window[0])
            took_over = next(
                (
                    started.timestamp()
                    for started, holder in ticks
                    if started.timestamp() >= killed_at and holder != killed
                ),
                None,
            )
            if took_over is None:
                window[1] = math.inf
                continue
            slots = [tick.timestamp() for tick in polled_slots if tick.timestamp() < killed_at]
            if killed and slots:
                following = min(
                    (tick.timestamp() for tick in polled_slots if tick.timestamp() > slots[-1]),
                    default=None,
                )
                if following is not None:
                    self.timeline.missed_slots[window[0]] = (
                        round((following - slots[-1]) / POLL_SECONDS) - 1
                    )
            i = bisect.bisect_left(times, self.clock.to_simulated(took_over))
            window[1] = times[i] if i < len(times) else math.inf

    # --- The end ----------------------------------------------------------------------------

    def _final_rotation(self, clock: SimulatedClock, proxy: S3Proxy) -> list[str]:
        """Ship everything: move the clock past the last hour, retry failed files as an operator
        would (`HourFile.retry()`), until nothing is left or a bounded number of passes."""
        from django.utils import timezone

        from ingestion.models import SETTLED_STATES, HourFile, HourFileState

        proxy.set_down(False)
        after = clock() + HOUR + 600
        # Passes go on while they make progress or rows wait for a killed rotation's claim to
        # lapse (ROTATE_LEASE_SECONDS): how long a pass takes depends on the machine, so no
        # deadline judges the rotation; the cap only keeps a broken one from running for ever.
        give_up_at = time.monotonic() + FINAL_ROTATION_CAP_SECONDS
        previous = math.inf
        while True:
            for row in HourFile.objects.filter(state=HourFileState.FAILED):
                row.retry()
            totals = rotate_closed_hours(after)
            unsettled = HourFile.objects.exclude(state__in=SETTLED_STATES)
            left = unsettled.count()
            claimed = unsettled.filter(claimed_until__gt=timezone.now()).exists()
            self.note(f"final rotation pass: {totals}; {left} manifest rows not settled")
            if not left or (left >= previous and not claimed):
                break
            if time.monotonic() > give_up_at:
                break
            previous = left
            time.sleep(5)
        problems = [f"{left} manifest rows not settled after the final rotation"] if left else []
        missing = HourFile.objects.filter(state=HourFileState.MISSING)
        for row in missing[:20]:
            self.note(f"missing hour file: {row.key}: {row.last_error}")
        if missing.exists():
            problems.append(f"{missing.count()} hour files missing (gone from disk, not archived)")
        return problems

    def _verify(
        self,
        clock: SimulatedClock,
        simulator: Any,
        s3: Any,
        log_root: Path,
        problems: list[str],
    ) -> SoakResult:
        from django.db.models import Count, Q

        from ingestion import retrieval
        from ingestion.hourfiles import iter_records
        from ingestion.models import HourFile, HourFileState, Incident
        from ingestion.records import parse_line

        self.simulator = simulator

        truth: dict[tuple[str, int], Any] = {}
        for sim_start, _, sim_end in clock.segments:
            for reading in simulator.ground_truth(
                record_type="demand", start=sim_start, end=sim_end
            ):
                truth.setdefault((reading.cloud_id, reading.meter_timestamp), reading)

        # The archive: every object under the prefix, whatever the manifest says.
        keys = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            keys += [item["Key"] for item in page.get("Contents", [])]

        def read(key: str) -> tuple[str, list[tuple[str, int]]]:
            body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            found = []
            for line in body.splitlines():
                with suppress(ValueError):
                    record = parse_line(line)
                    if record.get("record_type") == "demand":
                        found.append((record["cloud_id"], record["meter_timestamp"]))
            return key, found

        archived: Counter[tuple[str, int]] = Counter()
        objects_of: defaultdict[tuple[str, int], list[str]] = defaultdict(list)
        with ThreadPoolExecutor(READERS) as pool:
            for key, found in pool.map(read, keys):
                archived.update(found)
                for reading_key in found:
                    objects_of[reading_key].append(key.rsplit("/", 1)[1])
        verified = set(
            HourFile.objects.filter(state=HourFileState.VERIFIED).values_list("key", flat=True)
        )
        orphans = set(keys) - verified
        missing_objects = verified - set(keys)
        if orphans:
            problems.append(f"{len(orphans)} archive objects the manifest does not know")
        if missing_objects:
            problems.append(f"{len(missing_objects)} verified manifest rows without their object")

        leftovers: Counter[tuple[str, int]] = Counter()
        for path in log_root.glob("*/*.jl"):
            for record in iter_records(path):
                if record.get("record_type") == "demand":
                    leftovers[(record["cloud_id"], record["meter_timestamp"])] += 1

        duplicated = sum(count - 1 for count in archived.values() if count > 1)
        for key in sorted(key for key, count in archived.items() if count > 1)[:20]:
            cloud_id, timestamp = key
            self.note(
                f"duplicate: {cloud_id} {datetime.fromtimestamp(timestamp, UTC):%H:%M:%S} "
                f"(real {clock.to_real(timestamp) - self.clock.segments[0][1]:.1f} s into the "
                f"run) in {', '.join(sorted(objects_of[key]))}"
            )
        unexpected = [key for key in archived if key not in truth]
        self._late_ticks = self._late_tick_windows(simulator.gateways)
        excluded: Counter[str] = Counter()
        lost: list[tuple[str, int, str]] = []
        for key, reading in truth.items():
            if archived[key]:
                continue
            if leftovers[key]:
                lost.append((*key, "left on local disk, not archived"))
                continue
            reason = self._unobservable(key, reading, simulator)
            if reason:
                excluded[reason] += 1
            else:
                lost.append((*key, "served" if reading.served else "never polled while current"))

        # Through the retrieval API, for a sample of users.
        sample = self.rng.sample(
            sorted(simulator.gateways), min(self.config.retrieval_sample, len(simulator.gateways))
        )
        first = datetime.fromtimestamp(min(ts for _, ts in truth) - HOUR, UTC)
        last = datetime.fromtimestamp(max(ts for _, ts in truth) + HOUR, UTC)
        retrieval_mismatch = 0
        for cloud_id in sample:
            got = {
                record["meter_timestamp"]
                for record in retrieval.iter_readings(cloud_id, first, last, "demand")
            }
            want = {ts for (cid, ts), count in archived.items() if cid == cloud_id and count}
            for ts in sorted(got ^ want)[:3]:
                where = "only through the API" if ts in got else "only in the archive"
                self.note(f"retrieval mismatch: {cloud_id} {ts} {where}")
            retrieval_mismatch += len(got ^ want)

        incidents = {
            row["failure_class"]: (row["opened"], row["resolved"])
            for row in Incident.objects.values("failure_class").annotate(
                opened=Count("id"), resolved=Count("id", filter=Q(state="resolved"))
            )
        }
        exactly_once = sum(1 for key in truth if archived[key] == 1)
        hours_verified = HourFile.objects.filter(state=HourFileState.VERIFIED).count()
        figures = {
            "readings produced": len(truth),
            "archived exactly once": exactly_once,
            # How much of what the meters produced the chain observed: it depends on the
            # machine's load and the faults' timing, so it is reported, never asserted.
            "coverage %": round(100.0 * exactly_once / len(truth), 1) if truth else 0.0,
            "unobserved, explained": sum(excluded.values()),
            "readings received but not written": sum(self._unwritten_by_kill.values()),
            "readings answered after a kill": sum(self._answered_after_kill.values()),
            "most tick slots missed after a kill": max(
                (self.timeline.missed_slots.get(kill, 0) for kill in self.timeline.poller_kills),
                default=0,
            ),
            "longest unpolled after a kill (s)": round(
                max(
                    (
                        unpolled
                        for kill in self.timeline.poller_kills[:-1]
                        if (unpolled := self._unpolled_seconds(kill)) is not None
                    ),
                    default=0.0,
                ),
                1,
            ),
            "lost": len(lost),
            "duplicated": duplicated,
            "archived but never produced": len(unexpected),
            "hour files verified": hours_verified,
            "archive objects": len(keys),
            "late parts archived": sum(".late-" in key for key in keys),
            "user-hours archived": len({key.rsplit("/", 1)[1].split(".")[0] for key in keys}),
            "hours (simulated)": len(clock.segments),
            "retrieval API mismatches": retrieval_mismatch,
            "retrieval API users checked": len(sample),
            "local leftover readings": sum(leftovers.values()),
            "simulator requests": simulator.requests,
            "faults injected": simulator.faults_injected,
        }
        if lost:
            problems.append(f"{len(lost)} readings lost")
        if duplicated:
            problems.append(f"{duplicated} duplicate readings in the archive")
        if unexpected:
            problems.append(f"{len(unexpected)} archived readings no meter produced")
        if retrieval_mismatch:
            problems.append(
                f"the retrieval API disagrees with the archive on {retrieval_mismatch} readings"
            )
        lines = self._report(figures, excluded, incidents, problems, lost)
        return SoakResult(figures, dict(excluded), incidents, problems, lines)

    def _unobservable(self, key: tuple[str, int], reading: Any, simulator: Any) -> str | None:
        """Why a reading missing from the archive could not have been logged, or None."""
        cloud_id, timestamp = key
        clock = self.clock
        schedule = simulator.gateways[cloud_id].meter.schedules["demand"]
        k = schedule.index_at(timestamp + 0.999999)
        born, gone = schedule.starts_at(k), schedule.starts_at(k + 1)
        log = simulator.request_log.get(cloud_id, [])
        times = [entry[0] for entry in log]
        lo, hi = bisect.bisect_left(times, born), bisect.bisect_left(times, gone)
        during = log[lo:hi]
        if reading.served:
            served = [t for t, good in during if good]
            given_up = [t for t, _ in during if (cloud_id, t) in simulator.given_up]
            answered = served or given_up
            windows = [
                next((start for start, end in self.timeline.poller_down if start <= t < end), None)
                for t in answered
            ]
            if answered and all(start is not None for start in windows):
                # Asked for before a kill, answered after it (a loaded simulator is slow) into a
                # dead connection, while no poller was alive to ask again.
                self._answered_after_kill[windows[0]] += 1  # type: ignore[index]
                return "answered after the poller that asked was killed"
            if not served and given_up:
                # Answered only to requests the poller had given up on: their timeout passed
                # (while its event loop ran: a reply that came in time is read) before the
                # answer, or the answer went to a connection the poller had closed.
                return "answered only after the poller had given up the request"
            # Fetched, then the poller died before writing it, and no poller saw it again.
            served_at = clock.to_real(max((t for t, good in during if good), default=born))
            kill = next(
                (
                    kill
                    for kill in self.timeline.poller_kills
                    if served_at <= clock.to_real(kill) <= served_at + POLL_SECONDS + 1
                ),
                None,
            )
            if kill is not None and not any(
                good and clock.to_real(t) > served_at + POLL_SECONDS + 1 for t, good in during
            ):
                self._unwritten_by_kill[kill] += 1
                return "fetched by a poller killed before it wrote it"
            late = self._late_ticks[cloud_id]
            if served and all(
                any(start <= clock.to_real(t) < end for start, end in late) for t in served
            ):
                # The reply came after its tick's deadline (recorded as a late tick, a loaded
                # machine), and the reading had changed by the next tick.
                return "answered after its tick's deadline (a late tick was recorded)"
            return None
        if during and not any(good for _, good in during):
            return "gateway faulted at every poll while current"
        if during:
            return None
        if any(start < gone and born < end for start, end in self.timeline.poller_down):
            return "no poller running while current"
        if any(
            start < gone and born < end for start, end in self.timeline.refused.get(cloud_id, [])
        ):
            return "credentials refused or account suspended"
        before = log[lo - 1] if lo else None
        if before is not None and not before[1]:
            return "gateway backed off after a failure"
        born_real, gone_real = clock.to_real(born), clock.to_real(gone)
        if any(start < gone_real and born_real < end for start, end in self._late_ticks[cloud_id]):
            # The poller recorded that it fell behind (a busy machine): coverage, not loss.
            return "not polled while current: a late tick was recorded"
        observable = clock.observable_seconds(born, gone)
        if observable < POLL_SECONDS + 0.5:
            # Real meters keep a reading 8-10 s, longer than a poll period; a jump of the soak's
            # clock can end one sooner.
            return "current for less than a poll period before a clock jump"
        if observable < gone - born and 0 < lo and hi < len(log):
            # A jump cut the reading short, between two requests of consecutive ticks that were
            # more than its life apart: a tick's requests go out over its first seconds, and a
            # loaded simulator answers late, but within the tick's fetch budget.
            from ingestion.polling.engine import fetch_budget

            apart = clock.to_real(log[hi][0]) - clock.to_real(log[lo - 1][0])
            if apart < POLL_SECONDS + fetch_budget(POLL_SECONDS):
                return "current between the requests of two consecutive ticks (a clock jump)"
        return None

    def _unpolled_seconds(self, kill: float) -> float | None:
        """How much longer than a poll period a gateway waited for its next request across a
        kill (real seconds, the median over the gateways asked both before and after it; a
        gateway backed off waits longer anyway). None: no request came after it."""
        clock, delays = self.clock, []
        for log in self.simulator.request_log.values():
            times = [entry[0] for entry in log]
            i = bisect.bisect_left(times, kill)
            if 0 < i < len(times):
                waited = clock.to_real(times[i]) - clock.to_real(times[i - 1])
                delays.append(max(0.0, waited - POLL_SECONDS))
        return statistics.median(delays) if delays else None

    def _kill_lines(self) -> list[str]:
        run_start = self.clock.segments[0][1]
        lines = []
        for kill in self.timeline.poller_kills:
            unpolled = self._unpolled_seconds(kill)
            missed = self.timeline.missed_slots.get(kill)
            lines.append(
                f"  {self.clock.to_real(kill) - run_start:7.1f} s: unpolled "
                + (f"{unpolled:4.1f} s" if unpolled is not None else "(no poller after)")
                + (f", {missed} tick slots missed" if missed is not None else "")
                + f", {self._unwritten_by_kill[kill]:,} readings received but not written"
                + f", {self._answered_after_kill[kill]:,} answered after it"
            )
        return lines

    def _late_tick_windows(self, cloud_ids: Any) -> dict[str, list[tuple[float, float]]]:
        """cloud_id -> the real [start, end) of the late ticks recorded for its shard."""
        from ingestion.models import Tick
        from ingestion.polling.leases import shard_of

        by_shard: defaultdict[int, list[tuple[float, float]]] = defaultdict(list)
        for tick in Tick.objects.filter(late=True).values("shard", "scheduled_at", "finished_at"):
            start = tick["scheduled_at"].timestamp()
            end = max(tick["finished_at"].timestamp(), start + POLL_SECONDS)
            by_shard[tick["shard"]].append((start, end))
        return {cloud_id: by_shard[shard_of(cloud_id)] for cloud_id in cloud_ids}

    def _tick_gaps(self) -> list[str]:
        """Where the poller's ticks were further apart than 1.5 poll periods: a dead poller, or a
        hand-over that left slots unpolled."""
        from ingestion.models import Tick

        ticks = Tick.objects.filter(users_polled__gt=0).order_by("shard", "scheduled_at")
        gaps, previous = [], None
        for tick in ticks.values("shard", "scheduled_at", "holder"):
            if previous and previous["shard"] == tick["shard"]:
                gap = (tick["scheduled_at"] - previous["scheduled_at"]).total_seconds()
                if gap > 1.5 * POLL_SECONDS:
                    at = previous["scheduled_at"].timestamp() - self.clock.segments[0][1]
                    gaps.append(
                        f"  shard {tick['shard']} at {at:6.1f} s: {gap:5.1f} s "
                        f"({previous['holder']} -> {tick['holder']})"
                    )
            previous = tick
        return gaps

    def _report(
        self,
        figures: dict[str, Any],
        excluded: Counter[str],
        incidents: dict[str, tuple[int, int]],
        problems: list[str],
        lost: list[tuple[str, int, str]],
    ) -> list[str]:
        lines = ["", "soak results (demand readings against the simulator's ground truth):"]
        lines += [f"  {name:<30} {value:,}" for name, value in figures.items()]
        lines.append("excluded from 'lost' (could not be observed):")
        lines += [f"  {reason:<50} {count:,}" for reason, count in sorted(excluded.items())] or [
            "  none"
        ]
        lines.append("incidents (opened / resolved) per class:")
        lines += [
            f"  {name:<30} {opened:,} / {resolved:,}"
            for name, (opened, resolved) in sorted(incidents.items())
        ] or ["  none"]
        lines.append("gaps between two ticks that polled (real seconds into the run, holders):")
        lines += self._tick_gaps() or ["  none"]
        lines.append(
            "per poller kill (real seconds into the run; the last is the final stop, by SIGTERM;"
        )
        lines.append(
            "  unpolled: how much longer than a poll period a gateway waited across it, median):"
        )
        lines += self._kill_lines() or ["  none"]
        if self.timeline.skipped:
            lines.append("faults skipped:")
            lines += [f"  {text}" for text in self.timeline.skipped]
        if lost:
            from ingestion.records import iso_utc

            lines.append("lost readings by meter time (first 20: time, real seconds into the run, ")
            lines.append("  readings, why, some cloud_ids):")
            groups: defaultdict[tuple[int, str], list[str]] = defaultdict(list)
            for cid, ts, why in lost:
                groups[(ts, why)].append(cid)
            start = self.clock.segments[0][1]
            lines += [
                f"  {iso_utc(datetime.fromtimestamp(ts, UTC))} {self.clock.to_real(ts) - start:6.1f} s "
                f"{len(cids):5,} {why}: {', '.join(sorted(cids)[:3])}"
                for (ts, why), cids in sorted(groups.items())[:20]
            ]
        lines.append(FIGURES_PREFIX + json.dumps({**figures, "problems": problems}))
        lines.append(
            f"seed {self.config.seed}: "
            + ("PASS" if not problems else "FAIL: " + "; ".join(problems))
        )
        for line in lines:
            self.out(line)
        return lines


def config_from_environment() -> SoakConfig:
    """SOAK_MINUTES, SOAK_USERS, SOAK_SEED (random if unset), SOAK_DATABASE_URL, REDIS_URL,
    SOAK_LOG_LEVEL (the pollers' and the rotation's, WARNING unless set); with
    SOAK_PROFILE=short, the compressed fault schedule of the test suite's one-minute run."""
    seed = int(os.environ.get("SOAK_SEED") or random.SystemRandom().randrange(1, 1 << 31))
    short = os.environ.get("SOAK_PROFILE") == "short"
    minutes = float(os.environ.get("SOAK_MINUTES") or (0.8 if short else 10))
    users = int(os.environ.get("SOAK_USERS") or (300 if short else 2000))
    common = {
        "minutes": minutes,
        "users": users,
        "seed": seed,
        "database_url": os.environ.get("SOAK_DATABASE_URL")
        or f"postgres://postgres@127.0.0.1:5432/rainlog_{'soak_short' if short else 'soak'}",
        "redis_url": os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
        "retrieval_sample": min(users, 40),
    }
    if short:
        return SoakConfig(
            **common,
            name="soak-short",
            segment_seconds=12.0,
            poller_kills=1,
            rotation_kills=1,
            restart_after=(1.0, 3.0),
            s3_outage_seconds=10.0,
            disk_full_seconds=8.0,
            bad_credential_users=3,
            bad_credential_seconds=25.0,
            suspend_after=2,
            max_backoff_seconds=12,
            lease_seconds=7,
            stop_seconds=5.0,
            tmpfs_size="64m",
        )
    return SoakConfig(
        **common,
        poller_kills=max(2, round(minutes)),
        # Fewer: a restarted cluster's scheduler first runs half a minute after it starts.
        rotation_kills=max(2, round(minutes / 2)),
        s3_outage_seconds=min(60.0, 0.1 * minutes * 60),
        disk_full_seconds=min(45.0, 0.08 * minutes * 60),
        bad_credential_users=max(3, users // 200),
        bad_credential_seconds=min(120.0, 0.25 * minutes * 60),
    )


def main() -> int:
    config = config_from_environment()
    # SIGTERM ends the run like Ctrl-C, so every finally block runs.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        result = Soak(config).run()
    except KeyboardInterrupt:
        print("soak interrupted; everything it started was stopped", file=sys.stderr)
        return 130
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
