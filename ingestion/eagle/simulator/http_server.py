"""The simulator's HTTP/1.1 server: an asyncio protocol that hands each whole request to a
callback and writes the reply the callback gives back, whenever it does.

A fleet of 20,000 gateways polled every 6 s is 3,300 requests/s beside the poller on the same
cores. aiohttp's web server spent about 160 µs of CPU on a request that only returns a fixed
body (`make bench-simulator`); this one spends a fraction of that, because the simulator needs
none of what that buys (routing, middlewares, streaming, a task per request). What real
gateways and clients rely on is kept: persistent connections (HTTP/1.1 keep-alive, HTTP/1.0
`Connection: keep-alive`, `Connection: close`), pipelined requests answered in order, bodies by
`Content-Length` or `Transfer-Encoding: chunked`, `Expect: 100-continue`, HEAD, a `Date` and
`Content-Length` on every reply, 400/413/431 for requests it cannot take, and idle connections
closed after IDLE_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import cast
from urllib.parse import unquote, urlsplit

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 1 << 20
# How long a kept-alive connection may wait for its next request (aiohttp's default).
IDLE_SECONDS = 75.0

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass(frozen=True, slots=True)
class Reply:
    """What to send back: a status, a body and its type, and any further headers."""

    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True)
class Head:
    """A request's line and headers, and how its body is delimited."""

    method: str
    path: str
    version: str
    headers: dict[str, str]
    keep_alive: bool
    chunked: bool
    # Content-Length (0 when chunked).
    length: int


class BadRequestError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


class Request:
    """One request, with the connection it came on: answer it once with `respond()` or
    `drop()`."""

    __slots__ = ("method", "path", "version", "headers", "body", "keep_alive", "_connection")

    def __init__(self, head: Head, body: bytes, connection: Connection) -> None:
        self.method = head.method
        self.path = head.path
        self.version = head.version
        # Names in lower case; a repeated header's values joined with ", ".
        self.headers = head.headers
        self.body = body
        self.keep_alive = head.keep_alive
        self._connection = connection

    @property
    def client_closed(self) -> bool:
        """Whether the client has closed the connection, or its sending half, since it sent the
        request (an HTTP client that gives up on a request closes its connection). It looks at
        the socket: a call or two into the kernel."""
        return self._connection.client_closed

    def respond(self, reply: Reply) -> None:
        self._connection.respond(self, reply)

    def drop(self, reset: bool = False) -> None:
        """Close the connection without a reply; `reset` sends a TCP reset instead of a FIN, as
        a crashing gateway or middlebox does."""
        self._connection.drop(reset)


class HttpServer:
    """Serves `receive(request)` for every request on a listening socket."""

    def __init__(self, receive: Callable[[Request], None]) -> None:
        self.receive = receive
        self.connections: set[Connection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._date = (0, b"")

    async def start(self, sock: socket.socket, backlog: int = 4096) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Connection(self), sock=sock, backlog=backlog
        )
        self._sweeper = loop.call_later(IDLE_SECONDS / 3, self._sweep)

    async def close(self) -> None:
        """Stop listening and close every connection, answered or not."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.drop(reset=False)
        if self._server is not None:
            await self._server.wait_closed()

    def date(self) -> bytes:
        """The Date header's value, formatted once a second."""
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, formatdate(now, usegmt=True).encode())
        return self._date[1]

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        idle_since = loop.time() - IDLE_SECONDS
        for connection in list(self.connections):
            if connection.idle_since(idle_since):
                connection.drop(reset=False)
        self._sweeper = loop.call_later(IDLE_SECONDS / 3, self._sweep)


class Connection(asyncio.Protocol):
    """One client connection: parses requests one at a time and writes their replies in order."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        # The request being answered (the next one waits in the buffer until it is).
        self._current: Request | None = None
        # The head of a request whose body has not all arrived.
        self._head: Head | None = None
        self._last_active = 0.0
        self._reading = True
        self._eof = False

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have asyncio.Transport's methods but are not its subclasses.
        self._transport = cast(asyncio.Transport, transport)
        self._last_active = asyncio.get_running_loop().time()
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._server.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        self._last_active = asyncio.get_running_loop().time()
        self._buffer = self._buffer + data if self._buffer else data
        if self._current is None:
            self._parse()
        elif len(self._buffer) > MAX_HEAD_BYTES + MAX_BODY_BYTES and self._transport:
            # A client pipelining more than one whole request ahead waits for the replies.
            self._transport.pause_reading()
            self._reading = False

    def eof_received(self) -> bool:
        # A client may half-close after its request: the reply still goes out, then we close.
        self._eof = True
        return self._current is not None

    # --- Answering ----------------------------------------------------------------------------

    def respond(self, request: Request, reply: Reply) -> None:
        if request is not self._current:
            raise RuntimeError("a request is answered once, in the order requests arrived")
        self._current = None
        transport = self._transport
        if transport is None:
            return
        status = reply.status
        keep_alive = request.keep_alive and not self._eof
        extra = "".join(f"{name}: {value}\r\n" for name, value in reply.headers)
        head = (
            f"HTTP/1.1 {status} {_reason(status)}\r\n"
            f"Content-Type: {reply.content_type}\r\n"
            f"Content-Length: {len(reply.body)}\r\n"
            f"{extra}"
        ).encode()
        head += b"Date: " + self._server.date() + _connection_header(keep_alive, request.version)
        transport.write(head if request.method == "HEAD" else head + reply.body)
        if not keep_alive:
            transport.close()
            return
        if not self._reading:
            transport.resume_reading()
            self._reading = True
        if self._buffer:
            self._parse()

    def drop(self, reset: bool) -> None:
        self._current = None
        transport = self._transport
        if transport is None:
            return
        if reset:
            sock = transport.get_extra_info("socket")
            # SO_LINGER 0: close with a TCP reset.
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    @property
    def client_closed(self) -> bool:
        """Also when the client's end of the connection has arrived but the event loop has not
        read it yet (a busy loop runs its due timers, answers among them, before it reads)."""
        if self._transport is None or self._eof:
            return True
        fileno = self._transport.get_extra_info("socket").fileno()
        # The transport's own socket object cannot read: look through one of our own, detached
        # so that it leaves the descriptor open.
        probe = socket.socket(fileno=fileno)
        try:
            return probe.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            # Reset by the client.
            return True
        finally:
            probe.detach()

    def idle_since(self, moment: float) -> bool:
        """Waiting for a request (not answering one) since before `moment`."""
        return self._current is None and self._last_active < moment

    # --- Parsing ------------------------------------------------------------------------------

    def _parse(self) -> None:
        """Hand the next whole request in the buffer to the server, if there is one."""
        try:
            request = self._next_request()
        except BadRequestError as exc:
            self._refuse(exc.status, str(exc))
            return
        if request is not None:
            self._current = request
            self._server.receive(request)

    def _next_request(self) -> Request | None:
        buffer = self._buffer
        if self._head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD_BYTES:
                    raise BadRequestError(431, "Request Header Fields Too Large")
                return None
            if end > MAX_HEAD_BYTES:
                raise BadRequestError(431, "Request Header Fields Too Large")
            self._head = _parse_head(buffer[:end])
            buffer = self._buffer = buffer[end + 4 :]
        head = self._head
        if head.chunked:
            found = _chunked_body(buffer)
            if found is None:
                self._continue(head.headers)
                return None
            body, used = found
        else:
            if len(buffer) < head.length:
                self._continue(head.headers)
                return None
            body, used = buffer[: head.length], head.length
        self._head = None
        self._buffer = buffer[used:]
        return Request(head, body, self)

    def _continue(self, headers: dict[str, str]) -> None:
        """Tell a client waiting on `Expect: 100-continue` to send its body, once."""
        if headers.get("expect", "").lower() == "100-continue" and self._transport:
            self._transport.write(_CONTINUE)
            headers["expect"] = ""

    def _refuse(self, status: int, text: str) -> None:
        self._head = None
        self._buffer = b""
        transport = self._transport
        if transport is None:
            return
        body = f"{text}\n".encode()
        transport.write(
            f"HTTP/1.1 {status} {_reason(status)}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n".encode()
            + b"Date: "
            + self._server.date()
            + _connection_header(False, "HTTP/1.1")
            + body
        )
        transport.close()


_REASONS = {status.value: status.phrase for status in HTTPStatus}


def _reason(status: int) -> str:
    return _REASONS.get(status, "Unknown")


def _connection_header(keep_alive: bool, version: str) -> bytes:
    """The end of a reply's head: HTTP/1.1 keeps connections open unless told otherwise,
    HTTP/1.0 closes them unless told otherwise."""
    if not keep_alive:
        return b"\r\nConnection: close\r\n\r\n"
    if version == "HTTP/1.0":
        return b"\r\nConnection: keep-alive\r\n\r\n"
    return b"\r\n\r\n"


def _parse_head(head: bytes) -> Head:
    # Header values are UTF-8 here (aiohttp's server reads them so too); bytes that are not
    # survive as surrogates and match nothing.
    request_line, *lines = head.decode("utf-8", "surrogateescape").split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or parts[2] not in _VERSIONS:
        raise BadRequestError(400, "Bad Request: not an HTTP/1.x request line")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name or name[-1] in " \t" or line[0] in " \t":
            raise BadRequestError(400, "Bad Request: a malformed header line")
        name = name.lower()
        value = value.strip(" \t")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    connection = headers.get("connection", "").lower()
    if version == "HTTP/1.1":
        keep_alive = "close" not in connection
    else:
        keep_alive = "keep-alive" in connection
    chunked = False
    length = 0
    if "transfer-encoding" in headers:
        if not headers["transfer-encoding"].lower().rstrip().endswith("chunked"):
            raise BadRequestError(400, "Bad Request: a body of unknown length")
        chunked = True
    elif "content-length" in headers:
        values = {value.strip() for value in headers["content-length"].split(",")}
        (text,) = values if len(values) == 1 else ("",)
        if not text.isdigit() or not text.isascii():
            raise BadRequestError(400, "Bad Request: an invalid Content-Length")
        length = int(text)
        if length > MAX_BODY_BYTES:
            raise BadRequestError(413, "Request Entity Too Large")
    return Head(method, _path(target), version, headers, keep_alive, chunked, length)


_VERSIONS = ("HTTP/1.1", "HTTP/1.0")


def _path(target: str) -> str:
    """The decoded path of a request target (origin form, or absolute form from a proxy)."""
    if not target.startswith("/"):
        target = urlsplit(target).path or "/"
    path = target.partition("?")[0]
    return unquote(path) if "%" in path else path


def _chunked_body(buffer: bytes) -> tuple[bytes, int] | None:
    """(body, bytes used) of a chunked body at the start of `buffer`, or None until all of it
    has arrived."""
    chunks: list[bytes] = []
    size_total = 0
    position = 0
    while True:
        end = buffer.find(b"\r\n", position)
        if end < 0:
            if len(buffer) - position > 1024:
                raise BadRequestError(400, "Bad Request: a malformed chunk size")
            return None
        size_field = buffer[position:end].partition(b";")[0].strip(b" \t")
        if not _CHUNK_SIZE.fullmatch(size_field):
            raise BadRequestError(400, "Bad Request: a malformed chunk size")
        size = int(size_field, 16)
        position = end + 2
        if size == 0:
            # Trailer fields, if any, up to an empty line; they are read and ignored.
            trailers_end = buffer.find(b"\r\n\r\n", position - 2)
            if trailers_end < 0:
                if len(buffer) - position > MAX_HEAD_BYTES:
                    raise BadRequestError(431, "Request Header Fields Too Large")
                return None
            return b"".join(chunks), trailers_end + 4
        size_total += size
        if size_total > MAX_BODY_BYTES:
            raise BadRequestError(413, "Request Entity Too Large")
        if len(buffer) < position + size + 2:
            return None
        if buffer[position + size : position + size + 2] != b"\r\n":
            raise BadRequestError(400, "Bad Request: a chunk longer than its size")
        chunks.append(buffer[position : position + size])
        position += size + 2
