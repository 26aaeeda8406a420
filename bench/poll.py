"""`make bench-poll`: the poller against 20,000 simulated gateways, next to the seed's serial loop.

    python -m bench.poll [--users 20000] [--latency 0.2] [--ticks 22] [--shards 2]
                         [--serial-seconds 12]

Set-up, in a temporary directory removed at the end:
- the EAGLE simulator (`ingestion.eagle.simulator`) with --users gateways answering after --latency
  seconds, in a process of its own;
- a fresh bench database (BENCH_DATABASE_URL, default
  postgres://postgres@127.0.0.1:5432/rainlog_bench_poll), dropped and migrated, holding one EAGLE
  user per gateway.

Measured in the same run, on the same gateways:
1. the poller: --shards processes, one per shard (what `manage.py poll --shard N` or a window task
   runs), each holding its shard's lease and running --ticks ticks from the same slot of the
   6-second grid. Per tick: users polled and skipped (over capacity), whether it finished in its
   slot, its measured capacity, database statements, and whether any user waited two ticks in a
   row. Afterwards every hour file is read back and compared with the simulator's ground truth
   (each reading it sent in a good reply): readings served but not written (lost), duplicated or
   never served;
2. CPU per user-tick, from the second tick on (the first one opens and registers every hour
   file): the pollers' process CPU per fetch, and the simulator's (/proc/<pid>/stat) per request;
   with the 2 cores of the machine, what that leaves room for;
3. the baseline, the seed's design: one `requests.post` at a time over the same users for
   --serial-seconds, giving its users per tick.

Targets up to 20,000 users per 6-second tick on a 2-core machine with the simulator beside it:
every user polled every tick, at least 99.9 % of ticks on time (after a cold poller's first tick,
which measures its capacity by sending until its dispatch deadline), no reading lost or duplicated,
poller RSS under 300 MB. Beyond what the pollers can fetch (try --users 30000): no user waits two
ticks in a row, no reply thrown away, skipped polls counted, an over-capacity incident raised.
The load average is printed at the start and the end: on-time figures need a quiet machine, CPU
per user-tick much less so.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.support import configure_django, cpu_seconds, load_average, recreate_database

DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/rainlog_bench_poll"
)
POLL_SECONDS = 6.0
# Time for the poller processes to start, load their users and take their leases.
START_DELAY_SECONDS = 15.0
TARGET_USERS = 20_000
TARGET_ON_TIME = 0.999
TARGET_RSS_MIB = 300.0


def configure(work: Path) -> None:
    configure_django(work, DATABASE_URL, INGEST_POLL_SECONDS=str(POLL_SECONDS))


# --- The simulator's process ---------------------------------------------------------------------


def serve_simulator(users: int, latency: float, conn: Connection) -> None:
    """Serve the gateways until told to stop; report ground truth and CPU when asked."""
    import django

    django.setup()
    from ingestion.eagle.simulator import Simulator

    simulator = Simulator(users, latency=latency, seed=1).start()
    conn.send((simulator.cloud_url, simulator.accounts()))
    while True:
        request = conn.recv()
        if request == "requests":
            conn.send(simulator.stats()["requests"])
        elif request == "truth":
            served = [truth.dedup_key for truth in simulator.ground_truth() if truth.served]
            usage = resource.getrusage(resource.RUSAGE_SELF)
            conn.send((served, simulator.stats(), usage.ru_utime + usage.ru_stime))
        else:
            simulator.stop()
            conn.send("stopped")
            return


# --- A poller's process ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TickFigures:
    users_due: int
    users_polled: int
    users_skipped: int
    readings_written: int
    failures: int
    seconds: float
    late: bool
    statements: int
    capacity: int | None
    in_flight: int
    # Users due and not sent a request in this tick nor in the one before.
    waited_two_ticks: int
    # The process's CPU seconds when the tick ended.
    cpu_seconds: float


def poll_shard(shard: int, first_slot: float, ticks: int, conn: Connection) -> None:
    """Poll one shard as `manage.py poll --shard N` does, and report every tick's figures."""
    import django

    django.setup()
    from ingestion.polling.engine import Poller, TickReport, run_ticks
    from ingestion.polling.leases import FOREGROUND, ShardLease, holder_name

    holder = holder_name(FOREGROUND)
    poller = Poller([shard], holder)
    lease = ShardLease(shard, holder)
    figures: list[TickFigures] = []
    period = poller.period

    def waited_two_ticks(slot_start: float) -> int:
        if slot_start < first_slot + period:
            return 0
        # A user never sent a request has waited since the first tick.
        since = slot_start - period
        return sum(
            1
            for slot in poller.slots.values()
            if max(slot.last_sent, first_slot) < since and slot.is_due(slot_start)
        )

    def note(report: TickReport) -> None:
        cpu = time.process_time()
        figures.append(
            TickFigures(
                report.users_due,
                report.users_polled,
                report.users_skipped,
                report.readings_written,
                report.failures,
                report.seconds,
                report.late,
                report.statements,
                report.capacity,
                report.in_flight,
                waited_two_ticks(report.scheduled_at.timestamp()),
                cpu,
            )
        )

    try:
        poller.load_users()
        lease.acquire(threading.Event(), START_DELAY_SECONDS, leave_to_foreground=False)
        poller.resume(from_files=True)
        run_ticks(
            poller,
            [lease],
            threading.Event(),
            hand_over=False,
            first_slot=first_slot,
            max_ticks=ticks,
            on_tick=note,
        )
    finally:
        poller.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    conn.send(
        {
            "shard": shard,
            "users": len(poller.slots),
            "ticks": figures,
            "peak_rss_mib": usage.ru_maxrss / 1024,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
        }
    )


# --- The seed's serial loop ---------------------------------------------------------------------


def serial_users_per_tick(cloud_url: str, accounts: list[dict[str, str]], seconds: float) -> float:
    """The seed's pinger: one blocking request after another, each reply parsed, for `seconds`."""
    import requests

    from ingestion.eagle.decoders import decode_reply

    body = b"<Command><Name>get_instantaneous_demand</Name></Command>"
    served = 0
    started = time.monotonic()
    for account in accounts:
        if time.monotonic() - started >= seconds:
            break
        response = requests.post(
            cloud_url,
            data=body,
            headers={
                "Cloud-ID": account["cloud_id"],
                "User": account["user_email"],
                "Password": account["user_pw"],
            },
            timeout=10,
        )
        decode_reply(response.text, cloud_id=account["cloud_id"], record_type="demand")
        served += 1
    elapsed = time.monotonic() - started
    return served * POLL_SECONDS / elapsed


# --- The run -----------------------------------------------------------------------------------


def logged_keys(root: Path) -> list[tuple[str, str, int]]:
    from ingestion.hourfiles import iter_records

    return [
        (record["cloud_id"], record["record_type"], record["meter_timestamp"])
        for path in sorted(root.glob("*/*.jl"))
        for record in iter_records(path)
    ]


def create_users(accounts: list[dict[str, str]]) -> None:
    from users.models import EagleUser

    for start in range(0, len(accounts), 1000):
        EagleUser.objects.bulk_create(
            [
                EagleUser(
                    cloud_id=account["cloud_id"],
                    email=account["user_email"],
                    eagle_password=account["user_pw"],
                )
                for account in accounts[start : start + 1000]
            ]
        )


@dataclass(frozen=True, slots=True)
class SimulatorCpu:
    """The simulator's CPU seconds and requests served from the second tick on."""

    cpu_seconds: float
    requests: int


def over_capacity_incidents() -> int:
    from ingestion.models import Incident
    from ingestion.records import FailureClass

    return Incident.objects.filter(failure_class=FailureClass.OVER_CAPACITY).count()


def statements_per_tick(figures: list[TickFigures]) -> str:
    # The first tick also registers every new hour file in the manifest.
    steady = [tick.statements for tick in figures[1:]] or [0]
    return f"{figures[0].statements} first, {min(steady)}-{max(steady)} after"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=TARGET_USERS)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--ticks", type=int, default=22)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--serial-seconds", type=float, default=12.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rainlog-bench-poll-"))
    configure(work)
    os.environ["INGEST_SHARDS"] = str(args.shards)
    context = multiprocessing.get_context("spawn")
    simulator_conn, child_conn = context.Pipe()
    simulator = context.Process(
        target=serve_simulator, args=(args.users, args.latency, child_conn), daemon=True
    )
    try:
        print(f"bench-poll: fresh database, {args.users:,} users, simulator at {args.latency:g} s")
        print(f"load average at the start: {load_average()}")
        recreate_database(DATABASE_URL)
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0, skip_checks=True)
        simulator.start()
        # Only the child holds its end: if it dies, recv() fails instead of waiting for ever.
        child_conn.close()
        cloud_url, accounts = simulator_conn.recv()
        os.environ["EAGLE_CLOUD_URL"] = cloud_url
        create_users(accounts)

        first_slot = (time.time() + START_DELAY_SECONDS) // POLL_SECONDS * POLL_SECONDS
        print(
            f"polling: {args.shards} processes (shards), {args.ticks} ticks of "
            f"{POLL_SECONDS:g} s from {time.strftime('%H:%M:%S', time.gmtime(first_slot))} UTC..."
        )
        pollers = []
        for shard in range(args.shards):
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(
                target=poll_shard, args=(shard, first_slot, args.ticks, sender)
            )
            process.start()
            sender.close()
            pollers.append((process, receiver))
        # The simulator's CPU from the end of the first tick, as the pollers' is counted.
        time.sleep(max(0.0, first_slot + POLL_SECONDS - time.time()))
        simulator_conn.send("requests")
        requests_before, cpu_before = simulator_conn.recv(), cpu_seconds(simulator.pid)
        results = []
        for process, receiver in pollers:
            results.append(receiver.recv())
            process.join()
        simulator_conn.send("requests")
        requests_after, cpu_after = simulator_conn.recv(), cpu_seconds(simulator.pid)
        steady = SimulatorCpu(cpu_after - cpu_before, requests_after - requests_before)
        simulator_conn.send("truth")
        served, simulator_stats, simulator_cpu = simulator_conn.recv()
        incidents = over_capacity_incidents()
        load_at_end = load_average()

        logged = logged_keys(work / "logs")
        print(f"serial seed-style loop for {args.serial_seconds:g} s...")
        serial = serial_users_per_tick(cloud_url, accounts, args.serial_seconds)
        simulator_conn.send("stop")
        simulator_conn.recv()
    finally:
        if simulator.is_alive():
            simulator.terminate()
        shutil.rmtree(work, ignore_errors=True)

    report(args, results, served, simulator_stats, simulator_cpu, steady, logged, serial, incidents)
    print(f"load average at the end: {load_at_end}")
    return 0


def poller_cpu_per_user_tick(results: list[dict[str, Any]]) -> float:
    """Seconds of poller CPU per user polled, from the end of each process's first tick."""
    cpu = sum(r["ticks"][-1].cpu_seconds - r["ticks"][0].cpu_seconds for r in results)
    polled = sum(tick.users_polled for r in results for tick in r["ticks"][1:])
    return cpu / polled if polled else 0.0


def report(
    args: argparse.Namespace,
    results: list[dict[str, Any]],
    served: list[tuple[str, str, int]],
    simulator_stats: dict[str, int],
    simulator_cpu: float,
    steady: SimulatorCpu,
    logged: list[tuple[str, str, int]],
    serial: float,
    incidents: int,
) -> None:
    ticks = len(results[0]["ticks"])
    # The first tick of a cold poller measures its throughput, and opens and registers every
    # hour file: the figures below are those of the ticks after it, the first one's are printed
    # apart.
    per_tick = [sum(result["ticks"][i].users_polled for result in results) for i in range(1, ticks)]
    all_ticks = [tick for result in results for tick in result["ticks"][1:]]
    first_ticks = [result["ticks"][0] for result in results]
    on_time = sum(not tick.late for tick in all_ticks) / len(all_ticks)
    durations = sorted(tick.seconds for tick in all_ticks)
    counts = Counter(logged)
    duplicated = sum(count - 1 for count in counts.values() if count > 1)
    served_set = set(served)
    lost = len(served_set - counts.keys())
    unserved = len(counts.keys() - served_set)
    peak_rss = max(result["peak_rss_mib"] for result in results)
    mean_users = statistics.mean(per_tick)
    skipped = sum(tick.users_skipped for tick in all_ticks)
    waited_two = sum(tick.waited_two_ticks for tick in all_ticks)
    in_flight_at_end = sum(result["ticks"][-1].in_flight for result in results)
    capacities = [result["ticks"][-1].capacity for result in results]
    poller_cpu = poller_cpu_per_user_tick(results)
    simulator_per_request = steady.cpu_seconds / steady.requests if steady.requests else 0.0
    room = 2 * POLL_SECONDS / (poller_cpu + simulator_per_request) if poller_cpu else 0.0

    print()
    print(f"poller, {len(results)} processes, {ticks} ticks each (figures from the second on):")
    print(
        f"  users per tick        {mean_users:,.0f} mean, {min(per_tick):,} min (of {args.users:,})"
    )
    print(
        f"  first tick (cold)     {sum(t.users_polled for t in first_ticks):,} users polled, "
        f"{sum(t.users_skipped for t in first_ticks):,} skipped, measuring its capacity"
    )
    print(
        f"  ticks on time         {100 * on_time:.1f} % ({len(all_ticks)} shard ticks after "
        "the first)"
    )
    print(
        f"  tick done after       {statistics.median(durations):.2f} s median, "
        f"{durations[-1]:.2f} s max (slot {POLL_SECONDS:g} s)"
    )
    print(
        f"  skipped polls         {skipped:,} ({sum(t.users_skipped > 0 for t in all_ticks)} "
        f"shard ticks over capacity); users who waited two ticks in a row: {waited_two:,}"
    )
    print(
        "  capacity (measured)   "
        + ", ".join(f"{c:,}" if c is not None else "not measured" for c in capacities)
        + " fetches per tick per process"
    )
    print(
        f"  failed fetches        {sum(tick.failures for tick in all_ticks):,}; "
        f"requests in flight when polling stopped: {in_flight_at_end:,}"
    )
    for result in results:
        print(
            f"  shard {result['shard']}: {result['users']:,} users, "
            f"statements per tick {statements_per_tick(result['ticks'])}, "
            f"peak RSS {result['peak_rss_mib']:.0f} MB, CPU {result['cpu_seconds']:.0f} s"
        )
    print(
        f"  simulator             {simulator_stats['requests']:,} requests, "
        f"CPU {simulator_cpu:.0f} s"
    )
    print("CPU per user-tick (from the second tick on):")
    print(f"  poller                {1e6 * poller_cpu:,.0f} us")
    print(f"  simulator             {1e6 * simulator_per_request:,.0f} us")
    print(
        f"  both                  {1e6 * (poller_cpu + simulator_per_request):,.0f} us: "
        f"2 cores x {POLL_SECONDS:g} s leave room for {room:,.0f} users per tick"
    )
    print("readings against the simulator's ground truth:")
    print(
        f"  written {len(logged):,}, served {len(served_set):,}: "
        f"served but not written (lost) {lost:,}, duplicated {duplicated:,}, "
        f"never served {unserved:,}"
    )
    print(f"  over-capacity incidents raised: {incidents}")
    print(f"serial seed-style loop: {serial:,.1f} users per tick (one request at a time)")
    print(f"poller / serial: {mean_users / serial:,.0f}x users per tick")
    checks = [
        ("no reading lost or duplicated", lost == duplicated == unserved == 0),
        (f"poller RSS < {TARGET_RSS_MIB:.0f} MB", peak_rss < TARGET_RSS_MIB),
    ]
    if args.users <= TARGET_USERS:
        checks[:0] = [
            ("every user polled every tick", min(per_tick) >= args.users and not skipped),
            (f">= {100 * TARGET_ON_TIME:.1f} % ticks on time", on_time >= TARGET_ON_TIME),
        ]
    if skipped or args.users > TARGET_USERS:
        checks += [
            ("over capacity: fair (no user waited two ticks in a row)", waited_two == 0),
            ("over capacity: nothing discarded", lost == 0),
            ("over capacity: incident raised", incidents > 0),
        ]
    print("targets: " + ", ".join(f"{name}: {'met' if ok else 'MISSED'}" for name, ok in checks))


if __name__ == "__main__":
    sys.exit(main())
