"""The EAGLE simulator: one real HTTP server standing in for the Rainforest cloud and for the local
APIs of many gateways at once.

Routes:

    POST /cgi-bin/post_manager                 the cloud (`sim.cloud_url`): Cloud-ID/User/Password
                                               headers, an XML command, an XML reply or a JSON
                                               one when the command says <Format>JSON</Format>
    POST /eagle200/<cloud_id>/cgi-bin/post_manager   one gateway's local API as an EAGLE-200, Basic
                                               auth (cloud id, password): device_list and
                                               device_query, one device-level LastContact
    POST /legacy/<cloud_id>/cgi-bin/post_manager     the same gateway as a legacy (first generation)
                                               EAGLE: the cloud's commands and get_network_info
                                               (model Z109-EAGLE); no device_list
    GET  /                                     a one-line status

Each generation answers only its own commands (`Error` "Unknown command" otherwise), as real ones
do, so clients that tell them apart (Home Assistant's) classify them right. A local user's
`gateway_address` is `sim.gateway_address(cloud_id, generation)`. Replies carry no mark of the
simulator: readings keep the source of the protocol that carried them.

It runs its own event loop (uvloop) in a background thread, behind a small HTTP/1.1 server of its
own (http_server.py): beside a poller of 20,000 users on the same two cores, aiohttp's web server
alone cost more CPU per request than the whole simulator may. A reply is rendered once per meter
update and cached, and the latency is a timer, not a task.

Ground truth: every reading a meter produced is computed from the seed (see meters.py); the
simulator also records which readings it actually sent in a good reply ("served") and every
fault it was told to inject ("faulted" readings existed while a fault was active for their
gateway). A loss-free client logs every served reading exactly once; without faults every
produced reading is served to a client polling more often than every 8 s.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
import random
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import uvloop

from ingestion.eagle.client import basic_authorization
from ingestion.eagle.simulator.faults import Fault, FaultKind, FaultPlan
from ingestion.eagle.simulator.http_server import HttpServer, Reply, Request
from ingestion.eagle.simulator.meters import (
    COMMANDS,
    MODELS,
    VARIABLES,
    Meter,
    ReadingModel,
    produced,
)
from ingestion.eagle.simulator.replies import (
    HTML_PAGE,
    cloud_json,
    cloud_xml,
    device_list,
    device_query,
    error_reply,
    network_info,
    wrong_root,
)

POST_MANAGER = "/cgi-bin/post_manager"
# Local API prefixes by gateway generation (the connection types of local users).
GENERATIONS = ("eagle200", "legacy")
# What a legacy EAGLE names itself in get_network_info.
LEGACY_MODEL_ID = "Z109-EAGLE"
# The local commands each generation knows (anything else gets Error "Unknown command").
GENERATION_COMMANDS = {
    "eagle200": frozenset({"device_list", "device_query"}),
    "legacy": frozenset({"get_network_info", *COMMANDS}),
}

_COMMAND = re.compile(rb"<Name>\s*([A-Za-z_]+)\s*</Name>")
_JSON_FORMAT = re.compile(rb"<Format>\s*JSON\s*</Format>", re.I)
_HARDWARE_ADDRESS = re.compile(rb"<HardwareAddress>\s*([^<\s]+)\s*</HardwareAddress>")
_VARIABLE = re.compile(rb"<Variable>\s*<Name>\s*([^<\s]+)\s*</Name>")
_ALL = re.compile(rb"<All>\s*Y\s*</All>", re.I)

# Error texts the simulated cloud and gateways send.
TEXT_BAD_CREDENTIALS = "Invalid user name or password"
TEXT_UNKNOWN_CLOUD_ID = "Unknown Cloud ID"
TEXT_UNREACHABLE = "Gateway did not respond: it may be offline"
TEXT_NOT_JOINED = "Meter not joined: the gateway has lost its meter"

NOT_FOUND = Reply(b"Not Found\n", status=404)
UNAUTHORIZED = Reply(
    b"Unauthorized\n", status=401, headers=(("WWW-Authenticate", 'Basic realm="EAGLE"'),)
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Drop:
    """No reply: the connection is closed after `after` seconds, with a TCP reset if `reset`."""

    reset: bool
    after: float = 0.0


@dataclass(frozen=True, slots=True)
class GroundTruthReading:
    """One reading a simulated meter produced."""

    cloud_id: str
    record_type: str
    meter_timestamp: int
    values: dict[str, Any]
    # Sent in at least one good reply.
    served: bool
    # A fault was active for this gateway during some of the time this reading was current.
    faulted: bool

    @property
    def value(self) -> Any:
        """The main value: demand_kw, delivered_kwh or price."""
        return next(iter(self.values.values()))

    @property
    def dedup_key(self) -> tuple[str, str, int]:
        return (self.cloud_id, self.record_type, self.meter_timestamp)


class ServedLog:
    """Which readings (update indices) of one meter and type were sent in a good reply.

    Indices are served in increasing order (the clock moves forward), so the log is the range
    first..last minus the gaps the client never saw.
    """

    __slots__ = ("first", "last", "gaps")

    def __init__(self) -> None:
        self.first: int | None = None
        self.last = 0
        self.gaps: list[tuple[int, int]] = []

    def mark(self, k: int) -> None:
        if self.first is None:
            self.first = self.last = k
        elif k > self.last:
            if k > self.last + 1:
                self.gaps.append((self.last + 1, k - 1))
            self.last = k
        elif k < self.first:
            # Only a clock moved backwards by a test gets here.
            if k + 1 < self.first:
                self.gaps.insert(0, (k + 1, self.first - 1))
            self.first = k

    def __contains__(self, k: int) -> bool:
        if self.first is None or not self.first <= k <= self.last:
            return False
        i = bisect.bisect_right(self.gaps, (k, float("inf"))) - 1
        return i < 0 or not self.gaps[i][0] <= k <= self.gaps[i][1]

    def copy(self) -> ServedLog:
        other = ServedLog()
        other.first, other.last, other.gaps = self.first, self.last, list(self.gaps)
        return other


class Gateway:
    """A simulated gateway's mutable state: what it served, and its cached replies."""

    __slots__ = ("meter", "basic_auth", "served", "cache")

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self.basic_auth = basic_authorization(meter.cloud_id, meter.password)
        self.served = {name: ServedLog() for name in MODELS}
        # (record type, JSON?) -> (update index, reply bytes)
        self.cache: dict[tuple[str, bool], tuple[int, bytes]] = {}


class Simulator:
    """A fleet of simulated EAGLE gateways behind one HTTP server on 127.0.0.1.

    `Simulator(users=100).start()` listens on a free port; `stop()` (or `with Simulator(...)`)
    shuts it down. `clock` (unix seconds) drives the meters, so tests can control time.
    """

    def __init__(
        self,
        users: int,
        latency: float = 0.0,
        seed: int = 0,
        faults: FaultPlan | None = None,
        clock: Callable[[], float] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        timeout_hold: float = 60.0,
    ) -> None:
        if users < 0:
            raise ValueError("users must be 0 or more")
        self.latency = latency
        self.seed = seed
        self.host = host
        self.port = port
        # How long a timeout fault keeps the client waiting before the connection is dropped.
        self.timeout_hold = timeout_hold
        self._clock = clock or time.time
        self.gateways = {
            meter.cloud_id: Gateway(meter)
            for meter in (Meter.create(seed, i) for i in range(users))
        }
        self._plan = faults or FaultPlan()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._history: list[Fault] = []
        # Faults not yet over, by gateway (None = fleet-wide); replaced whole on every change.
        self._faults: dict[str | None, tuple[Fault, ...]] = {}
        self.started_at = self._clock()
        self.requests = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.readings_served = 0
        self.faults_injected = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    # --- Lifecycle ----------------------------------------------------------------------------

    def start(self) -> Simulator:
        """Listen and serve in a background thread; returns once the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError("the simulator is already running")
        self.started_at = self._clock()
        self._apply_plan()
        self._thread = threading.Thread(target=self._run, name="eagle-simulator", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            self._thread.join()
            self._thread = None
            raise self._startup_error
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=30)
        self._thread = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def cloud_url(self) -> str:
        """What EAGLE_CLOUD_URL should be for the cloud users of this simulator."""
        return f"{self.url}{POST_MANAGER}"

    def gateway_address(self, cloud_id: str, generation: str = "eagle200") -> str:
        """The `gateway_address` of a simulated gateway's local API, as an EAGLE-200 or a legacy
        EAGLE."""
        if generation not in GENERATIONS:
            raise ValueError(f"no local API for {generation!r} (known: {', '.join(GENERATIONS)})")
        return f"{self.url}/{generation}/{cloud_id}"

    def _run(self) -> None:
        loop = uvloop.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that called start()
            self._startup_error = exc
        finally:
            self._ready.set()
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        server = HttpServer(self._receive)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            self.port = sock.getsockname()[1]
            await server.start(sock, backlog=4096)
            self._ready.set()
            await self._stopping.wait()
        finally:
            await server.close()
            sock.close()

    # --- Accounts -----------------------------------------------------------------------------

    def accounts(self, connection_type: str = "cloud") -> list[dict[str, str]]:
        """The simulated users in the seed's JSON-lines shape (cloud_id, user_email, user_pw);
        for local connection types also connection_type and gateway_address."""
        rows = []
        for cloud_id, gateway in self.gateways.items():
            row = {
                "cloud_id": cloud_id,
                "user_email": gateway.meter.email,
                "user_pw": gateway.meter.password,
            }
            if connection_type != "cloud":
                row["connection_type"] = connection_type
                row["gateway_address"] = self.gateway_address(cloud_id, connection_type)
            rows.append(row)
        return rows

    def write_users_file(self, path: str | Path, connection_type: str = "cloud") -> Path:
        """Write accounts() as JSON lines, atomically (readers never see half a file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as out:
            for row in self.accounts(connection_type):
                out.write(orjson.dumps(row) + b"\n")
        os.replace(temporary, path)
        return path

    # --- Faults -------------------------------------------------------------------------------

    def set_fault(
        self,
        cloud_id: str | None,
        kind: FaultKind | str,
        rate: float = 1.0,
        duration: float | None = None,
    ) -> Fault:
        """Inject a fault from now on, for one gateway or (cloud_id None) all of them. It
        replaces an active fault of the same kind and scope, and ends after `duration` seconds
        of the simulator's clock (never, if None)."""
        kind = FaultKind(kind)
        if cloud_id is not None and cloud_id not in self.gateways:
            raise ValueError(f"no simulated gateway {cloud_id!r}")
        if not 0 <= rate <= 1:
            raise ValueError("a fault's rate is between 0 and 1")
        now = self._clock()
        fault = Fault(kind, cloud_id, rate, now, now + duration if duration is not None else None)
        with self._lock:
            self._end(lambda f: f.cloud_id == cloud_id and f.kind is kind, now)
            self._history.append(fault)
            self._rebuild()
        return fault

    def clear_faults(
        self, cloud_id: str | None = None, kind: FaultKind | str | None = None
    ) -> None:
        """End faults now: those of one gateway, or every fault when cloud_id is None."""
        kind = FaultKind(kind) if kind is not None else None
        with self._lock:
            self._end(
                lambda f: (
                    (cloud_id is None or f.cloud_id == cloud_id)
                    and (kind is None or f.kind is kind)
                ),
                self._clock(),
            )
            self._rebuild()

    def _end(self, matches: Callable[[Fault], bool], now: float) -> None:
        for fault in self._history:
            if matches(fault) and (fault.ends_at is None or fault.ends_at > now):
                fault.ends_at = max(now, fault.starts_at)

    def _rebuild(self) -> None:
        now = self._clock()
        faults: dict[str | None, list[Fault]] = {}
        for fault in self._history:
            if fault.ends_at is None or fault.ends_at > now:
                faults.setdefault(fault.cloud_id, []).append(fault)
        self._faults = {scope: tuple(items) for scope, items in faults.items()}

    def _apply_plan(self) -> None:
        ids = sorted(self.gateways)
        chooser = random.Random(f"rainlog-simulator-faults/{self.seed}")
        for spec in self._plan.specs:
            # A share of the gateways, one of them, or (no cloud_id) every one.
            chosen: Sequence[str | None]
            if spec.share is not None:
                chosen = chooser.sample(ids, round(len(ids) * spec.share))
            else:
                chosen = [spec.cloud_id]
            for cloud_id in chosen:
                self.set_fault(cloud_id, spec.kind, spec.rate, spec.duration)

    def _faults_for(self, cloud_id: str, now: float) -> tuple[Fault | None, Fault | None, bool]:
        """(the per-request fault hitting this request, an active stall, not joined?)"""
        faults = self._faults
        if not faults:
            return None, None, False
        event = stall = None
        not_joined = False
        for fault in faults.get(cloud_id, ()) + faults.get(None, ()):
            if not fault.active(now):
                continue
            if fault.kind is FaultKind.STALL:
                stall = stall or fault
            elif fault.kind is FaultKind.NOT_JOINED:
                not_joined = True
            elif event is None and self._rng.random() < fault.rate:
                event = fault
        if event is not None:
            self.faults_injected += 1
        return event, stall, not_joined

    # --- Ground truth -------------------------------------------------------------------------

    def ground_truth(
        self,
        cloud_id: str | None = None,
        record_type: str | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> list[GroundTruthReading]:
        """Every reading the meters produced that was current at some moment in [start, end]
        (default: from start() until now on the simulator's clock), oldest first per gateway."""
        start = self.started_at if start is None else start
        end = self._clock() if end is None else end
        if cloud_id is not None and cloud_id not in self.gateways:
            raise ValueError(f"no simulated gateway {cloud_id!r}")
        gateways = [self.gateways[cloud_id]] if cloud_id is not None else self.gateways.values()
        names = [record_type] if record_type is not None else list(MODELS)
        with self._lock:
            history = list(self._history)
            served = {
                (gateway.meter.cloud_id, name): gateway.served[name].copy()
                for gateway in gateways
                for name in names
            }
        readings = []
        for gateway in gateways:
            meter = gateway.meter
            faults = [f for f in history if f.cloud_id in (None, meter.cloud_id)]
            for name in names:
                model = MODELS[name]
                schedule = meter.schedules[name]
                log = served[(meter.cloud_id, name)]
                for k, timestamp in produced(meter, name, start, end):
                    lifetime = (schedule.starts_at(k), schedule.starts_at(k + 1))
                    readings.append(
                        GroundTruthReading(
                            cloud_id=meter.cloud_id,
                            record_type=name,
                            meter_timestamp=timestamp,
                            values=model.values(meter, model.raw(meter, k)),
                            served=k in log,
                            faulted=any(f.overlaps(*lifetime) for f in faults),
                        )
                    )
        return readings

    def stats(self) -> dict[str, int]:
        return {
            "gateways": len(self.gateways),
            "requests": self.requests,
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "readings_served": self.readings_served,
            "faults_injected": self.faults_injected,
        }

    # --- Serving ------------------------------------------------------------------------------

    def _receive(self, request: Request) -> None:
        """A whole request arrived: answer it once the latency has passed."""
        self.requests += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        if self.latency:
            assert self._loop is not None
            self._loop.call_later(self.latency, self._answer, request)
        else:
            self._answer(request)

    def _answer(self, request: Request) -> None:
        try:
            outcome = self._route(request)
        except Exception:
            logger.exception("the simulator failed to answer %s %s", request.method, request.path)
            outcome = Reply(b"500 Internal Server Error\n", status=500)
        if isinstance(outcome, Drop):
            if outcome.after:
                assert self._loop is not None
                self._loop.call_later(outcome.after, self._drop, request, outcome.reset)
            else:
                self._drop(request, outcome.reset)
            return
        self.in_flight -= 1
        request.respond(outcome)

    def _drop(self, request: Request, reset: bool) -> None:
        self.in_flight -= 1
        request.drop(reset)

    def _route(self, request: Request) -> Reply | Drop:
        path = request.path
        if request.method == "POST":
            if path == POST_MANAGER:
                return self._cloud(request)
            generation, _, rest = path.removeprefix("/").partition("/")
            if generation in GENERATIONS and rest.endswith(POST_MANAGER):
                return self._local(request, rest[: -len(POST_MANAGER)], generation)
        elif path == "/" and request.method in ("GET", "HEAD"):
            return Reply(f"EAGLE simulator: {len(self.gateways)} gateways\n".encode())
        return NOT_FOUND

    def _cloud(self, request: Request) -> Reply | Drop:
        body = request.body
        as_json = bool(_JSON_FORMAT.search(body))
        headers = request.headers
        gateway = self.gateways.get(headers.get("cloud-id", ""))
        if gateway is None:
            return _reply(error_reply(TEXT_UNKNOWN_CLOUD_ID, as_json), as_json)
        now = self._clock()
        event, stall, not_joined = self._faults_for(gateway.meter.cloud_id, now)
        kind = event.kind if event is not None else None
        if kind is not None and (dropped := self._transport_fault(kind)):
            return dropped
        if (
            kind is FaultKind.BAD_CREDENTIALS
            or headers.get("user") != gateway.meter.email
            or headers.get("password") != gateway.meter.password
        ):
            return _reply(error_reply(TEXT_BAD_CREDENTIALS, as_json), as_json)
        return self._command_reply(gateway, body, now, kind, stall, not_joined, as_json)

    def _local(self, request: Request, cloud_id: str, generation: str) -> Reply | Drop:
        gateway = self.gateways.get(cloud_id)
        if gateway is None:
            return Reply(b"No gateway at this address\n", status=404)
        body = request.body
        now = self._clock()
        event, stall, not_joined = self._faults_for(cloud_id, now)
        kind = event.kind if event is not None else None
        if kind is not None and (dropped := self._transport_fault(kind)):
            return dropped
        if (
            kind in (FaultKind.BAD_CREDENTIALS, FaultKind.UNKNOWN_CLOUD_ID)
            or request.headers.get("authorization") != gateway.basic_auth
        ):
            return UNAUTHORIZED
        command = _command_name(body)
        as_json = bool(_JSON_FORMAT.search(body))
        if command not in GENERATION_COMMANDS[generation]:
            return _reply(error_reply(f"Unknown command: {command[:40]}", as_json), as_json)
        if command == "device_list":
            if kind is FaultKind.ERROR_REPLY:
                return _reply(error_reply(TEXT_UNREACHABLE))
            meter = gateway.meter
            status = "Not joined" if not_joined else "Connected"
            contact = last_contact(meter, stall.starts_at if stall else now)
            return _reply(_distort(device_list(meter, contact, status), kind, meter))
        if command == "device_query":
            return self._device_query_reply(gateway, body, now, kind, stall, not_joined)
        if command == "get_network_info":
            if kind is FaultKind.ERROR_REPLY:
                return _reply(error_reply(TEXT_UNREACHABLE, as_json), as_json)
            return _reply(network_info(gateway.meter, LEGACY_MODEL_ID, as_json), as_json)
        return self._command_reply(gateway, body, now, kind, stall, not_joined, as_json)

    def _command_reply(
        self,
        gateway: Gateway,
        body: bytes,
        now: float,
        kind: FaultKind | None,
        stall: Fault | None,
        not_joined: bool,
        as_json: bool,
    ) -> Reply:
        """A reply to a cloud command (from the cloud or a legacy gateway)."""
        if kind is FaultKind.UNKNOWN_CLOUD_ID:
            return _reply(error_reply(TEXT_UNKNOWN_CLOUD_ID, as_json), as_json)
        if kind is FaultKind.ERROR_REPLY:
            return _reply(error_reply(TEXT_UNREACHABLE, as_json), as_json)
        if not_joined:
            return _reply(error_reply(TEXT_NOT_JOINED, as_json), as_json)
        command = _command_name(body)
        model = COMMANDS.get(command)
        if model is None:
            return _reply(error_reply(f"Unknown command: {command[:40]}", as_json), as_json)
        k = model_index(gateway.meter, model, stall.starts_at if stall else now)
        zero = kind is FaultKind.FALSE_ZERO and model.false_zero is not None
        reply = self._reading_reply(gateway, model, k, as_json, zero)
        if kind in (FaultKind.TRUNCATED, FaultKind.WRONG_ROOT):
            return _reply(_distort(reply, kind, gateway.meter))
        if not zero and model.offered(gateway.meter):
            self._served(gateway, model, k)
        return _reply(reply, as_json)

    def _device_query_reply(
        self,
        gateway: Gateway,
        body: bytes,
        now: float,
        kind: FaultKind | None,
        stall: Fault | None,
        not_joined: bool,
    ) -> Reply:
        meter = gateway.meter
        if kind is FaultKind.ERROR_REPLY:
            return _reply(error_reply(TEXT_UNREACHABLE))
        address = _HARDWARE_ADDRESS.search(body)
        if address is None or address[1].decode(errors="replace").lower() != meter.meter_mac:
            return _reply(error_reply("Unknown HardwareAddress: no such device"))
        names = [match.decode(errors="replace") for match in _VARIABLE.findall(body)]
        wanted = (
            list(MODELS.values())
            if _ALL.search(body) or not names
            else list(dict.fromkeys(VARIABLES[name] for name in names if name in VARIABLES))
        )
        moment = stall.starts_at if stall else now
        variables: list[tuple[str, str, str]] = []
        indices = {}
        for model in wanted:
            k = indices[model.name] = model_index(meter, model, moment)
            raw = model.raw(meter, k) if model.offered(meter) else None
            if kind is FaultKind.FALSE_ZERO and raw is not None:
                raw = model.false_zero or raw
            variables += model.eagle200_variables(meter, raw)
        status = "Not joined" if not_joined else "Connected"
        reply = device_query(meter, last_contact(meter, moment), status, variables)
        if kind in (FaultKind.TRUNCATED, FaultKind.WRONG_ROOT):
            return _reply(_distort(reply, kind, meter))
        if not not_joined:
            for model in wanted:
                if model.offered(meter) and not (
                    kind is FaultKind.FALSE_ZERO and model.false_zero is not None
                ):
                    self._served(gateway, model, indices[model.name])
        return _reply(reply)

    def _reading_reply(
        self, gateway: Gateway, model: ReadingModel, k: int, as_json: bool, zero: bool
    ) -> bytes:
        key = (model.name, as_json)
        cached = gateway.cache.get(key)
        if cached is not None and cached[0] == k and not zero:
            return cached[1]
        meter = gateway.meter
        raw = model.false_zero if zero and model.false_zero is not None else model.raw(meter, k)
        fields = model.cloud_fields(meter, meter.schedules[model.name].timestamp(k), raw)
        reply = (cloud_json if as_json else cloud_xml)(model.element, fields)
        if not zero:
            gateway.cache[key] = (k, reply)
        return reply

    def _served(self, gateway: Gateway, model: ReadingModel, k: int) -> None:
        self.readings_served += 1
        log = gateway.served[model.name]
        if log.first is None or k != log.last:
            with self._lock:
                log.mark(k)

    def _transport_fault(self, kind: FaultKind) -> Reply | Drop | None:
        """The outcome of faults that replace the whole HTTP exchange; None for the others."""
        if kind is FaultKind.TIMEOUT:
            # No reply: the connection closes after timeout_hold, or when the simulator stops.
            return Drop(reset=False, after=self.timeout_hold)
        if kind is FaultKind.RESET:
            return Drop(reset=True)
        if kind is FaultKind.HTTP_5XX:
            status = self._rng.choice((500, 502, 503))
            return Reply(f"{status} server error\n".encode(), status=status)
        if kind is FaultKind.HTML:
            return Reply(HTML_PAGE, content_type="text/html")
        return None


def model_index(meter: Meter, model: ReadingModel, moment: float) -> int:
    return meter.schedules[model.name].index_at(moment)


def last_contact(meter: Meter, moment: float) -> int:
    """When the gateway last heard from its meter: the newest update of any reading it holds.
    An EAGLE-200 reports this one device-level LastContact whatever variables are asked for."""
    return max(
        meter.schedules[name].timestamp(model_index(meter, model, moment))
        for name, model in MODELS.items()
        if model.offered(meter)
    )


def _command_name(body: bytes) -> str:
    match = _COMMAND.search(body)
    return match[1].decode() if match else ""


def _reply(body: bytes, as_json: bool = False) -> Reply:
    return Reply(body, content_type="application/json" if as_json else "text/xml")


def _distort(reply: bytes, kind: FaultKind | None, meter: Meter) -> bytes:
    if kind is FaultKind.TRUNCATED:
        return reply[: len(reply) // 2]
    if kind is FaultKind.WRONG_ROOT:
        return wrong_root(meter)
    return reply
