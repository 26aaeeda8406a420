"""Push ingestion: readings that EAGLE gateways upload to rainlog (uploader mode) instead of being
polled. Users with `connection_type = push` are never polled; they POST to /api/push/<cloud_id>.

Two body formats are understood:

- the uploader's XML (Content-Type is often application/x-www-form-urlencoded: it is ignored):
  `<rainforest macId="0x…" timestamp="1355292588s">` wrapping XML fragments. Fragments of the
  registered record types (`InstantaneousDemand`, `CurrentSummation`, `CurrentSummationDelivered`,
  `PriceCluster`) are decoded like cloud replies, by the shared decoders; other fragments
  (`DeviceInfo`, `NetworkInfo`, `MessageCluster`, …) carry no reading and are ignored.
- EAGLE-200 JSON, with millisecond timestamps and values already scaled:
  `{"timestamp": "1539632334000", "deviceGuid": "…", "body": [{"timestamp": "1539632322000",
  "subdeviceGuid": "…", "componentId": "all", "dataType": "InstantaneousDemand",
  "data": {"demand": 0.472, "units": "kW"}}, …]}` with data types `InstantaneousDemand`,
  `CurrentSummation` and `Price`, decoded by the record types' EAGLE-200 decoders.

Both are shapes of the one decoder registry (ingestion.eagle.decoders), so `decode_payload` and
the playground decode them exactly as a push is.

A push is judged whole when it arrives (`accept_push`): the user, its push token and its mode are
checked and the body is decoded; either every reading in it is understood or it is refused with an
HTTP status and a message, and nothing of it is written. An accepted push is queued for a
django-q2 worker (`ingest_upload`), which decodes it again, drops readings already logged (per user
and record type, by meter timestamp, under a row lock on the user's FetchState so that concurrent
pushes never log one reading twice), refuses suspicious ones as the poller does, appends the rest to
the hour files, syncs them and counts them in FetchState.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import logging
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django_q.tasks import async_task

from ingestion import hourfiles
from ingestion.eagle.decoders import (
    UPLOAD_SHAPES,
    BrokenTextError,
    ErrorReplyError,
    UnknownFormatError,
    decode_text,
    judge,
)
from ingestion.eagle.record_types import (
    DEMAND,
    DecodeError,
    PreviousReading,
    get_record_type,
)
from ingestion.hourfiles import HourFileWriter, iter_records
from ingestion.models import OUTCOME_FIELDS, FetchOutcome, FetchState, Incident, IncidentSighting
from ingestion.polling.failures import PUSH_FAILURE_CLASSES, PUSH_RESOLUTION
from ingestion.polling.latest import forget, latest_record
from ingestion.records import FailureClass, FetchFailure, Reading, Source, iso_utc
from users.models import ConnectionType, EagleUser

logger = logging.getLogger(__name__)

# A meter clock this far ahead of ours, or behind it, is not believed: such a reading would land in
# an hour file far from every other.
MAX_CLOCK_AHEAD = timedelta(days=1)
MAX_AGE = timedelta(days=7)
INGEST_TASK = "ingestion.push.ingest_upload"


class PushRejectedError(Exception):
    """Why a push is refused: an HTTP status and a message for the sender.

    `is_failure` says whether it counts against the gateway (recorded in its fetch state and
    incidents): a broken body does; a wrong token, or an upload of fragments that carry no reading
    (which uploaders send routinely), does not.
    """

    def __init__(self, status: int, message: str, is_failure: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.is_failure = is_failure


def _malformed(status: int, message: str) -> PushRejectedError:
    return PushRejectedError(status, message, is_failure=True)


# --- Tokens -----------------------------------------------------------------------------------


def token_from_headers(headers: Mapping[str, str]) -> str:
    """The push token a request carries: `Authorization: Bearer <token>`, `X-Push-Token: <token>`,
    or HTTP Basic with the token as password (what an EAGLE's uploader settings can send)."""
    token = headers.get("X-Push-Token", "").strip()
    if token:
        return token
    scheme, _, credentials = headers.get("Authorization", "").strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        return credentials
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return ""
        return decoded.partition(":")[2]
    return ""


def authenticate(cloud_id: str, token: str) -> EagleUser:
    """The push user `cloud_id`, if `token` is its push token and it may push now.

    A missing token is 401 and a wrong one 403 whether or not `cloud_id` names a user: the answer
    does not tell which cloud ids exist."""
    if not token:
        raise PushRejectedError(
            401,
            "no push token: send 'Authorization: Bearer <token>', 'X-Push-Token: <token>' or "
            "HTTP Basic auth with the token as password",
        )
    try:
        # Anything but hexadecimal names no user (and a NUL byte would break the query).
        user = EagleUser.objects.filter(cloud_id=hourfiles.checked_cloud_id(cloud_id)).first()
    except ValueError:
        user = None
    if user is None or not user.check_push_token(token):
        raise PushRejectedError(403, f"this is not the push token of {cloud_id[:40]}")
    if user.connection_type != ConnectionType.PUSH:
        raise PushRejectedError(
            409,
            f"{cloud_id} is not in push mode (connection type {user.connection_type}): "
            "rainlog polls its gateway",
        )
    if not user.is_active:
        raise PushRejectedError(409, f"{cloud_id} is suspended: {user.suspended_reason}")
    return user


# --- Decoding a push --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParsedPush:
    format: str
    readings: list[Reading]
    # What the push held besides readings, and why it was skipped.
    ignored: list[str]


# Content-Encoding values of a gzip body (x-gzip is the old name).
GZIP_ENCODINGS = ("gzip", "x-gzip")


def body_text(body: bytes, content_encoding: str = "") -> str:
    """The text of a push body: gunzipped when `content_encoding` says gzip, never to more than
    PUSH_MAX_BODY_BYTES, and without the UTF-8 byte order mark some uploaders start with."""
    limit = settings.PUSH_MAX_BODY_BYTES
    if len(body) > limit:
        raise PushRejectedError(413, f"the body is larger than {limit} bytes", is_failure=True)
    encoding = content_encoding.strip().lower()
    if encoding in GZIP_ENCODINGS:
        body = _gunzipped(body, limit)
    elif encoding not in ("", "identity"):
        raise _malformed(
            415, f"Content-Encoding {encoding[:40]!r} is not understood: send gzip or none"
        )
    try:
        return body.removeprefix(codecs.BOM_UTF8).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _malformed(
            400, f"the body is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None


def _gunzipped(body: bytes, limit: int) -> bytes:
    """A gzip body unpacked, or why not; a body that unpacks to more than `limit` bytes (a
    compression bomb) is refused as too large without unpacking the rest."""
    unpacker = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = unpacker.decompress(body, limit + 1)
    except zlib.error as exc:
        raise _malformed(400, f"the body is not valid gzip ({exc})") from None
    if len(data) > limit:
        raise PushRejectedError(
            413, f"the gzip body unpacks to more than {limit} bytes", is_failure=True
        )
    if not unpacker.eof:
        raise _malformed(400, "the gzip body is truncated")
    if unpacker.unused_data:
        raise _malformed(400, "the gzip body has data after its end")
    return data


def parse_push(text: str, cloud_id: str, received_at: datetime, meter_mac: str = "") -> ParsedPush:
    """The readings of an uploader's XML or an EAGLE-200's JSON push, decoded by the shared
    decoders; PushRejectedError if any part of it cannot be decoded or believed, or if it holds
    no reading at all."""
    try:
        payload = decode_text(
            text,
            cloud_id=cloud_id,
            source=Source.PUSH,
            received_at=received_at,
            shapes=UPLOAD_SHAPES,
        )
    except BrokenTextError as exc:
        raise _malformed(400, str(exc).replace("reply", "body")) from None
    except UnknownFormatError:
        raise _malformed(
            415,
            "the body is neither XML (an uploader's <rainforest> push) nor JSON "
            "(an EAGLE-200 push)",
        ) from None
    except (DecodeError, ErrorReplyError) as exc:
        raise _malformed(422, str(exc)) from None
    if not payload.readings:
        raise PushRejectedError(
            422,
            "nothing rainlog records in this push: "
            + "; ".join(payload.ignored or ["it is empty"]),
        )
    for reading in payload.readings:
        _check_believable(reading, received_at, meter_mac)
    push_format = "xml" if payload.shape == "uploader-xml" else "json"
    return ParsedPush(push_format, payload.readings, payload.ignored)


def _check_believable(reading: Reading, received_at: datetime, meter_mac: str) -> None:
    meter_time = reading.meter_time
    if meter_time > received_at + MAX_CLOCK_AHEAD or meter_time < received_at - MAX_AGE:
        raise _malformed(
            422,
            f"{reading.record_type} reading at {iso_utc(meter_time)}: the meter's clock is too far "
            f"from ours ({iso_utc(received_at)}) to believe it",
        )
    sender = reading.raw.get("MeterMacId") or reading.raw.get("subdeviceGuid")
    if meter_mac and sender and _mac_number(sender) != _mac_number(meter_mac):
        raise _malformed(
            422, f"the reading comes from meter {sender}, not from this user's meter {meter_mac}"
        )


def _mac_number(mac: str) -> str:
    text = mac.strip().lower()
    return text.removeprefix("0x").lstrip("0")


# --- Accepting a push (the HTTP request) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AcceptedPush:
    cloud_id: str
    parsed: ParsedPush

    def describe(self) -> dict[str, Any]:
        readings = self.parsed.readings
        return {
            "status": "accepted",
            "cloud_id": self.cloud_id,
            "format": self.parsed.format,
            "accepted": len(readings),
            "readings": [
                {
                    "record_type": reading.record_type,
                    "meter_timestamp": reading.meter_timestamp,
                    "meter_time": iso_utc(reading.meter_time),
                }
                for reading in readings
            ],
            "ignored": self.parsed.ignored,
            "detail": f"{len(readings)} reading(s) accepted and queued; each meter reading is "
            "logged once (a reading already logged is dropped).",
        }


def accept_push(
    cloud_id: str, token: str, body: bytes, received_at: datetime, content_encoding: str = ""
) -> AcceptedPush:
    """Check and decode one push, and queue it for ingestion; PushRejectedError says why not."""
    user = authenticate(cloud_id, token)
    # The user's own id, in lower case, names its readings and files whatever case was sent.
    cloud_id = user.cloud_id
    try:
        text = body_text(body, content_encoding)
        parsed = parse_push(text, cloud_id, received_at, user.meter_mac)
    except PushRejectedError as rejection:
        if rejection.is_failure:
            record_rejected_push(user, rejection, received_at)
        raise
    async_task(
        INGEST_TASK,
        cloud_id,
        text,
        received_at.isoformat(),
        task_name=f"push {cloud_id} {iso_utc(received_at)}",
        group="push",
    )
    return AcceptedPush(cloud_id, parsed)


def record_rejected_push(
    user: EagleUser, rejection: PushRejectedError, received_at: datetime
) -> None:
    """Show an operator that a gateway's pushes are being refused: fetch state and an incident."""
    message = f"push refused (HTTP {rejection.status}): {rejection.message}"
    FetchState.objects.ensure_for([user.pk])
    FetchState.objects.filter(pk=user.pk).update(
        last_attempt_at=received_at,
        last_error=message,
        last_error_class=FailureClass.MALFORMED_REPLY,
        last_error_at=received_at,
        consecutive_failures=F("consecutive_failures") + 1,
    )
    Incident.objects.record_sightings(
        [
            IncidentSighting(
                user_id=user.pk,
                failure_class=FailureClass.MALFORMED_REPLY,
                opened_at=received_at,
                seen_at=received_at,
                occurrences=1,
                message=message,
            )
        ]
    )


# --- Ingesting a push (the queued task) -------------------------------------------------------


@dataclass(slots=True)
class PushIngest:
    """What the ingestion of one push did."""

    cloud_id: str
    written: int = 0
    duplicates: int = 0
    refused: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class PushNotWrittenError(OSError):
    """Readings of an accepted push could not be appended (disk full, I/O error). Raised after
    the rest was logged, so that the task fails and can be resubmitted from the task admin."""


def ingest_upload(cloud_id: str, text: str, received_at_iso: str) -> dict[str, Any]:
    """The django-q2 task of an accepted push: decode it again and ingest its readings."""
    received_at = datetime.fromisoformat(received_at_iso)
    user = EagleUser.objects.filter(cloud_id=cloud_id).first()
    if user is None:
        return PushIngest(cloud_id, refused=["the user was deleted meanwhile"]).as_dict()
    parsed = parse_push(text, user.cloud_id, received_at, user.meter_mac)
    return ingest_readings(user, parsed.readings, received_at).as_dict()


def ingest_readings(
    user: EagleUser, readings: Iterable[Reading], received_at: datetime
) -> PushIngest:
    """Log each reading not logged yet, once: the same path as polled readings (judge, hour
    files, sync, FetchState), serialised per user by a row lock on its FetchState."""
    result = PushIngest(user.cloud_id)
    FetchState.objects.ensure_for([user.pk])
    with transaction.atomic():
        state = FetchState.objects.select_for_update().get(pk=user.pk)
        current = EagleUser.objects.only("is_active", "connection_type").get(pk=user.pk)
        if not current.is_active or current.connection_type != ConnectionType.PUSH:
            # Suspended (perhaps to be purged) or switched to polling since the push was accepted.
            result.refused.append(f"{user.cloud_id} no longer takes pushes: nothing written")
            return result
        fresh, result.duplicates = _unlogged(state, user.cloud_id, readings)
        trusted: list[Reading] = []
        previous = _last_logged(user.cloud_id, {reading.record_type for reading in fresh})
        for reading in fresh:
            before = previous.get(reading.record_type)
            if before is not None and before.meter_timestamp >= reading.meter_timestamp:
                # A resent older reading is judged on its own, not against a later total.
                before = None
            judged = judge(reading, None, before)
            if isinstance(judged, FetchFailure):
                result.refused.append(
                    f"{reading.record_type} at {iso_utc(reading.meter_time)}: {judged.message}"
                )
            else:
                trusted.append(judged)
                previous[reading.record_type] = PreviousReading(
                    reading.meter_timestamp, reading.values, trusted=True
                )
        with HourFileWriter() as writer:
            appended = writer.append(trusted)
        if appended.written:
            # A push may resend older readings: the user's latest ones are read from the files.
            forget([user.cloud_id])
        unwritten = {id(reading) for reading in appended.unwritten}
        written = [reading for reading in trusted if id(reading) not in unwritten]
        result.written = len(written)
        result.errors = appended.errors
        outcome = _outcome(state, written, result, received_at)
        outcome.apply_to(state)
        state.save(update_fields=OUTCOME_FIELDS)
        _update_incidents(user, result, received_at)
    if result.errors:
        raise PushNotWrittenError(
            f"{user.cloud_id}: {len(appended.unwritten)} reading(s) not written: "
            + "; ".join(result.errors)
        )
    return result


def _last_logged(cloud_id: str, record_types: Iterable[str]) -> dict[str, PreviousReading]:
    """The newest logged reading of each type still in the local hour files: what a pushed
    reading is judged against (totals only count up)."""
    previous = {}
    for name in record_types:
        record = latest_record(cloud_id, name)
        if record is not None:
            values = {key: record.get(key) for key in get_record_type(name).required_values}
            previous[name] = PreviousReading(record["meter_timestamp"], values, trusted=True)
    return previous


def last_logged_timestamp(state: FetchState, record_type: str) -> float | None:
    """Meter time of the last reading of this type logged for the user (unix seconds)."""
    if record_type == DEMAND:
        return state.last_timestamp
    return state.extra_timestamps.get(record_type)


def _unlogged(
    state: FetchState, cloud_id: str, readings: Iterable[Reading]
) -> tuple[list[Reading], int]:
    """(readings not logged yet, in meter time order; how many were).

    A reading at the last logged meter time of its type is a repeat. One older than that (a
    resent push, or a meter clock set back) is looked for in its hour's local files.
    """
    fresh: list[Reading] = []
    duplicates = 0
    seen: set[tuple[object, object]] = set()
    logged_by_hour: dict[datetime, set[tuple[object, object]]] = {}
    for reading in sorted(readings, key=lambda r: r.meter_timestamp):
        key = (reading.record_type, reading.meter_timestamp)
        last = last_logged_timestamp(state, reading.record_type)
        repeat = key in seen or (last is not None and reading.meter_timestamp == last)
        if not repeat and last is not None and reading.meter_timestamp < last:
            hour = hourfiles.hour_of_timestamp(reading.meter_timestamp)
            if hour not in logged_by_hour:
                logged_by_hour[hour] = _logged_keys(cloud_id, hour)
            repeat = key in logged_by_hour[hour]
        if repeat:
            duplicates += 1
            continue
        seen.add(key)
        fresh.append(reading)
    return fresh, duplicates


def _logged_keys(cloud_id: str, hour: datetime) -> set[tuple[object, object]]:
    """(record type, meter timestamp) of every reading in the hour's local files (all parts)."""
    keys: set[tuple[object, object]] = set()
    for path in hourfiles.part_chain(cloud_id, hour):
        if path.exists():
            keys.update(
                (record.get("record_type"), record.get("meter_timestamp"))
                for record in iter_records(path)
            )
    return keys


def _outcome(
    state: FetchState, written: list[Reading], result: PushIngest, received_at: datetime
) -> FetchOutcome:
    demand = [r.meter_timestamp for r in written if r.record_type == DEMAND]
    extra: dict[str, int] = {}
    for reading in written:
        if reading.record_type != DEMAND:
            previous = (
                extra.get(reading.record_type)
                or state.extra_timestamps.get(reading.record_type)
                or 0
            )
            extra[reading.record_type] = max(int(previous), reading.meter_timestamp)
    # Write errors fail the task itself (PushNotWrittenError); refusals are the gateway's failures.
    succeeded = not (result.refused or result.errors)
    return FetchOutcome(
        user_id=state.pk,
        attempted_at=received_at,
        succeeded=succeeded,
        readings_written=len(written),
        first_timestamp=min(demand) if demand else None,
        last_timestamp=max(demand) if demand else None,
        extra_timestamps=extra,
        error_class=FailureClass.SUSPICIOUS_READING if result.refused else "",
        error="push: " + "; ".join(result.refused) if result.refused else "",
        consecutive_failures=0 if succeeded else state.consecutive_failures + 1,
        next_attempt_at=None,
    )


def _update_incidents(user: EagleUser, result: PushIngest, received_at: datetime) -> None:
    if result.refused:
        Incident.objects.record_sightings(
            [
                IncidentSighting(
                    user_id=user.pk,
                    failure_class=FailureClass.SUSPICIOUS_READING,
                    opened_at=received_at,
                    seen_at=received_at,
                    occurrences=len(result.refused),
                    message=f"push: {result.refused[-1]}",
                )
            ]
        )
    elif result.written:
        open_pairs = Incident.objects.open_pairs([user.pk])
        to_resolve = {pair for pair in open_pairs if pair[1] in PUSH_FAILURE_CLASSES}
        Incident.objects.resolve_pairs(to_resolve, received_at, PUSH_RESOLUTION)
