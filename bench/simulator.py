"""Benchmark: the EAGLE simulator serving 5,000 gateways with 200 ms latency.

    python -m bench.simulator [--gateways 5000] [--latency 0.2] [--seconds 10] [--concurrency 1000]

Each server runs in its own process; this process polls it with the real EagleClient (uvloop),
cycling over every gateway with `--concurrency` requests in flight, as the poller does (the
cloud API: Cloud-ID/User/Password headers, an XML command). Two baselines are measured in the
same run, each waiting the latency and returning a fixed reply: a bare aiohttp server (what the
simulator's CPU per request was bounded by while it was served by aiohttp) and the simulator's
own HTTP layer (http_server.py). Printed: the load average, requests/s, server CPU per request
(process CPU time from /proc over the requests answered), time to poll the whole fleet once, the
ratios, and the share of one core the simulator needs for 20,000 users polled every 6 s.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import time
from dataclasses import dataclass
from typing import Any

from bench.support import cpu_seconds, free_port, load_average

CLOUD_PATH = "/cgi-bin/post_manager"
# The fleet of bench-poll's 20,000-user target, polled every 6 s.
TARGET_REQUESTS_PER_SECOND = 20_000 / 6
FIXED_REPLY = (
    b"<InstantaneousDemand>\n  <DeviceMacId>0xd8d5b9000000f8bc</DeviceMacId>\n"
    b"  <MeterMacId>0x00135003005dba2b</MeterMacId>\n  <TimeStamp>0x2f0a1b2c</TimeStamp>\n"
    b"  <Demand>0x0004d2</Demand>\n  <Multiplier>0x00000001</Multiplier>\n"
    b"  <Divisor>0x000003e8</Divisor>\n  <DigitsRight>0x03</DigitsRight>\n"
    b"  <DigitsLeft>0x0f</DigitsLeft>\n  <SuppressLeadingZero>Y</SuppressLeadingZero>\n"
    b"</InstantaneousDemand>\n"
)


def serve_simulator(port: int, gateways: int, latency: float, ready: multiprocessing.Event) -> None:
    from ingestion.eagle.simulator import Simulator

    with Simulator(users=gateways, latency=latency, seed=1, port=port):
        ready.set()
        while True:
            time.sleep(3600)


def serve_baseline(port: int, latency: float, ready: multiprocessing.Event) -> None:
    import uvloop
    from aiohttp import web

    async def handle(request: web.BaseRequest) -> web.Response:
        await request.read()
        await asyncio.sleep(latency)
        return web.Response(body=FIXED_REPLY, content_type="text/xml")

    async def main() -> None:
        runner = web.ServerRunner(web.Server(handle, access_log=None))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
        ready.set()
        await asyncio.Event().wait()

    uvloop.run(main())


def serve_http_layer(port: int, latency: float, ready: multiprocessing.Event) -> None:
    import socket

    import uvloop

    from ingestion.eagle.simulator.http_server import HttpServer, Reply, Request

    fixed = Reply(FIXED_REPLY, content_type="text/xml")

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def receive(request: Request) -> None:
            loop.call_later(latency, request.respond, fixed)

        sock = socket.socket()
        sock.bind(("127.0.0.1", port))
        await HttpServer(receive).start(sock)
        ready.set()
        await asyncio.Event().wait()

    uvloop.run(main())


@dataclass
class Result:
    requests: int
    failures: int
    seconds: float
    server_cpu: float
    client_cpu: float
    fleet_seconds: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_per_request_us(self) -> float:
        return self.server_cpu / max(self.requests, 1) * 1e6

    @property
    def client_cpu_per_request_us(self) -> float:
        return self.client_cpu / max(self.requests, 1) * 1e6


async def poll(
    url: str, accounts: list[dict[str, str]], concurrency: int, seconds: float, pid: int
) -> Result:
    from ingestion.eagle.client import EagleClient, GatewayTarget
    from ingestion.records import FetchFailure

    targets = [
        GatewayTarget(row["cloud_id"], "cloud", row["user_email"], row["user_pw"])
        for row in accounts
    ]
    counts = {"requests": 0, "failures": 0}
    async with EagleClient(limit=concurrency, timeout=10.0, cloud_url=url) as client:
        # One pass over the whole fleet first: what one poll tick needs.
        started = time.monotonic()
        gate = asyncio.Semaphore(concurrency)

        async def one(target: GatewayTarget) -> None:
            async with gate:
                result = await client.fetch(target)
            counts["requests"] += 1
            counts["failures"] += isinstance(result, FetchFailure)

        await asyncio.gather(*(one(target) for target in targets))
        fleet_seconds = time.monotonic() - started

        counts.update(requests=0, failures=0)
        cpu_before, client_before = cpu_seconds(pid), time.process_time()
        started = time.monotonic()
        deadline = started + seconds

        async def worker(offset: int) -> None:
            i = offset
            while time.monotonic() < deadline:
                result = await client.fetch(targets[i % len(targets)])
                counts["requests"] += 1
                counts["failures"] += isinstance(result, FetchFailure)
                i += concurrency

        await asyncio.gather(*(worker(offset) for offset in range(concurrency)))
        elapsed = time.monotonic() - started
        return Result(
            requests=counts["requests"],
            failures=counts["failures"],
            seconds=elapsed,
            server_cpu=cpu_seconds(pid) - cpu_before,
            client_cpu=time.process_time() - client_before,
            fleet_seconds=fleet_seconds,
        )


def measure(name: str, target: Any, args: tuple, accounts: Any, options: Any) -> Result:
    import uvloop

    port = free_port()
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    server = context.Process(target=target, args=(port, *args, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(60):
            raise SystemExit(f"{name} did not start")
        url = f"http://127.0.0.1:{port}{CLOUD_PATH}"
        assert server.pid is not None
        result = uvloop.run(poll(url, accounts, options.concurrency, options.seconds, server.pid))
    finally:
        server.terminate()
        server.join(10)
    print(
        f"{name:>10}: {result.rate:8.0f} requests/s, server CPU {result.cpu_per_request_us:4.0f} µs/request "
        f"(client {result.client_cpu_per_request_us:4.0f} µs), "
        f"whole fleet polled once in {result.fleet_seconds:5.2f} s, {result.failures} failures "
        f"of {result.requests}"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=5000)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=1000)
    options = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rainlog.settings")
    os.environ.setdefault("DEBUG", "1")
    import django

    django.setup()
    from ingestion.eagle.simulator import Simulator

    accounts = Simulator(users=options.gateways, seed=1).accounts()
    print(
        f"{options.gateways} gateways, {options.latency * 1000:.0f} ms latency, "
        f"{options.concurrency} requests in flight, {options.seconds:g} s per server; "
        f"load average {load_average()}"
    )
    aiohttp_floor = measure("aiohttp", serve_baseline, (options.latency,), accounts, options)
    layer_floor = measure("http layer", serve_http_layer, (options.latency,), accounts, options)
    simulator = measure(
        "simulator", serve_simulator, (options.gateways, options.latency), accounts, options
    )
    cpu = simulator.cpu_per_request_us
    print(
        f"simulator: {cpu / aiohttp_floor.cpu_per_request_us:.2f}× the server CPU per request "
        f"of a bare aiohttp server, {cpu / layer_floor.cpu_per_request_us:.2f}× its own HTTP "
        f"layer's; {simulator.rate / aiohttp_floor.rate:.2f}× aiohttp's requests/s"
    )
    print(
        f"a 6-s tick of {options.gateways} gateways needs {options.gateways / 6:.0f} requests/s; "
        f"20,000 users every 6 s ({TARGET_REQUESTS_PER_SECOND:,.0f} requests/s) need "
        f"{cpu * TARGET_REQUESTS_PER_SECOND / 1e4:.0f} % of one core for the simulator "
        f"(a bare aiohttp server: "
        f"{aiohttp_floor.cpu_per_request_us * TARGET_REQUESTS_PER_SECOND / 1e4:.0f} %); "
        f"load average {load_average()}"
    )


if __name__ == "__main__":
    main()
