"""The EAGLE client against the simulator (each protocol, each fault) and against odd servers."""

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pytest_django.fixtures import Settings

from ingestion.eagle.client import EagleClient, GatewayTarget, fetch_now, local_url
from ingestion.eagle.simulator import FaultKind, Simulator
from ingestion.records import FailureClass, FetchFailure, Reading
from tests.factories import EagleUserFactory
from users.models import ConnectionType

PROTOCOLS = [ConnectionType.CLOUD, ConnectionType.EAGLE200, ConnectionType.LEGACY]


class Clock:
    """The simulator's clock, moved by the test."""

    def __init__(self, now: float = 1_790_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sim(clock: Clock) -> Iterator[Simulator]:
    with Simulator(users=4, seed=7, clock=clock, timeout_hold=5.0) as simulator:
        yield simulator


def target_of(sim: Simulator, connection_type: str, index: int = 0, **over: str) -> GatewayTarget:
    account = sim.accounts()[index]
    fields = {
        "cloud_id": account["cloud_id"],
        "connection_type": connection_type,
        "email": account["user_email"],
        "password": account["user_pw"],
        "address": sim.gateway_address(
            account["cloud_id"], "legacy" if connection_type == "legacy" else "eagle200"
        ),
        **over,
    }
    return GatewayTarget(**fields)


def fetch(
    sim: Simulator, target: GatewayTarget, record_type: str = "demand", **options: object
) -> Reading | FetchFailure:
    return run(sim, lambda client: client.fetch(target, record_type, **options))


def run(
    sim: Simulator, work: Callable[[EagleClient], Awaitable[object]], timeout: float = 10.0
) -> Any:
    async def main() -> Any:
        async with EagleClient(cloud_url=sim.cloud_url, timeout=timeout, limit=50) as client:
            return await work(client)

    return asyncio.run(main())


def truth_of(sim: Simulator, reading: Reading) -> Any:
    """The meter's reading current at the reading's meter time: the one with that timestamp from
    cloud and legacy replies; for an EAGLE-200, whose one LastContact may be a later update of
    another variable, the newest one at or before it."""
    return max(
        (
            item
            for item in sim.ground_truth(reading.cloud_id, reading.record_type)
            if item.meter_timestamp <= reading.meter_timestamp
        ),
        key=lambda item: item.meter_timestamp,
    )


# --- Readings over each protocol --------------------------------------------------------------


@pytest.mark.parametrize("connection_type", PROTOCOLS)
@pytest.mark.parametrize("record_type", ["demand", "summation", "price"])
def test_it_fetches_each_record_type_over_each_protocol(
    sim: Simulator, connection_type: str, record_type: str
) -> None:
    index = next(i for i, g in enumerate(sim.gateways.values()) if g.meter.offers_price)
    reading = fetch(sim, target_of(sim, connection_type, index), record_type)
    assert isinstance(reading, Reading), reading
    assert reading.record_type == record_type
    assert reading.source == connection_type
    # Cloud and legacy replies carry the meter's hex fields; an EAGLE-200 sends scaled decimals.
    assert any(name.startswith("zigbee:") for name in reading.raw) == (
        connection_type == "eagle200"
    )
    truth = truth_of(sim, reading)
    assert reading.values == truth.values
    assert truth.served and not truth.faulted


def test_it_reads_what_the_meter_shows_at_the_time(sim: Simulator, clock: Clock) -> None:
    target = target_of(sim, ConnectionType.CLOUD)
    first = fetch(sim, target)
    clock.now += 30
    later = fetch(sim, target)
    assert isinstance(first, Reading) and isinstance(later, Reading)
    # 30 s later the meter (updating every 8-10 s) has moved on by 3 or 4 readings.
    assert 24 <= later.meter_timestamp - first.meter_timestamp <= 36


def test_it_says_when_a_gateway_offers_no_price(sim: Simulator) -> None:
    index = next(i for i, g in enumerate(sim.gateways.values()) if not g.meter.offers_price)
    for connection_type in PROTOCOLS:
        result = fetch(sim, target_of(sim, connection_type, index), "price")
        assert isinstance(result, FetchFailure)
        assert result.failure_class is FailureClass.MALFORMED_REPLY
        assert "offers no price" in result.message


def test_it_asks_an_eagle200_for_its_meter_once(sim: Simulator) -> None:
    target = target_of(sim, ConnectionType.EAGLE200)

    async def twice(client: EagleClient) -> list[Reading | FetchFailure]:
        return [await client.fetch(target), await client.fetch(target)]

    before = sim.stats()["requests"]
    results = run(sim, twice)
    assert all(isinstance(result, Reading) for result in results)
    # device_list, device_query, then device_query again.
    assert sim.stats()["requests"] - before == 3

    meter_mac = sim.gateways[target.cloud_id].meter.meter_mac
    before = sim.stats()["requests"]
    assert isinstance(
        fetch(sim, target_of(sim, ConnectionType.EAGLE200, meter_mac=meter_mac)), Reading
    )
    assert sim.stats()["requests"] - before == 1


# --- Faults -----------------------------------------------------------------------------------

EXPECTED = {
    FaultKind.BAD_CREDENTIALS: (FailureClass.BAD_CREDENTIALS,) * 3,
    FaultKind.UNKNOWN_CLOUD_ID: (
        FailureClass.UNKNOWN_CLOUD_ID,
        FailureClass.BAD_CREDENTIALS,  # a local gateway answers 401 to a wrong cloud id
        FailureClass.BAD_CREDENTIALS,
    ),
    FaultKind.TIMEOUT: (FailureClass.TIMEOUT,) * 3,
    FaultKind.RESET: (FailureClass.GATEWAY_UNREACHABLE,) * 3,
    FaultKind.HTTP_5XX: (FailureClass.HTTP_ERROR,) * 3,
    FaultKind.HTML: (FailureClass.MALFORMED_REPLY,) * 3,
    FaultKind.TRUNCATED: (FailureClass.MALFORMED_REPLY,) * 3,
    FaultKind.WRONG_ROOT: (FailureClass.MALFORMED_REPLY,) * 3,
    FaultKind.ERROR_REPLY: (FailureClass.GATEWAY_UNREACHABLE,) * 3,
    FaultKind.NOT_JOINED: (FailureClass.METER_NOT_JOINED,) * 3,
    FaultKind.FALSE_ZERO: (FailureClass.SUSPICIOUS_READING,) * 3,
}


@pytest.mark.parametrize("kind", list(EXPECTED))
@pytest.mark.parametrize("protocol", range(3), ids=PROTOCOLS)
def test_it_classifies_each_fault_over_each_protocol(
    sim: Simulator, kind: FaultKind, protocol: int
) -> None:
    target = target_of(sim, PROTOCOLS[protocol])
    sim.set_fault(target.cloud_id, kind)
    # Only the timeout fault needs a short timeout; the machine may be busy for the others.
    timeout = 0.5 if kind is FaultKind.TIMEOUT else 10.0
    result = run(sim, lambda client: client.fetch(target), timeout=timeout)
    assert isinstance(result, FetchFailure), result
    assert result.failure_class is EXPECTED[kind][protocol], result
    assert target.password not in result.message + result.raw_reply
    # The other gateways are not affected.
    assert isinstance(fetch(sim, target_of(sim, PROTOCOLS[protocol], index=1)), Reading)


def test_it_reports_a_stalled_meter_as_stale(sim: Simulator, clock: Clock) -> None:
    target = target_of(sim, ConnectionType.CLOUD)
    sim.set_fault(target.cloud_id, FaultKind.STALL, duration=120)

    async def poll_for_two_minutes(client: EagleClient) -> list[Reading | FetchFailure]:
        results, previous = [], None
        for _ in range(20):
            result = await client.fetch(target, previous_timestamp=previous)
            if isinstance(result, Reading):
                previous = result.meter_timestamp
            results.append(result)
            clock.now += 6
        return results

    results = run(sim, poll_for_two_minutes)
    assert isinstance(results[0], Reading)
    stale = [r for r in results[1:] if isinstance(r, FetchFailure)]
    assert len(stale) == 19
    assert all(r.failure_class is FailureClass.STALE_READING for r in stale)
    # After the stall the meter's current reading comes through; those of the stall never do.
    clock.now += 6
    after = fetch(sim, target, previous_timestamp=results[0].meter_timestamp)
    assert isinstance(after, Reading)
    hidden = [t for t in sim.ground_truth(target.cloud_id, "demand") if not t.served and t.faulted]
    assert len(hidden) >= 11


def test_it_recovers_the_real_reading_after_a_false_zero(sim: Simulator) -> None:
    target = target_of(sim, ConnectionType.CLOUD)

    async def zero_then_real(client: EagleClient) -> list[Reading | FetchFailure]:
        sim.set_fault(target.cloud_id, FaultKind.FALSE_ZERO)
        zero = await client.fetch(target)
        sim.clear_faults(target.cloud_id)
        return [zero, await client.fetch(target)]

    zero, real = run(sim, zero_then_real)
    assert isinstance(zero, FetchFailure) and zero.failure_class is FailureClass.SUSPICIOUS_READING
    assert zero.reading is not None and zero.reading.values == {"demand_kw": 0.0}
    assert isinstance(real, Reading)
    assert real.meter_timestamp == zero.reading.meter_timestamp
    assert real.values == truth_of(sim, real).values != {"demand_kw": 0.0}


def test_it_applies_fleet_wide_faults_at_their_rate(sim: Simulator) -> None:
    sim.set_fault(None, FaultKind.HTTP_5XX, rate=0.5)
    targets = [target_of(sim, ConnectionType.CLOUD, i) for i in range(4)] * 25

    async def all_of_them(client: EagleClient) -> list[Reading | FetchFailure]:
        return await asyncio.gather(*(client.fetch(target) for target in targets))

    results = run(sim, all_of_them)
    errors = [r for r in results if isinstance(r, FetchFailure)]
    assert all(r.failure_class is FailureClass.HTTP_ERROR for r in errors)
    assert 20 <= len(errors) <= 80


def test_it_reports_a_gateway_nobody_listens_on(sim: Simulator) -> None:
    target = target_of(sim, ConnectionType.EAGLE200, address="127.0.0.1:9")
    result = fetch(sim, target)
    assert isinstance(result, FetchFailure)
    assert result.failure_class is FailureClass.GATEWAY_UNREACHABLE
    assert "cannot connect to 127.0.0.1:9" in result.message


def test_it_reports_unusable_addresses_and_credentials(sim: Simulator) -> None:
    no_address = fetch(sim, target_of(sim, ConnectionType.LEGACY, address=""))
    assert isinstance(no_address, FetchFailure)
    assert no_address.failure_class is FailureClass.GATEWAY_UNREACHABLE
    assert "no gateway address" in no_address.message
    broken = fetch(sim, target_of(sim, ConnectionType.CLOUD, password="line\nbreak"))
    assert isinstance(broken, FetchFailure)
    assert broken.failure_class is FailureClass.BAD_CREDENTIALS


def test_it_refuses_to_fetch_for_push_users(sim: Simulator) -> None:
    with pytest.raises(ValueError, match="push users send their readings"):
        fetch(sim, target_of(sim, ConnectionType.PUSH))
    with pytest.raises(ValueError, match="unknown record type 'voltage'"):
        fetch(sim, target_of(sim, ConnectionType.CLOUD), "voltage")


def test_it_maps_gateway_addresses_to_post_manager_urls() -> None:
    assert str(local_url("192.168.1.20")) == "http://192.168.1.20/cgi-bin/post_manager"
    assert (
        str(local_url("eagle-0a1b2c.local:8080"))
        == "http://eagle-0a1b2c.local:8080/cgi-bin/post_manager"
    )
    assert (
        str(local_url("http://127.0.0.1:81/gw/0a1b2c/"))
        == "http://127.0.0.1:81/gw/0a1b2c/cgi-bin/post_manager"
    )
    assert str(local_url("https://h/cgi-bin/post_manager")) == "https://h/cgi-bin/post_manager"
    with pytest.raises(ValueError):
        local_url("ftp://h")


# --- fetch_now --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_fetch_now_reads_a_users_gateway(sim: Simulator, settings: Settings) -> None:
    settings.EAGLE_CLOUD_URL = sim.cloud_url
    account = sim.accounts()[2]
    user = EagleUserFactory(
        cloud_id=account["cloud_id"], email=account["user_email"], eagle_password=account["user_pw"]
    )
    reading = fetch_now(user)
    assert isinstance(reading, Reading)
    assert truth_of(sim, reading).values == reading.values
    summation = fetch_now(user, "summation")
    assert isinstance(summation, Reading) and summation.record_type == "summation"

    user.eagle_password = "not-the-password"
    refused = fetch_now(user)
    assert isinstance(refused, FetchFailure)
    assert refused.failure_class is FailureClass.BAD_CREDENTIALS


@pytest.mark.django_db
def test_fetch_now_works_from_inside_an_event_loop(sim: Simulator) -> None:
    account = sim.accounts("eagle200")[0]
    user = EagleUserFactory(
        cloud_id=account["cloud_id"],
        eagle_password=account["user_pw"],
        connection_type=ConnectionType.EAGLE200,
        gateway_address=account["gateway_address"],
    )

    async def from_async_code() -> Reading | FetchFailure:
        return fetch_now(user)

    assert isinstance(asyncio.run(from_async_code()), Reading)


# --- Odd servers ------------------------------------------------------------------------------


def odd_server(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]], timeout: float = 10.0
) -> Any:
    """Fetch once from a real loopback server that answers with `handler`."""

    async def main() -> Reading | FetchFailure:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        async with TestServer(app, host="127.0.0.1") as server:
            url = str(server.make_url("/cgi-bin/post_manager"))
            async with EagleClient(cloud_url=url, timeout=timeout) as client:
                return await client.fetch(GatewayTarget("0a1b2c", "cloud", "a@example.org", "pw"))

    return asyncio.run(main())


def test_it_classifies_what_odd_servers_send() -> None:
    async def unauthorized(request: web.Request) -> web.Response:
        return web.Response(status=401, text="Unauthorized")

    async def error_with_500(request: web.Request) -> web.Response:
        return web.Response(status=500, text="<Error><Text>Unknown Cloud ID</Text></Error>")

    async def not_found(request: web.Request) -> web.Response:
        return web.Response(status=404, text="<html><h1>Not Found</h1></html>")

    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(40):
            await response.write(b"<x>" + b"0" * 65536)
        return response

    async def not_utf8(request: web.Request) -> web.Response:
        return web.Response(
            body=b"<InstantaneousDemand><Demand>\xff\xfe</Demand></InstantaneousDemand>"
        )

    async def headers_then_silence(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"<InstantaneousDemand>")
        await asyncio.sleep(5)
        return response

    async def redirect_to_https(request: web.Request) -> web.Response:
        raise web.HTTPPermanentRedirect(f"https://127.0.0.1:9{request.path}")

    cases = {
        unauthorized: (FailureClass.BAD_CREDENTIALS, "HTTP 401"),
        error_with_500: (FailureClass.UNKNOWN_CLOUD_ID, "Unknown Cloud ID"),
        not_found: (FailureClass.HTTP_ERROR, "HTTP 404"),
        huge: (FailureClass.MALFORMED_REPLY, "larger than"),
        not_utf8: (FailureClass.MALFORMED_REPLY, "not a hexadecimal number"),
        headers_then_silence: (FailureClass.TIMEOUT, "no reply within 0.5 s"),
        redirect_to_https: (FailureClass.GATEWAY_UNREACHABLE, "cannot connect to 127.0.0.1:9"),
    }
    for handler, (failure_class, words) in cases.items():
        result = odd_server(handler, timeout=0.5 if handler is headers_then_silence else 10.0)
        assert isinstance(result, FetchFailure), handler.__name__
        assert result.failure_class is failure_class, (handler.__name__, result)
        assert words in result.message, (handler.__name__, result)
    assert odd_server(error_with_500).http_status == 500


def test_it_records_the_protocol_as_the_source_of_real_gateways() -> None:
    async def cloud_reply(request: web.Request) -> web.Response:
        return web.Response(
            text="<InstantaneousDemand><TimeStamp>0x2f0a1b2c</TimeStamp><Demand>0x0004d2</Demand>"
            "<Divisor>0x3e8</Divisor></InstantaneousDemand>"
        )

    reading = odd_server(cloud_reply)
    assert isinstance(reading, Reading)
    assert reading.source == "cloud"
    assert reading.values == {"demand_kw": 1.234}


def raw_server(reply: bytes) -> Reading | FetchFailure:
    """Fetch once from a TCP server that answers any request with `reply` bytes, then closes."""

    async def main() -> Reading | FetchFailure:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(reply)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with (
            server,
            EagleClient(timeout=10.0, cloud_url=f"http://127.0.0.1:{port}/") as client,
        ):
            return await client.fetch(GatewayTarget("0a1b2c", "cloud", "a@example.org", "pw"))

    return asyncio.run(main())


@pytest.mark.parametrize(
    ("reply", "failure_class"),
    [
        (b"", FailureClass.GATEWAY_UNREACHABLE),
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", FailureClass.GATEWAY_UNREACHABLE),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n<Instant",
            FailureClass.GATEWAY_UNREACHABLE,
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n", FailureClass.GATEWAY_UNREACHABLE),
        (
            b"HTTP/1.1 200 OK\r\n\r\n<Error><Text>Unknown Cloud ID</Text></Error>",
            FailureClass.UNKNOWN_CLOUD_ID,
        ),
        (b"HTTP/1.1 204 No Content\r\n\r\n", FailureClass.HTTP_ERROR),
    ],
)
def test_it_survives_servers_that_do_not_speak_http_properly(
    reply: bytes, failure_class: FailureClass
) -> None:
    result = raw_server(reply)
    assert isinstance(result, FetchFailure)
    assert result.failure_class is failure_class, result
