"""The EAGLE simulator: accounts, realistic meters, ground truth, faults, concurrency, command."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from ingestion.eagle.client import EagleClient, GatewayTarget
from ingestion.eagle.simulator import FaultKind, FaultPlan, FaultSpec, Simulator
from ingestion.eagle.simulator.http_server import HttpServer, Reply, Request
from ingestion.records import FetchFailure, Reading
from users.models import ConnectionType

BASE_DIR = Path(__file__).resolve().parents[2]
# 2026-06-21 12:00 UTC: a summer day, for daily shapes.
NOON_UTC = 1_782_043_200.0


class Clock:
    def __init__(self, now: float = NOON_UTC) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def cloud_targets(sim: Simulator) -> list[GatewayTarget]:
    return [
        GatewayTarget(row["cloud_id"], "cloud", row["user_email"], row["user_pw"])
        for row in sim.accounts()
    ]


# --- Accounts ---------------------------------------------------------------------------------


def test_it_writes_its_users_in_the_seed_format(tmp_path: Path) -> None:
    sim = Simulator(users=12, seed=3)
    path = sim.write_users_file(tmp_path / "users" / "sim.jl")
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [row["cloud_id"] for row in rows] == [f"{i:06x}" for i in range(1, 13)]
    assert rows[0]["cloud_id"] == "000001"  # leading zeros kept
    assert set(rows[0]) == {"cloud_id", "user_email", "user_pw"}
    assert len({row["user_pw"] for row in rows}) == 12
    assert list(tmp_path.joinpath("users").iterdir()) == [path]  # no temporary file left


def test_it_gives_local_users_their_gateway_address() -> None:
    with Simulator(users=2) as sim:
        rows = sim.accounts(ConnectionType.EAGLE200)
    assert rows[1]["connection_type"] == "eagle200"
    assert rows[1]["gateway_address"] == f"{sim.url}/eagle200/000002"


def test_the_same_seed_gives_the_same_households() -> None:
    clock = Clock()
    first, again, other = (Simulator(users=5, seed=s, clock=clock) for s in (1, 1, 2))
    assert first.accounts() == again.accounts()
    assert first.accounts() != other.accounts()
    window = {"start": NOON_UTC, "end": NOON_UTC + 600}
    assert first.ground_truth(**window) == again.ground_truth(**window)
    assert first.ground_truth(**window) != other.ground_truth(**window)


# --- Meters -----------------------------------------------------------------------------------


def test_meters_update_every_8_to_10_seconds_so_6_second_polls_see_repeats() -> None:
    sim = Simulator(users=20, seed=5, clock=Clock())
    for gateway in sim.gateways:
        stamps = [
            t.meter_timestamp
            for t in sim.ground_truth(gateway, "demand", NOON_UTC, NOON_UTC + 3600)
        ]
        assert set(b - a for a, b in zip(stamps, stamps[1:], strict=False)) <= {8, 9, 10}
        assert 355 <= len(stamps) <= 452
        schedule = sim.gateways[gateway].meter.schedules["demand"]
        polls = [schedule.timestamp(schedule.index_at(NOON_UTC + 6 * i)) for i in range(601)]
        assert len(set(polls)) < len(polls)  # repeats
        assert set(polls) == set(stamps)  # yet a 6-second poll sees every reading


def test_households_follow_a_daily_curve_and_solar_ones_export_at_midday() -> None:
    sim = Simulator(users=40, seed=11, clock=Clock())
    solar = [g for g in sim.gateways.values() if g.meter.solar_kw > 0]
    plain = [g for g in sim.gateways.values() if g.meter.solar_kw == 0]
    assert solar and plain

    def mean_demand(gateway: Any, local_hour: float) -> float:
        start = NOON_UTC + (local_hour - 12 - gateway.meter.utc_offset_hours) * 3600
        truth = sim.ground_truth(gateway.meter.cloud_id, "demand", start, start + 600)
        return sum(t.value for t in truth) / len(truth)

    for gateway in solar:
        assert mean_demand(gateway, 12.5) < 0 < mean_demand(gateway, 19)
    for gateway in plain:
        night, evening = mean_demand(gateway, 3), mean_demand(gateway, 19)
        assert 0 < night < evening
    # Noise: consecutive readings differ.
    truth = sim.ground_truth(plain[0].meter.cloud_id, "demand", NOON_UTC, NOON_UTC + 300)
    assert len({t.value for t in truth}) > len(truth) // 2


def test_meter_totals_only_count_up_and_prices_follow_the_tiers() -> None:
    sim = Simulator(users=10, seed=2, clock=Clock())
    for gateway in sim.gateways:
        totals = sim.ground_truth(gateway, "summation", NOON_UTC, NOON_UTC + 86400)
        delivered = [t.values["delivered_kwh"] for t in totals]
        assert delivered == sorted(delivered) and delivered[-1] > delivered[0]
        assert all(t.values["received_kwh"] >= 0 for t in totals)
        prices = sim.ground_truth(gateway, "price", NOON_UTC, NOON_UTC + 86400)
        if sim.gateways[gateway].meter.offers_price:
            assert {t.values["tier"] for t in prices} == {0, 1, 2}
        else:
            assert prices == []


# --- Ground truth -----------------------------------------------------------------------------


def poll(sim: Simulator, clock: Clock, seconds: int, record_type: str = "demand") -> list[Reading]:
    """Poll every gateway every 6 s of the simulator's clock, logging each new reading once."""

    async def main() -> list[Reading]:
        logged: list[Reading] = []
        previous: dict[str, int] = {}
        async with EagleClient(cloud_url=sim.cloud_url, timeout=30.0) as client:
            for _ in range(seconds // 6):
                results = await asyncio.gather(
                    *(
                        client.fetch(t, record_type, previous.get(t.cloud_id))
                        for t in cloud_targets(sim)
                    )
                )
                for result in results:
                    if isinstance(result, Reading):
                        logged.append(result)
                        previous[result.cloud_id] = result.meter_timestamp
                clock.now += 6
        return logged

    return asyncio.run(main())


def test_a_6_second_poller_gets_every_reading_exactly_once() -> None:
    clock = Clock()
    with Simulator(users=5, seed=4, clock=clock) as sim:
        logged = poll(sim, clock, 180)
        truth = sim.ground_truth(end=clock.now - 6, record_type="demand")
    assert Counter(r.dedup_key for r in logged).most_common(1)[0][1] == 1
    assert {r.dedup_key for r in logged} == {t.dedup_key for t in truth}
    assert all(t.served and not t.faulted for t in truth)
    by_key = {t.dedup_key: t.values for t in truth}
    assert all(r.values == by_key[r.dedup_key] for r in logged)


def test_ground_truth_marks_readings_hidden_by_a_fault() -> None:
    clock = Clock()
    with Simulator(users=3, seed=4, clock=clock) as sim:
        clock.now += 60
        sim.set_fault("000002", FaultKind.ERROR_REPLY, duration=60)
        clock.now -= 60
        logged = poll(sim, clock, 240)
        truth = sim.ground_truth(end=clock.now - 6, record_type="demand")
    served = {t.dedup_key for t in truth if t.served}
    assert {r.dedup_key for r in logged} == served
    hidden = [t for t in truth if not t.served]
    assert hidden and all(t.faulted and t.cloud_id == "000002" for t in hidden)
    assert all(t.served for t in truth if not t.faulted)


# --- Faults -----------------------------------------------------------------------------------


def test_it_parses_fault_plans() -> None:
    plan = FaultPlan.parse("timeout=0.02, stall@00000a~120,bad_credentials*0.25")
    assert plan.specs == (
        FaultSpec(FaultKind.TIMEOUT, rate=0.02),
        FaultSpec(FaultKind.STALL, cloud_id="00000a", duration=120.0),
        FaultSpec(FaultKind.BAD_CREDENTIALS, share=0.25),
    )
    for bad, words in (
        ("melt", "unknown kind"),
        ("timeout=2", "between 0 and 1"),
        ("x@@", "expected"),
    ):
        with pytest.raises(ValueError, match=words):
            FaultPlan.parse(bad)


def test_a_plan_share_faults_the_same_gateways_for_the_same_seed() -> None:
    plan = FaultPlan.parse("bad_credentials*0.25")
    with Simulator(users=8, seed=9, faults=plan) as sim:
        faulted = sorted(f.cloud_id for f in sim._history)
        assert len(faulted) == 2
        results = asyncio.run(fetch_all(sim))
    refused = sorted(t.cloud_id for t, r in results if isinstance(r, FetchFailure))
    assert refused == faulted
    with Simulator(users=8, seed=9, faults=plan) as again:
        assert sorted(f.cloud_id for f in again._history) == faulted


async def fetch_all(sim: Simulator) -> list[tuple[GatewayTarget, Reading | FetchFailure]]:
    targets = cloud_targets(sim)
    async with EagleClient(cloud_url=sim.cloud_url, timeout=30.0) as client:
        results = await asyncio.gather(*(client.fetch(t) for t in targets))
    return list(zip(targets, results, strict=True))


def test_it_refuses_faults_it_cannot_inject() -> None:
    sim = Simulator(users=1)
    with pytest.raises(ValueError, match="no simulated gateway"):
        sim.set_fault("abcdef", FaultKind.RESET)
    with pytest.raises(ValueError, match="between 0 and 1"):
        sim.set_fault(None, FaultKind.RESET, rate=1.5)
    with pytest.raises(ValueError):
        sim.set_fault(None, "melt")


def test_faults_end_after_their_duration_and_when_cleared() -> None:
    clock = Clock()
    with Simulator(users=1, clock=clock) as sim:
        sim.set_fault(None, FaultKind.HTTP_5XX, duration=30)
        assert isinstance(asyncio.run(fetch_all(sim))[0][1], FetchFailure)
        clock.now += 30
        assert isinstance(asyncio.run(fetch_all(sim))[0][1], Reading)
        sim.set_fault("000001", FaultKind.NOT_JOINED)
        assert isinstance(asyncio.run(fetch_all(sim))[0][1], FetchFailure)
        sim.clear_faults()
        assert isinstance(asyncio.run(fetch_all(sim))[0][1], Reading)


# --- Serving ----------------------------------------------------------------------------------


def test_it_answers_hundreds_of_gateways_concurrently_despite_latency() -> None:
    with Simulator(users=400, seed=1, latency=1.0) as sim:
        results = asyncio.run(fetch_all(sim))
        stats = sim.stats()
    assert all(isinstance(result, Reading) for _, result in results)
    # All 400 requests were being answered at the same time: latency is waited, not served.
    assert stats["peak_in_flight"] >= 350
    assert stats["readings_served"] == 400


def test_it_says_what_it_is_and_404s_the_rest() -> None:
    with Simulator(users=3) as sim:
        with urllib.request.urlopen(sim.url + "/") as response:
            assert response.read() == b"EAGLE simulator: 3 gateways\n"
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(sim.url + "/nothing")
        assert missing.value.code == 404


def test_run_simulator_serves_in_the_foreground_until_sigterm(tmp_path: Path) -> None:
    users_file = tmp_path / "users.jl"
    command = [
        sys.executable, str(BASE_DIR / "manage.py"), "run_simulator", "--port", "0",
        "--users", "3", "--seed", "2", "--users-file", str(users_file), "--faults", "stall@000003~60",
    ]  # fmt: skip
    child = subprocess.Popen(
        command,
        cwd=BASE_DIR,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        lines = [child.stdout.readline() for _ in range(5)]
        assert lines[0].startswith("EAGLE simulator: 3 gateways at http://127.0.0.1:")
        cloud_url = lines[1].split("EAGLE_CLOUD_URL=")[1].strip()
        assert "accounts written to" in lines[4]
        rows = [orjson.loads(line) for line in users_file.read_bytes().splitlines()]
        assert len(rows) == 3
        request = urllib.request.Request(
            cloud_url,
            data=b"<Command><Name>get_instantaneous_demand</Name></Command>",
            headers={
                "Cloud-ID": rows[0]["cloud_id"],
                "User": rows[0]["user_email"],
                "Password": rows[0]["user_pw"],
            },
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.read().startswith(b"<InstantaneousDemand>")
    finally:
        child.send_signal(signal.SIGTERM)
        output, _ = child.communicate(timeout=30)
    assert child.returncode == 0
    assert "stopped: 1 requests, 1 readings served" in output


def test_run_simulator_refuses_a_bad_fault_plan() -> None:
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="unknown kind"):
        call_command("run_simulator", "--port", "0", "--faults", "melt")


# --- HTTP ---------------------------------------------------------------------------------------


def exchange(sim: Simulator, data: bytes) -> bytes:
    """Send raw bytes on one connection and read until the server closes it."""
    with socket.create_connection((sim.host, sim.port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def cloud_request(sim: Simulator, body: bytes, framing: bytes, last: bool = False) -> bytes:
    meter = sim.gateways["000001"].meter
    return (
        b"POST /cgi-bin/post_manager HTTP/1.1\r\nHost: eagle\r\n"
        + f"cloud-id: 000001\r\nUSER: {meter.email}\r\nPassword: {meter.password}\r\n".encode()
        + (b"Connection: close\r\n" if last else b"")
        + framing
        + b"\r\n"
        + body
    )


def test_it_keeps_connections_open_and_answers_pipelined_and_chunked_requests_in_order() -> None:
    command = b"<Command><Name>get_current_summation</Name></Command>"
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (command[:9], command[9:]))
    with Simulator(users=1, seed=2) as sim:
        replies = exchange(
            sim,
            cloud_request(sim, command, b"Content-Length: %d\r\n" % len(command))
            + cloud_request(
                sim, b"<Command><Name>nothing</Name></Command>", b"Content-Length: 39\r\n"
            )
            + cloud_request(
                sim, chunked + b"0\r\n\r\n", b"Transfer-Encoding: chunked\r\n", last=True
            ),
        )
    heads = replies.split(b"HTTP/1.1 ")[1:]
    assert [head[:6] for head in heads] == [b"200 OK"] * 3
    assert b"<CurrentSummation>" in heads[0] and b"Unknown command" in heads[1]
    assert b"<CurrentSummation>" in heads[2] and b"Connection: close" in heads[2]
    assert all(b"Content-Length: " in head and b"Date: " in head for head in heads)


def test_it_asks_for_the_body_on_expect_100_continue_and_answers_head() -> None:
    command = b"<Command><Name>get_instantaneous_demand</Name></Command>"
    with Simulator(users=3) as sim:
        with socket.create_connection((sim.host, sim.port), timeout=10) as sock:
            sock.sendall(
                cloud_request(
                    sim, b"", b"Content-Length: %d\r\nExpect: 100-continue\r\n" % len(command)
                )
            )
            assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
            sock.sendall(command)
            assert b"<InstantaneousDemand>" in sock.recv(65536)
        head = exchange(sim, b"HEAD / HTTP/1.0\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")
    assert b"Content-Length: 28\r\n" in head and b"Connection: close" in head


def test_it_refuses_what_is_not_an_http_request_and_closes_the_connection() -> None:
    with Simulator(users=1) as sim:
        assert exchange(sim, b"HELLO\r\n\r\n").startswith(b"HTTP/1.1 400 ")
        assert exchange(sim, b"POST / HTTP/1.1\r\nContent-Length: 5000000\r\n\r\n").startswith(
            b"HTTP/1.1 413 "
        )
        assert exchange(sim, b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 20000).startswith(
            b"HTTP/1.1 431 "
        )


def test_a_request_knows_its_client_closed_before_the_server_has_read_the_close() -> None:
    async def main() -> dict[str, bool]:
        requests: list[Request] = []
        server = HttpServer(requests.append)
        listening = socket.socket()
        listening.bind(("127.0.0.1", 0))
        await server.start(listening)
        address = listening.getsockname()
        clients = {path: socket.create_connection(address) for path in ("/stays", "/leaves")}
        for path, client in clients.items():
            client.sendall(f"GET {path} HTTP/1.1\r\nHost: eagle\r\n\r\n".encode())
        for _ in range(500):
            if len(requests) == 2:
                break
            await asyncio.sleep(0.01)
        # Closed as a client closes a request it gave up on; the server's event loop does not run
        # before the answer, so it has not read the close.
        clients["/leaves"].close()
        closed = {request.path: request.client_closed for request in requests}
        for request in requests:
            request.respond(Reply(b"ok\n"))
        clients["/stays"].close()
        await server.close()
        return closed

    assert asyncio.run(main()) == {"/stays": False, "/leaves": True}
