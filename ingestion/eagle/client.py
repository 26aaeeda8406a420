"""The EAGLE client: one interface over the Rainforest cloud, EAGLE-200 local and legacy local APIs.

`EagleClient.fetch()` returns a decoded Reading or a classified FetchFailure and never raises for
anything a server can send. One client owns one aiohttp session, so thousands of fetches share a
connection pool; each request has its own timeout, counted while the event loop listens (see
`listening_timeout`). `fetch_now()` is the same for sync code.

How each connection type is reached (`users.models.ConnectionType`):

- cloud: POST EAGLE_CLOUD_URL with Cloud-ID/User/Password headers and an XML command;
- eagle200: POST <gateway>/cgi-bin/post_manager with Basic auth (cloud id, install code):
  device_list once to learn the meter's address (unless meter_mac is set), then device_query;
- legacy: the same URL and auth, with the cloud's XML commands and replies.

A gateway address is `host[:port]` or a URL; `/cgi-bin/post_manager` is appended unless the path
already ends with it (`http://127.0.0.1:8765/eagle200/00a1b2` is a gateway of the simulator).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import socket
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TypeVar

import aiohttp
from django.conf import settings
from yarl import URL

from ingestion.eagle.decoders import decode_reply, device_list_meter, failure, judge
from ingestion.eagle.record_types import DEMAND, PreviousReading, RecordType, get_record_type
from ingestion.records import FailureClass, FetchFailure, Reading, Source
from ingestion.redaction import redact
from users.gateway_addresses import address_refusal

if TYPE_CHECKING:
    from users.models import EagleUser

# Replies larger than this are not EAGLE replies (a full device_query is about 30 KB).
MAX_REPLY_BYTES = 1 << 20
# A request's timeout that comes due while the event loop is not running (a poller between two
# ticks, or busy writing) is judged again this long after the loop runs again.
LISTEN_SECONDS = 0.05
LOCAL_PATH = "/cgi-bin/post_manager"

# Connection type -> source recorded with its readings.
SOURCES = {"cloud": Source.CLOUD, "eagle200": Source.EAGLE200, "legacy": Source.LEGACY}

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class GatewayTarget:
    """Everything needed to fetch one household's readings; built from an EagleUser.

    `password` is the cloud password or the local gateway's install code; `address` the local
    gateway (host[:port] or URL); `meter_mac` the meter's HardwareAddress on an EAGLE-200
    (asked of the gateway with device_list when empty).
    """

    cloud_id: str
    connection_type: str
    email: str = ""
    password: str = field(default="", repr=False)
    address: str = ""
    meter_mac: str = ""

    @classmethod
    def for_user(cls, user: EagleUser) -> GatewayTarget:
        return cls(
            cloud_id=user.cloud_id,
            connection_type=user.connection_type,
            email=user.email,
            password=user.eagle_password,
            address=user.gateway_address,
            meter_mac=user.meter_mac,
        )


class ReplyTooLargeError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    text: str


def cloud_command(record_type: RecordType) -> bytes:
    # No <MacId>: it is optional, and names the EAGLE's own radio, which users do not know.
    return f"<Command><Name>{record_type.cloud_command}</Name></Command>".encode()


DEVICE_LIST_COMMAND = b"<Command><Name>device_list</Name></Command>"


def device_query_command(hardware_address: str, variables: tuple[str, ...]) -> bytes:
    names = "".join(f"<Variable><Name>{name}</Name></Variable>" for name in variables)
    return (
        f"<Command><Name>device_query</Name><DeviceDetails><HardwareAddress>{hardware_address}"
        f"</HardwareAddress></DeviceDetails><Components><Component><Name>Main</Name>"
        f"<Variables>{names}</Variables></Component></Components></Command>"
    ).encode()


def local_url(address: str) -> URL:
    """The post_manager URL of a gateway given as host[:port] or URL; ValueError if unusable."""
    address = address.strip()
    if not address:
        raise ValueError("the user has no gateway address")
    url = URL(address if "://" in address else f"http://{address}")
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"{address!r} is not an http(s) gateway address")
    path = url.path.rstrip("/")
    if not path.endswith(LOCAL_PATH):
        path += LOCAL_PATH
    return url.with_path(path).with_query(None).with_fragment(None)


class GuardedResolver(aiohttp.ThreadedResolver):
    """Name resolution that refuses addresses a gateway may not have (users.gateway_addresses):
    a host name pointing into a private network, whenever it is resolved."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[aiohttp.abc.ResolveResult]:
        results = await super().resolve(host, port, family)
        for result in results:
            refusal = address_refusal(result["host"])
            if refusal:
                raise OSError(f"{host} resolves to {refusal}")
        return results


@asynccontextmanager
async def listening_timeout(seconds: float) -> AsyncIterator[None]:
    """Raise TimeoutError in the block once it has waited `seconds` for a reply, counting only
    time the event loop could read one.

    An event loop runs its due timers before it reads its sockets. A poller stops its loop
    between ticks (and a busy one runs none for a while): a plain timeout that came due
    meanwhile would fire before the loop read a reply that had arrived in time, and throw that
    reading away. So a timeout found overdue by more than LISTEN_SECONDS gives the loop
    LISTEN_SECONDS to read what arrived, and expires only when it fires on time.
    """
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(None) as timeout:
        due = loop.time() + seconds
        handle: asyncio.TimerHandle

        def check() -> None:
            nonlocal due, handle
            now = loop.time()
            if now - due > LISTEN_SECONDS:
                due = now + LISTEN_SECONDS
                handle = loop.call_at(due, check)
            else:
                timeout.reschedule(now)

        handle = loop.call_at(due, check)
        try:
            yield
        finally:
            handle.cancel()


class EagleClient:
    """Fetches readings from many gateways over one pooled aiohttp session.

    Use as `async with EagleClient() as client: await client.fetch(target)`. Safe to share among
    concurrent tasks of one event loop. It remembers, per gateway and record type, the last
    reading it decoded (for plausibility checks) and discovered EAGLE-200 meter addresses.
    """

    def __init__(
        self,
        *,
        limit: int | None = None,
        timeout: float | None = None,
        cloud_url: str | None = None,
    ) -> None:
        self.limit = limit or settings.INGEST_CONCURRENCY
        self.timeout = timeout or settings.INGEST_REQUEST_TIMEOUT
        self.cloud_url = URL(cloud_url or settings.EAGLE_CLOUD_URL)
        self._session: aiohttp.ClientSession | None = None
        self._previous: dict[tuple[str, str], PreviousReading] = {}
        self._meter_addresses: dict[str, str] = {}
        self._local_urls: dict[str, URL] = {}

    async def __aenter__(self) -> EagleClient:
        connector = aiohttp.TCPConnector(
            limit=self.limit,
            limit_per_host=0,
            ttl_dns_cache=300,
            keepalive_timeout=30,
            resolver=GuardedResolver(),
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # Each fetch has its own timeout (listening_timeout), not aiohttp's.
            timeout=aiohttp.ClientTimeout(total=None),
            skip_auto_headers=("User-Agent",),
            headers={"User-Agent": "rainlog", "Content-Type": "text/xml"},
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(
        self,
        target: GatewayTarget,
        record_type: str = DEMAND,
        previous_timestamp: int | None = None,
    ) -> Reading | FetchFailure:
        """One reading of `record_type` from the target's gateway, or why there is none.

        STALE_READING when the meter timestamp equals `previous_timestamp`; SUSPICIOUS_READING
        for a sudden 0 kW or an implausible value. Raises only for caller errors (unknown record
        type or connection type, a push user, a client used outside `async with`).
        """
        kind = get_record_type(record_type)
        source = SOURCES.get(target.connection_type)
        if source is None:
            raise ValueError(
                f"{target.cloud_id}: connection type {target.connection_type!r} is not fetched "
                "(push users send their readings)"
            )
        if self._session is None:
            raise RuntimeError("EagleClient.fetch() outside `async with EagleClient()`")
        try:
            async with listening_timeout(self.timeout):
                if source is Source.EAGLE200:
                    result = await self._fetch_eagle200(target, kind)
                else:
                    result = await self._fetch_command(target, kind, source)
        except TimeoutError:
            return failure(FailureClass.TIMEOUT, f"no reply within {self.timeout:g} s")
        except ReplyTooLargeError:
            return failure(
                FailureClass.MALFORMED_REPLY, f"a reply larger than {MAX_REPLY_BYTES} bytes"
            )
        except aiohttp.TooManyRedirects as exc:
            return failure(FailureClass.HTTP_ERROR, f"too many redirects ({exc.status})")
        except aiohttp.ClientSSLError as exc:
            # Newer EAGLE firmware redirects to HTTPS, often with a certificate nobody can verify.
            return failure(FailureClass.GATEWAY_UNREACHABLE, f"TLS failed: {exc}")
        except aiohttp.ClientConnectorError as exc:
            return failure(
                FailureClass.GATEWAY_UNREACHABLE,
                f"cannot connect to {exc.host}:{exc.port}: {exc.os_error.strerror or exc.os_error}",
            )
        except aiohttp.ServerDisconnectedError:
            return failure(
                FailureClass.GATEWAY_UNREACHABLE, "the server closed the connection without a reply"
            )
        except aiohttp.ClientPayloadError:
            return failure(
                FailureClass.GATEWAY_UNREACHABLE, "the connection broke during the reply"
            )
        except aiohttp.ClientError as exc:
            return failure(FailureClass.GATEWAY_UNREACHABLE, f"{type(exc).__name__}: {exc}")
        except OSError as exc:
            return failure(FailureClass.GATEWAY_UNREACHABLE, f"network error: {exc}")
        if isinstance(result, FetchFailure):
            return _without_password(result, target.password)
        return self._judge(result, previous_timestamp)

    def _judge(self, reading: Reading, previous_timestamp: int | None) -> Reading | FetchFailure:
        key = (reading.cloud_id, reading.record_type)
        judged = judge(reading, previous_timestamp, self._previous.get(key))
        stale = (
            isinstance(judged, FetchFailure) and judged.failure_class is FailureClass.STALE_READING
        )
        if not stale:
            trusted = isinstance(judged, Reading)
            self._previous[key] = PreviousReading(reading.meter_timestamp, reading.values, trusted)
        return judged

    async def _fetch_command(
        self, target: GatewayTarget, kind: RecordType, source: Source
    ) -> Reading | FetchFailure:
        """Cloud and legacy gateways: one XML command, one reply of the cloud's shape."""
        if source is Source.CLOUD:
            url = self.cloud_url
            headers = {
                "Cloud-ID": target.cloud_id,
                "User": target.email,
                "Password": target.password,
            }
        else:
            url_or_failure = self._local_url(target)
            if isinstance(url_or_failure, FetchFailure):
                return url_or_failure
            url, headers = url_or_failure, self._basic_auth(target)
        unsendable = _unsendable(headers)
        if unsendable:
            return failure(FailureClass.BAD_CREDENTIALS, unsendable)
        reply = await self._post(url, cloud_command(kind), headers)
        return _reply_result(reply, target.cloud_id, kind, source)

    async def _fetch_eagle200(
        self, target: GatewayTarget, kind: RecordType
    ) -> Reading | FetchFailure:
        url = self._local_url(target)
        if isinstance(url, FetchFailure):
            return url
        headers = self._basic_auth(target)
        unsendable = _unsendable(headers)
        if unsendable:
            return failure(FailureClass.BAD_CREDENTIALS, unsendable)
        address = target.meter_mac or self._meter_addresses.get(target.cloud_id)
        if not address:
            listing = await self._post(url, DEVICE_LIST_COMMAND, headers)
            if listing.status != 200:
                return _http_failure(listing.status, listing.text)
            found = device_list_meter(listing.text)
            if isinstance(found, FetchFailure):
                return found
            address = self._meter_addresses[target.cloud_id] = found
        reply = await self._post(
            url, device_query_command(address, kind.eagle200_variables), headers
        )
        result = _reply_result(reply, target.cloud_id, kind, Source.EAGLE200)
        if isinstance(result, FetchFailure):
            # The meter may have been replaced: ask the gateway again next time.
            self._meter_addresses.pop(target.cloud_id, None)
        return result

    async def _post(self, url: URL, body: bytes, headers: dict[str, str]) -> Reply:
        assert self._session is not None
        async with self._session.post(url, data=body, headers=headers) as response:
            length = response.content_length
            if length is not None and length <= MAX_REPLY_BYTES:
                payload = await response.read()
            else:
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.content.iter_any():
                    size += len(chunk)
                    if size > MAX_REPLY_BYTES:
                        raise ReplyTooLargeError
                    chunks.append(chunk)
                payload = b"".join(chunks)
            return Reply(response.status, payload.decode("utf-8", errors="replace"))

    def _local_url(self, target: GatewayTarget) -> URL | FetchFailure:
        url = self._local_urls.get(target.address)
        if url is None:
            try:
                url = local_url(target.address)
                refusal = address_refusal(url.host or "")
                if refusal:
                    raise ValueError(refusal)
                self._local_urls[target.address] = url
            except ValueError as exc:
                return failure(FailureClass.GATEWAY_UNREACHABLE, f"{target.cloud_id}: {exc}")
        return url

    @staticmethod
    def _basic_auth(target: GatewayTarget) -> dict[str, str]:
        return {"Authorization": basic_authorization(target.cloud_id, target.password)}


def basic_authorization(login: str, password: str) -> str:
    """An Authorization header value for HTTP Basic auth (UTF-8, as EAGLEs expect)."""
    credentials = f"{login}:{password}".encode(errors="replace")
    return "Basic " + base64.b64encode(credentials).decode()


def _unsendable(headers: dict[str, str]) -> str:
    """Why credentials cannot travel in HTTP headers, or an empty string."""
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\0" in value:
            return f"the {name} header would hold a control character: fix the user's credentials"
    return ""


def _http_failure(status: int, text: str) -> FetchFailure:
    if status in (401, 403):
        return failure(
            FailureClass.BAD_CREDENTIALS,
            f"HTTP {status}: the credentials were refused",
            text,
            status,
        )
    return failure(FailureClass.HTTP_ERROR, f"HTTP {status}", text, status)


def _without_password(result: FetchFailure, password: str) -> FetchFailure:
    """A gateway may echo the credentials it was sent in its error text: keep them out of
    incidents, fetch state, logs and answers."""
    return replace(
        result,
        message=redact(result.message, [password]),
        raw_reply=redact(result.raw_reply, [password]),
    )


def _reply_result(
    reply: Reply, cloud_id: str, kind: RecordType, source: Source
) -> Reading | FetchFailure:
    status, text = reply.status, reply.text
    if status == 200:
        return decode_reply(text, cloud_id=cloud_id, source=source, record_type=kind.name)
    if status in (401, 403):
        return _http_failure(status, text)
    # Some services send their Error reply with a 4xx/5xx status: its text is the better reason.
    decoded = decode_reply(text, cloud_id=cloud_id, source=source, record_type=kind.name)
    if (
        isinstance(decoded, FetchFailure)
        and decoded.failure_class is not FailureClass.MALFORMED_REPLY
    ):
        return FetchFailure(
            decoded.failure_class, decoded.message, decoded.raw_reply, status, decoded.reading
        )
    return _http_failure(status, text)


# --- Sync use ---------------------------------------------------------------------------------


def run_sync(awaitable: Awaitable[T]) -> T:
    """Run a coroutine to completion from sync code, even when this thread runs an event loop."""

    async def main() -> T:
        return await awaitable

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()


def fetch_now(user: EagleUser, record_type: str = DEMAND) -> Reading | FetchFailure:
    """One reading from the user's gateway now (for commands, admin actions and the API)."""
    target = GatewayTarget.for_user(user)

    async def fetch() -> Reading | FetchFailure:
        async with EagleClient(limit=2) as client:
            return await client.fetch(target, record_type)

    return run_sync(fetch())
