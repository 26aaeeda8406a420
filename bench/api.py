"""`make bench-api`: a user-day read from the archive through the API, and latest-event requests
under 50 concurrent clients. Everything runs on 127.0.0.1 and stops by itself.

Set-up, in a temporary directory removed at the end:
- moto's S3 server and a redis-server (REDIS_URL: the shared cache) in subprocesses, and a fresh
  bench database (BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/rainlog_bench_api),
  dropped and migrated;
- one user-day, 14,400 readings at 6 s, written by the hour-file writer and shipped to the bucket
  by the rotation (`ingestion.archive.rotation.rotate`), so every hour is read back from the archive;
  then the last five minutes, written as the poller writes them (the newest into the shared cache);
- gunicorn serving the project with BENCH_GUNICORN_ARGS (default: the production settings the README
  gives, sync workers, one per concurrent request the two cores can serve well), and a token.

Measured, each against a baseline taken in the same run:
1. The user-day through GET /api/users/{cloud_id}/readings (JSON lines, then CSV), against the
   same 24 objects fetched with boto3 and parsed directly (no API).
2. GET /api/event/{cloud_id} (the latest reading, as the poller cached it) from 50 concurrent
   aiohttp clients for BENCH_SECONDS, against the same load of unauthenticated requests (401:
   the request stack without authentication or view work), and the latest reading of a second
   household that is not cached, read from its hour file on disk. The three loads take turns
   (ROUNDS). Besides latencies, the CPU time per request of the server side (gunicorn's workers,
   Redis, and the database's backends), which the other work on the machine distorts less.

Targets: the user-day in under 1 s; latest-event p95 under 100 ms at 50 concurrent clients, and
at most 1.2x the 401's p95 (EVENT_FLOOR_TARGET).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import orjson

from bench.support import (
    connect,
    cpu_seconds,
    free_port,
    load_average,
    process,
    recreate_database,
    redis_server,
    wait_for,
)

BASE_DIR = Path(__file__).resolve().parent.parent
CLOUD_ID = "00bec4"
# A second household whose latest readings are not cached (as a pushed one's): read from its file.
UNCACHED_CLOUD_ID = "00bec5"
READINGS_PER_DAY = 14_400
CONCURRENCY = 50
DAY_TARGET_SECONDS = 1.0
EVENT_P95_TARGET_MS = 100.0
EVENT_FLOOR_TARGET = 1.2
BUCKET = "rainlog-bench-api"
DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/rainlog_bench_api"
)
LOAD_SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
# The loads take turns this many times, so that a change in the machine's other work weighs on
# each of them alike.
ROUNDS = 3
WARMUP_SECONDS = 2.0
DAY_RUNS = 5
GUNICORN_ARGS = os.environ.get("BENCH_GUNICORN_ARGS", "--workers 6 --worker-class sync").split()


def environment(work: Path, s3_endpoint: str, redis_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "rainlog.settings",
        "RAINLOG_ENV_FILE": str(work / "no.env"),
        "DEBUG": "0",
        "SECRET_KEY": "bench-secret-key-long-enough-for-django-checks-0123456789abcdef",
        "FIELD_ENCRYPTION_KEYS": "YmVuY2gta2V5LWJlbmNoLWtleS1iZW5jaC1rZXktYmU=",
        "DATABASE_URL": DATABASE_URL,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "0",
        "VAR_DIR": str(work),
        "LOG_ROOT": str(work / "logs"),
        "ARCHIVE_BUCKET": BUCKET,
        "AWS_S3_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "REDIS_URL": redis_url,
        # 401s of the baseline would each log a warning: measure requests, not logging.
        "LOG_LEVEL": "ERROR",
    }


def demand_readings(start: datetime, count: int, cloud_id: str = CLOUD_ID) -> list[object]:
    """Demand readings every 6 s from `start`, with the raw fields of a cloud reply."""
    from ingestion.records import Reading, Source

    readings = []
    for n in range(count):
        moment = start + timedelta(seconds=6 * n)
        demand = 800 + (n * 37) % 2400
        readings.append(
            Reading(
                cloud_id=cloud_id,
                record_type="demand",
                meter_timestamp=int(moment.timestamp()),
                received_at=moment + timedelta(milliseconds=420),
                source=Source.CLOUD,
                values={"demand_kw": demand / 1000},
                raw={
                    "DeviceMacId": "0xd8d5b9000000a1b2",
                    "MeterMacId": "0x00135003002a1b2c",
                    "TimeStamp": f"0x{int(moment.timestamp()) - 946684800:08x}",
                    "Demand": f"0x{demand:06x}",
                    "Multiplier": "0x00000001",
                    "Divisor": "0x000003e8",
                    "DigitsRight": "0x03",
                    "DigitsLeft": "0x06",
                    "SuppressLeadingZero": "Y",
                },
            )
        )
    return readings


def prepare(day: datetime) -> tuple[str, list[str]]:
    """Write and ship the user-day; returns a token and the archive keys of its 24 hours."""
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connections
    from knox.models import AuthToken

    from ingestion.archive import rotation
    from ingestion.hourfiles import HourFileWriter
    from ingestion.models import HourFile, HourFileState
    from ingestion.polling.latest import remember_written
    from users.models import EagleUser

    call_command("migrate", verbosity=0)
    EagleUser.objects.create(cloud_id=CLOUD_ID, email="bench@example.org")
    EagleUser.objects.create(cloud_id=UNCACHED_CLOUD_ID, email="bench-uncached@example.org")
    operator = User.objects.create_user("bench", is_staff=True)
    _, token = AuthToken.objects.create(operator, expiry=timedelta(hours=1))
    with HourFileWriter() as writer:
        result = writer.append(demand_readings(day, READINGS_PER_DAY))
    assert not result.unwritten, result.errors
    report = rotation.rotate(cloud_id=CLOUD_ID)
    # The last minutes, still on disk, written as the poller writes them: what the latest-event
    # endpoint serves.
    now = datetime.now(UTC).replace(microsecond=0)
    recent = demand_readings(now - timedelta(minutes=5), 50)
    with HourFileWriter() as writer:
        remember_written(recent, writer.append(recent))
        writer.append(demand_readings(now - timedelta(minutes=5), 50, UNCACHED_CLOUD_ID))
    rows = HourFile.objects.filter(cloud_id=CLOUD_ID, state=HourFileState.VERIFIED)
    keys = list(rows.order_by("hour").values_list("key", flat=True))
    if len(keys) != 24:
        raise RuntimeError(f"the rotation shipped {len(keys)} of 24 hours: {report.summary()}")
    connections.close_all()
    return token, keys


def baseline_day(keys: list[str]) -> float:
    """The same 24 objects straight from S3 with boto3, parsed line by line."""
    from ingestion.archive.store import open_archive, read_hour_file

    archive = open_archive()
    started = time.perf_counter()
    lines = 0
    for key in keys:
        lines += sum(
            1
            for line in read_hour_file(archive, key, key.endswith(".gz")).splitlines()
            if orjson.loads(line)
        )
    elapsed = time.perf_counter() - started
    assert lines == READINGS_PER_DAY, lines
    return elapsed


async def fetch_day(
    session: aiohttp.ClientSession, url: str, params: dict[str, str], headers: dict[str, str]
) -> tuple[float, int, int]:
    started = time.perf_counter()
    async with session.get(url, params=params, headers=headers) as response:
        response.raise_for_status()
        body = await response.read()
    return time.perf_counter() - started, body.count(b"\n"), len(body)


@dataclass
class Load:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    seconds: float = 0.0
    # Every request answered, the warm-up's too, and the server side's CPU time meanwhile.
    answered: int = 0
    cpu_seconds: float = 0.0

    def percentile(self, share: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms(self) -> float:
        """Server-side CPU milliseconds per request."""
        return self.cpu_seconds / self.answered * 1000 if self.answered else 0.0

    def line(self, label: str) -> str:
        statuses = ", ".join(f"{code}: {n}" for code, n in sorted(self.statuses.items()))
        return (
            f"{label:<38} {len(self.latencies):>6} requests {self.rate:>7.0f}/s  "
            f"p50 {self.percentile(0.5):6.1f} ms  p95 {self.percentile(0.95):6.1f} ms  "
            f"p99 {self.percentile(0.99):6.1f} ms  CPU {self.cpu_ms:.2f} ms/request  ({statuses})"
        )

    def against(self, floor: Load) -> str:
        return (
            f"p95 {self.percentile(0.95) / floor.percentile(0.95):.2f}x, rate "
            f"{self.rate / floor.rate:.2f}x and CPU per request {self.cpu_ms / floor.cpu_ms:.2f}x "
            "the unauthenticated baseline"
        )


def server_cpu(processes: Callable[[], list[int]]) -> dict[int, float]:
    """CPU seconds so far of each server-side process."""
    found = {}
    for pid in processes():
        try:
            found[pid] = cpu_seconds(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


async def load(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    seconds: float,
    processes: Callable[[], list[int]],
    result: Load,
) -> None:
    """CONCURRENCY clients, each sending its next request as soon as the last one is answered;
    what they measure is added to `result`."""
    cpu_before = server_cpu(processes)
    warm_until = time.monotonic() + WARMUP_SECONDS
    stop_at = warm_until + seconds

    async def client() -> None:
        while (now := time.monotonic()) < stop_at:
            started = time.perf_counter()
            async with session.get(url, headers=headers) as response:
                await response.read()
            result.answered += 1
            if now >= warm_until:
                result.latencies.append(time.perf_counter() - started)
                result.statuses[response.status] += 1

    await asyncio.sleep(0)
    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    result.seconds += seconds
    cpu_after = server_cpu(processes)
    # A process started meanwhile (a database backend) counts from zero.
    result.cpu_seconds += sum(cpu - cpu_before.get(pid, 0.0) for pid, cpu in cpu_after.items())


async def sequential(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], requests: int = 200
) -> float:
    """Mean milliseconds per request from a single client: the service time without queueing."""
    started = time.perf_counter()
    for _ in range(requests):
        async with session.get(url, headers=headers) as response:
            await response.read()
    return (time.perf_counter() - started) / requests * 1000


async def measure(
    base: str, token: str, day: datetime, keys: list[str], processes: Callable[[], list[int]]
) -> None:
    headers = {"Authorization": f"Token {token}"}
    readings_url = f"{base}/api/users/{CLOUD_ID}/readings"
    params = {"start": day.isoformat(), "end": (day + timedelta(days=1)).isoformat()}
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:
        baseline = min(baseline_day(keys) for _ in range(3))
        print(f"user-day baseline: 24 objects GET with boto3 and parsed: {baseline:.3f} s")
        results = {}
        for fmt, runs in (("jsonl", DAY_RUNS), ("csv", 3)):
            times = []
            for _ in range(runs):
                elapsed, lines, size = await fetch_day(
                    session, readings_url, {**params, "format": fmt}, headers
                )
                expected_lines = READINGS_PER_DAY + (fmt == "csv")
                if lines != expected_lines:
                    raise RuntimeError(f"{fmt}: {lines} lines, expected {expected_lines}")
                times.append(elapsed)
            results[fmt] = statistics.median(times)
            print(
                f"user-day via API as {fmt:<5}: median {results[fmt]:.3f} s over {runs} runs "
                f"(min {min(times):.3f} s, {size / 1e6:.1f} MB, "
                f"{READINGS_PER_DAY / results[fmt]:,.0f} readings/s), "
                f"{results[fmt] / baseline:.1f}x the boto3 baseline"
            )
        event = f"/api/event/{CLOUD_ID}"
        for label, headers_used in (("no token (401)", {}), ("with token", headers)):
            service = await sequential(session, f"{base}{event}", headers_used)
            print(f"one client, GET {event} {label}: {service:.1f} ms per request")
        floor, events, from_files = Load(), Load(), Load()
        uncached = f"/api/event/{UNCACHED_CLOUD_ID}"
        for _ in range(ROUNDS):
            for result, path, used in (
                (floor, event, {}),
                (events, event, headers),
                (from_files, uncached, headers),
            ):
                await load(session, f"{base}{path}", used, LOAD_SECONDS / ROUNDS, processes, result)
    route = f"GET {event.replace(CLOUD_ID, '{cloud_id}')}"
    print(
        f"{CONCURRENCY} concurrent clients, {LOAD_SECONDS:.0f} s each in {ROUNDS} turns after a "
        f"{WARMUP_SECONDS:.0f} s warm-up each; CPU of gunicorn's workers, Redis and the database:"
    )
    print(floor.line("baseline: no token (401)"))
    print(events.line(f"{route} (cached)"))
    print(from_files.line(f"{route} (hour file)"))
    print(f"  cached: {events.against(floor)}")
    print(f"  hour file: {from_files.against(floor)}")
    day_ok = results["jsonl"] < DAY_TARGET_SECONDS
    statuses_ok = set(events.statuses) == set(from_files.statuses) == {200}
    event_ok = events.percentile(0.95) < EVENT_P95_TARGET_MS and statuses_ok
    floor_ok = events.percentile(0.95) <= EVENT_FLOOR_TARGET * floor.percentile(0.95)
    print(
        f"targets: user-day < {DAY_TARGET_SECONDS:.0f} s: {'met' if day_ok else 'MISSED'}; "
        f"latest-event p95 < {EVENT_P95_TARGET_MS:.0f} ms with 200s only: "
        f"{'met' if event_ok else 'MISSED'}; latest-event p95 <= {EVENT_FLOOR_TARGET}x the "
        f"401's: {'met' if floor_ok and statuses_ok else 'MISSED'}"
    )


def server_processes(gunicorn_pid: int, redis_pid: int) -> Callable[[], list[int]]:
    """What serves the requests: gunicorn's workers, Redis, the bench database's backends."""
    # Its own connection, outside Django's: it is asked from the event loop of the load.
    database = connect(DATABASE_URL)

    def found() -> list[int]:
        with open(f"/proc/{gunicorn_pid}/task/{gunicorn_pid}/children") as children:
            workers = [int(pid) for pid in children.read().split()]
        with database.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            backends = [pid for (pid,) in cursor.fetchall()]
        return [*workers, redis_pid, *backends]

    return found


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="rainlog-bench-api-"))
    moto_port, web_port, redis_port = free_port(), free_port(), free_port()
    s3_endpoint = f"http://127.0.0.1:{moto_port}"
    day = (datetime.now(UTC) - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
    print(f"load average before: {load_average()} ({os.cpu_count()} cores)")
    try:
        with ExitStack() as stack:
            redis_url, redis_pid = stack.enter_context(redis_server(redis_port, work / "redis.log"))
            env = environment(work, s3_endpoint, redis_url)
            os.environ.update(env)
            stack.enter_context(
                process(
                    [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
                    env,
                    work / "moto.log",
                )
            )
            wait_for(f"{s3_endpoint}/")
            import boto3
            import django

            boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=BUCKET)
            recreate_database(DATABASE_URL)
            django.setup()
            print(f"writing and shipping {READINGS_PER_DAY:,} readings of {day:%Y-%m-%d} ...")
            started = time.perf_counter()
            token, keys = prepare(day)
            print(f"  24 hours verified in the archive in {time.perf_counter() - started:.1f} s")
            gunicorn = [
                sys.executable, "-m", "gunicorn", "rainlog.wsgi",
                "--bind", f"127.0.0.1:{web_port}", *GUNICORN_ARGS,
            ]  # fmt: skip
            server = stack.enter_context(process(gunicorn, env, work / "gunicorn.log"))
            base = f"http://127.0.0.1:{web_port}"
            # Each worker's first request loads the project: slow when the machine is busy.
            wait_for(f"{base}/healthz", timeout=180)
            print(f"gunicorn {' '.join(GUNICORN_ARGS)} on {base}, Redis at {redis_url}")
            processes = server_processes(server.pid, redis_pid)
            asyncio.run(measure(base, token, day, keys, processes))
            print(
                f"load average after: {load_average()} (other work on the machine skews all of this)"
            )
    finally:
        from django.db import connections

        connections.close_all()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
