"""Pure decoders: the text an EAGLE gateway sends in, Readings or a classified FetchFailure out.

One registry of reply shapes (`SHAPES`) serves the poller (through the client), push ingestion,
`manage.py decode_payload` and the playground, so whatever a gateway can send decodes the same
everywhere. The shapes (see docs/record-format.md, "Where readings come from"):

- `cloud`: cloud and legacy local replies, XML or JSON: a root element named after the record type
  (`InstantaneousDemand`, `CurrentSummation`, `PriceCluster`, …) with hexadecimal fields;
- `eagle200-device`: an EAGLE-200 device_query reply, `Device` with `DeviceDetails` and
  `Variable`s; `eagle200-device-list` (device_list) names the meter but holds no reading;
- `uploader-xml`: an uploader's push, `<rainforest macId=… timestamp=…>` wrapping fragments of the
  cloud shape (those without a reading are listed as ignored);
- `eagle200-upload`: an EAGLE-200's JSON push, `{"timestamp": "<ms>", "body": [{"dataType": …,
  "data": {…}}]}`, values already scaled;
- `cgi-manager`: the flat JSON of a legacy gateway's `cgi_manager` API (`get_usage_data`), with
  times in the gateway's local time and `timezone_*` fields to convert them.

Any of them may instead be an `Error` reply (a root `Error` with a `Text` child), classified by its
text. Nothing here raises for any input text: every problem becomes a FetchFailure. The common cloud
reply (one flat element of hex fields) is read by a precompiled regex; anything else goes through
ElementTree (or orjson), which also gives precise reasons for broken replies. Known firmware quirks
are tolerated (a bare `&` in a description); truncated or garbled replies are not.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from ingestion.eagle.record_types import (
    CURRENCIES,
    DEMAND,
    RECORD_TYPES,
    RECORD_TYPES_BY_ELEMENT,
    DecodeError,
    Demand,
    PreviousReading,
    RecordType,
    Summation,
    get_record_type,
    hex_field,
)
from ingestion.records import FailureClass, FetchFailure, Reading, Source

# How much of an offending reply a failure keeps (for incidents and the playground).
RAW_REPLY_LIMIT = 2000

# One flat element of leaf fields, optionally after an XML declaration: the shape of nearly every
# cloud reply. Group 1 is the root's name, group 2 its fields.
_FLAT_XML = re.compile(
    r"\s*(?:<\?xml[^>]*\?>\s*)?<([A-Za-z]\w*)>((?:\s*<([A-Za-z]\w*)>[^<&]*</\3>)*)\s*</\1>\s*"
)
_FLAT_FIELD = re.compile(r"<([A-Za-z]\w*)>([^<&]*)</\1>")
# Roots whose meaning lies in nested elements: always parsed as a tree.
_NESTED_ROOTS = frozenset({"Device", "DeviceList", "rainforest", "rainForest"})
# An `&` that starts no entity or character reference: some EAGLE-200 firmware writes them in
# description text ("Power & Light").
_BARE_AMPERSAND = re.compile(r"&(?!(?:[A-Za-z][\w.-]*|#[0-9]+|#x[0-9A-Fa-f]+);)")

# Error texts, classified by what an operator does about them. Checked in order.
_ERROR_CLASSES = (
    (
        re.compile(r"password|credential|unauthori[sz]ed|authenticat|log ?in|not allowed", re.I),
        FailureClass.BAD_CREDENTIALS,
    ),
    (
        re.compile(r"cloud.?id|unknown (?:device|gateway|user)|not registered", re.I),
        FailureClass.UNKNOWN_CLOUD_ID,
    ),
    (
        re.compile(r"not joined|no meter|lost (?:the|its) meter", re.I),
        FailureClass.METER_NOT_JOINED,
    ),
)


def failure(
    failure_class: FailureClass,
    message: str,
    reply: str = "",
    http_status: int | None = None,
    reading: Reading | None = None,
) -> FetchFailure:
    # A gateway may send NUL characters, which PostgreSQL text and jsonb cannot hold.
    return FetchFailure(
        failure_class,
        message.replace("\x00", "\ufffd"),
        reply[:RAW_REPLY_LIMIT].replace("\x00", "\ufffd"),
        http_status,
        reading,
    )


def classify_error_text(text: str) -> FailureClass:
    """The failure class of an `Error` reply's text. Unrecognised texts mean the service could
    not get a reading from the gateway."""
    for pattern, failure_class in _ERROR_CLASSES:
        if pattern.search(text):
            return failure_class
    return FailureClass.GATEWAY_UNREACHABLE


class BrokenTextError(DecodeError):
    """Text that is not a well-formed document: empty, truncated, garbled, or declaring a DTD."""


class UnknownFormatError(DecodeError):
    """Text that is neither XML nor JSON."""


@dataclass(frozen=True, slots=True)
class Payload:
    """What one reply or upload holds: its readings in the order sent, and what it held besides
    (fragments or items without a reading, each with the reason)."""

    shape: str
    readings: list[Reading]
    ignored: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Parsed:
    """A reply parsed once: the root's name and leaf fields, with the XML tree (None on the fast
    path) or the whole JSON document (None for XML)."""

    root: str
    fields: Mapping[str, Any]
    element: ET.Element | None = None
    document: Any = None


@dataclass(frozen=True, slots=True)
class Context:
    cloud_id: str
    source: str | None
    expected: RecordType | None
    received_at: datetime

    def reading(
        self,
        kind: RecordType,
        timestamp: int,
        values: dict[str, Any],
        raw: dict[str, Any],
        source: Source,
    ) -> Reading:
        return Reading(
            cloud_id=self.cloud_id,
            record_type=kind.name,
            meter_timestamp=timestamp,
            received_at=self.received_at,
            source=str(self.source or source),
            values=values,
            raw=raw,
        )


@dataclass(frozen=True, slots=True)
class Shape:
    """One kind of text a gateway sends: how to recognise it once parsed, and decode it."""

    name: str
    description: str
    # Sent by a gateway that uploads (push), rather than in answer to a request.
    upload: bool
    matches: Callable[[Parsed], bool]
    decode: Callable[[Parsed, Context], Payload]


SHAPES: list[Shape] = []


def shape(
    name: str, description: str, matches: Callable[[Parsed], bool], upload: bool = False
) -> Callable[[Callable[[Parsed, Context], Payload]], Callable[[Parsed, Context], Payload]]:
    """Register a decoder for one shape (in order: the first shape that matches decodes)."""

    def register(
        decode: Callable[[Parsed, Context], Payload],
    ) -> Callable[[Parsed, Context], Payload]:
        SHAPES.append(Shape(name, description, upload, matches, decode))
        return decode

    return register


UPLOAD_SHAPES = frozenset({"uploader-xml", "eagle200-upload"})


# --- Entry points -----------------------------------------------------------------------------


def decode_payload(
    text: str,
    cloud_id: str = "",
    source: Source | str | None = None,
    record_type: str | None = None,
    *,
    received_at: datetime | None = None,
    previous_timestamp: int | None = None,
    previous: PreviousReading | None = None,
) -> Reading | FetchFailure:
    """Decode any reply or push body and judge the reading (stale, suspicious).

    `source` defaults to what the reply's shape says (cloud, eagle200, legacy, push). `record_type`,
    when given, is what the reply must carry; otherwise it is the first reading of the reply.
    """
    result = decode_reply(
        text, cloud_id=cloud_id, source=source, record_type=record_type, received_at=received_at
    )
    if isinstance(result, FetchFailure):
        return result
    return judge(result, previous_timestamp, previous)


def decode_reply(
    text: str,
    *,
    cloud_id: str,
    source: Source | str | None = None,
    record_type: str | None = None,
    received_at: datetime | None = None,
) -> Reading | FetchFailure:
    """A reading decoded from a reply, without judging it; or why there is none."""
    expected = get_record_type(record_type) if record_type else None
    try:
        payload = decode_text(
            text, cloud_id=cloud_id, source=source, expected=expected, received_at=received_at
        )
        return _one_reading(payload, expected)
    except DecodeError as exc:
        return failure(exc.failure_class, str(exc), text)
    except ErrorReplyError as exc:
        return failure(exc.failure_class, exc.message, text)


def decode_text(
    text: str,
    *,
    cloud_id: str,
    source: Source | str | None = None,
    expected: RecordType | None = None,
    received_at: datetime | None = None,
    shapes: Collection[str] | None = None,
) -> Payload:
    """Every reading a reply or upload holds. Raises DecodeError (BrokenTextError for text that
    is not well-formed, UnknownFormatError for text that is neither XML nor JSON) and
    ErrorReplyError for an `Error` reply. `shapes`, when given, are the only ones accepted."""
    parsed = _parse(text)
    if parsed.root == "Error":
        error_text = str(parsed.fields.get("Text") or "").strip() or "(no text)"
        raise ErrorReplyError(
            classify_error_text(error_text), f"the service replied Error: {error_text}"
        )
    context = Context(
        cloud_id, str(source) if source else None, expected, received_at or datetime.now(UTC)
    )
    for candidate in SHAPES:
        if candidate.matches(parsed):
            if shapes is not None and candidate.name not in shapes:
                break
            return candidate.decode(parsed, context)
    if shapes is not None:
        wanted = " or ".join(s.description for s in SHAPES if s.name in shapes)
        raise DecodeError(f"expected {wanted}, got {_what(parsed)}")
    if parsed.document is not None:
        document = parsed.document
        keys = ", ".join(sorted(document)[:8]) if isinstance(document, dict) else ""
        raise DecodeError(
            "a JSON reply is one object with one member named after the reply (or an EAGLE-200 "
            f"upload, or a legacy cgi_manager reply), not {keys or type(document).__name__}"
        )
    raise DecodeError(f"unexpected reply <{parsed.root[:60]}>: not a reading rainlog knows")


class ErrorReplyError(Exception):
    """An `Error` reply: the service or gateway said why it has no reading."""

    def __init__(self, failure_class: FailureClass, message: str) -> None:
        super().__init__(message)
        self.failure_class = failure_class
        self.message = message


def _what(parsed: Parsed) -> str:
    if parsed.document is not None:
        if isinstance(parsed.document, dict):
            return "JSON with " + (", ".join(sorted(parsed.document)[:8]) or "no members")
        return f"a JSON {type(parsed.document).__name__}"
    return f"<{parsed.root[:60]}>"


def _one_reading(payload: Payload, expected: RecordType | None) -> Reading:
    for reading in payload.readings:
        if expected is None or reading.record_type == expected.name:
            return reading
    if expected is not None and payload.readings:
        got = ", ".join(sorted({reading.record_type for reading in payload.readings}))
        raise DecodeError(f"expected a {expected.name} reading, got {got}")
    raise DecodeError("; ".join(payload.ignored) or "the reply holds no reading")


def judge(
    reading: Reading, previous_timestamp: int | None, previous: PreviousReading | None
) -> Reading | FetchFailure:
    """The reading, or STALE_READING when the meter has not moved on since `previous_timestamp`,
    or SUSPICIOUS_READING when its record type distrusts it (e.g. a sudden 0 kW)."""
    if previous_timestamp is not None and reading.meter_timestamp == previous_timestamp:
        return failure(
            FailureClass.STALE_READING,
            f"the meter still reports {reading.meter_time:%Y-%m-%d %H:%M:%S} UTC",
            reading=reading,
        )
    reason = get_record_type(reading.record_type).suspicion(
        reading.meter_timestamp, reading.values, previous
    )
    if reason:
        return failure(FailureClass.SUSPICIOUS_READING, reason, reading=reading)
    return reading


def device_list_meter(text: str) -> str | FetchFailure:
    """The meter's HardwareAddress from an EAGLE-200 device_list reply, or why there is none."""
    try:
        parsed = _parse(text)
        if parsed.root == "Error":
            error_text = str(parsed.fields.get("Text") or "").strip() or "(no text)"
            return failure(
                classify_error_text(error_text), f"the gateway replied Error: {error_text}", text
            )
        if parsed.root != "DeviceList" or parsed.element is None:
            raise DecodeError(f"expected <DeviceList>, got {_what(parsed)}")
        return meter_address(parsed.element)
    except DecodeError as exc:
        return failure(exc.failure_class, str(exc), text)


# --- Parsing ----------------------------------------------------------------------------------


def _parse(text: str) -> Parsed:
    if not isinstance(text, str):
        raise BrokenTextError("the reply is not text")
    match = _FLAT_XML.fullmatch(text)
    if match and match[1] not in _NESTED_ROOTS and match[1].lower() != "html":
        return Parsed(match[1], dict(_FLAT_FIELD.findall(match[2])))
    start = text.lstrip()[:1]
    if start in ("{", "["):
        return _parse_json(text)
    if start != "<":
        if not start:
            raise BrokenTextError("the reply is empty")
        raise UnknownFormatError("the reply is neither XML nor JSON")
    head = text.lstrip()[:200].lower()
    if head.startswith("<!doctype html") or head.startswith("<html") or "<html" in head:
        raise DecodeError("an HTML page instead of an EAGLE reply (an error page or a portal?)")
    if "<!doctype" in text.lower() or "<!entity" in text.lower():
        # EAGLE replies never declare a DTD; refusing them avoids entity expansion attacks.
        raise BrokenTextError("XML with a document type declaration is not an EAGLE reply")
    element = _xml_tree(text)
    return Parsed(element.tag, _leaf_fields(element), element)


def _xml_tree(text: str) -> ET.Element:
    try:
        return ET.fromstring(text)
    except (ET.ParseError, ValueError) as exc:
        problem = exc
    # Firmware quirk: a bare `&` in text. Escaped, the reply must then parse whole; a truncated
    # or garbled one still does not.
    if _BARE_AMPERSAND.search(text):
        try:
            return ET.fromstring(_BARE_AMPERSAND.sub("&amp;", text))
        except (ET.ParseError, ValueError):
            pass
    raise BrokenTextError(f"broken XML ({problem}): truncated or garbled reply") from None


def _parse_json(text: str) -> Parsed:
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise BrokenTextError(f"broken JSON ({exc}): truncated or garbled reply") from None
    if isinstance(document, dict) and len(document) == 1:
        ((root, body),) = document.items()
        if root == "Error" and isinstance(body, str):
            return Parsed(root, {"Text": body})
        if isinstance(body, dict):
            return Parsed(root, body)
        if root in RECORD_TYPES_BY_ELEMENT or root == "Error":
            raise DecodeError(f"the JSON member {root[:60]!r} is not an object")
    return Parsed("", {}, document=document)


def _leaf_fields(element: ET.Element) -> dict[str, str]:
    return {child.tag: (child.text or "").strip() for child in element if len(child) == 0}


def meter_address(device_list: ET.Element) -> str:
    """The HardwareAddress of the electric meter in a device list; DecodeError if there is none
    or it is not joined."""
    devices = device_list.findall("Device")
    meters = [d for d in devices if (d.findtext("ModelId") or "").strip() == "electric_meter"]
    for device in meters or devices:
        address = (device.findtext("HardwareAddress") or "").strip()
        if not address:
            continue
        _check_connected(device)
        return address
    raise DecodeError("the gateway lists no meter")


def _check_connected(details: ET.Element) -> None:
    status = (details.findtext("ConnectionStatus") or "").strip()
    if status and status.lower() != "connected":
        raise DecodeError(
            f"the meter's connection status is {status[:40]!r}", FailureClass.METER_NOT_JOINED
        )


# --- Shapes -----------------------------------------------------------------------------------


def _is_cloud(parsed: Parsed) -> bool:
    return parsed.document is None and parsed.root in RECORD_TYPES_BY_ELEMENT


@shape("cloud", "a cloud or legacy reply such as <InstantaneousDemand>", _is_cloud)
def _cloud(parsed: Parsed, context: Context) -> Payload:
    kind = RECORD_TYPES_BY_ELEMENT[parsed.root]
    expected = context.expected
    if expected is not None and kind is not expected:
        raise DecodeError(
            f"expected <{expected.cloud_elements[0]}> for {expected.name}, got <{parsed.root}>"
        )
    return Payload("cloud", [_cloud_reading(parsed.root, parsed.fields, context, Source.CLOUD)])


def _cloud_reading(
    element: str, fields: Mapping[str, Any], context: Context, source: Source
) -> Reading:
    kind = RECORD_TYPES_BY_ELEMENT[element]
    timestamp, values = kind.decode_fields(fields)
    raw = {name: value for name, value in fields.items() if isinstance(value, str)}
    return context.reading(kind, timestamp, values, raw, source)


@shape(
    "eagle200-device",
    "an EAGLE-200 <Device> reply",
    lambda parsed: parsed.root == "Device" and parsed.element is not None,
)
def _eagle200_device(parsed: Parsed, context: Context) -> Payload:
    assert parsed.element is not None
    details = parsed.element.find("DeviceDetails")
    if details is None:
        raise DecodeError("a <Device> reply without <DeviceDetails>")
    _check_connected(details)
    detail_fields = _leaf_fields(details)
    # One LastContact for the device: the time of every variable in the reply.
    timestamp = hex_field(detail_fields, "LastContact")
    variables: dict[str, str | None] = {}
    for variable in parsed.element.iter("Variable"):
        name = (variable.findtext("Name") or "").strip()
        if name:
            value = variable.findtext("Value")
            variables[name] = value.strip() if value is not None else None
    kind = context.expected or _record_type_of_variables(variables)
    values = kind.decode_variables(variables)
    raw: dict[str, Any] = {
        name: detail_fields.get(name)
        for name in ("HardwareAddress", "LastContact", "ConnectionStatus")
        if name in detail_fields
    }
    raw.update({name: variables.get(name) for name in kind.eagle200_variables})
    reading = context.reading(kind, timestamp, values, raw, Source.EAGLE200)
    return Payload("eagle200-device", [reading])


def _record_type_of_variables(variables: Mapping[str, str | None]) -> RecordType:
    for kind in RECORD_TYPES.values():
        if kind.eagle200_variables[0] in variables:
            return kind
    raise DecodeError("the device reply holds none of the variables rainlog records")


@shape(
    "eagle200-device-list",
    "an EAGLE-200 <DeviceList>",
    lambda parsed: parsed.root == "DeviceList" and parsed.element is not None,
)
def _eagle200_device_list(parsed: Parsed, context: Context) -> Payload:
    assert parsed.element is not None
    address = meter_address(parsed.element)
    raise DecodeError(
        f"a device list (meter {address}) holds no reading: device_query asks for one"
    )


@shape(
    "uploader-xml",
    'an uploader push <rainforest macId="…" timestamp="…s">',
    lambda parsed: parsed.root.lower() == "rainforest" and parsed.element is not None,
    upload=True,
)
def _uploader_xml(parsed: Parsed, context: Context) -> Payload:
    assert parsed.element is not None
    readings: list[Reading] = []
    ignored: list[str] = []
    for fragment in parsed.element:
        tag = str(fragment.tag)[:60]
        if fragment.tag not in RECORD_TYPES_BY_ELEMENT:
            known = ", ".join(f"<{name}>" for name in RECORD_TYPES_BY_ELEMENT)
            ignored.append(f"<{tag}> is not a fragment rainlog records ({known} are)")
            continue
        if any(len(child) for child in fragment):
            raise DecodeError(f"<{tag}> nests elements too deeply: a reading's fields are leaves")
        try:
            readings.append(
                _cloud_reading(fragment.tag, _leaf_fields(fragment), context, Source.PUSH)
            )
        except DecodeError as exc:
            raise DecodeError(f"<{tag}>: {exc}", exc.failure_class) from None
    if not readings and not ignored:
        ignored.append("a push upload without a fragment")
    return Payload("uploader-xml", readings, ignored)


@dataclass(frozen=True, slots=True)
class JsonDataType:
    """How one EAGLE-200 upload data type maps onto a record type's EAGLE-200 variables."""

    record_type: str
    # JSON data member -> EAGLE-200 variable name.
    variables: Mapping[str, str]
    # Accepted `units` -> what a value in them is divided by to get the record type's unit;
    # empty: units are not checked.
    units: Mapping[str, int] = field(default_factory=dict)


JSON_DATA_TYPES: dict[str, JsonDataType] = {
    "InstantaneousDemand": JsonDataType(
        DEMAND, {"demand": "zigbee:InstantaneousDemand"}, {"kW": 1, "W": 1000}
    ),
    "CurrentSummation": JsonDataType(
        "summation",
        {
            "summationDelivered": "zigbee:CurrentSummationDelivered",
            "summationReceived": "zigbee:CurrentSummationReceived",
        },
        {"kWh": 1, "Wh": 1000},
    ),
    "Price": JsonDataType(
        "price",
        {
            "price": "zigbee:Price",
            "currency": "zigbee:PriceCurrency",
            "PriceCurrency": "zigbee:PriceCurrency",
            "tier": "zigbee:PriceTier",
            "PriceTier": "zigbee:PriceTier",
        },
    ),
}

_HEX_NUMBER = re.compile(r"0[xX][0-9a-fA-F]{1,8}")


@shape(
    "eagle200-upload",
    'an EAGLE-200 push {"timestamp": "<ms>", "body": [{"dataType": …, "data": {…}}, …]}',
    lambda parsed: isinstance(parsed.document, dict) and "body" in parsed.document,
    upload=True,
)
def _eagle200_upload(parsed: Parsed, context: Context) -> Payload:
    body = parsed.document["body"]
    if not isinstance(body, list):
        raise DecodeError('an EAGLE-200 push whose "body" is not a list of items')
    readings: list[Reading] = []
    ignored: list[str] = []
    for index, item in enumerate(body):
        where = f"body[{index}]"
        if not isinstance(item, dict):
            raise DecodeError(f"{where} is not an object")
        data_type = item.get("dataType")
        spec = JSON_DATA_TYPES.get(data_type) if isinstance(data_type, str) else None
        if spec is None:
            known = ", ".join(JSON_DATA_TYPES)
            ignored.append(
                f"{where}: dataType {str(data_type)[:40]!r} is not recorded ({known} are)"
            )
            continue
        readings.append(_upload_reading(spec, item, f"{where} ({data_type})", context))
    return Payload("eagle200-upload", readings, ignored)


def _upload_reading(
    spec: JsonDataType, item: dict[str, Any], where: str, context: Context
) -> Reading:
    data = item.get("data")
    if not isinstance(data, dict):
        raise DecodeError(f"{where} has no data object")
    timestamp = _milliseconds(item.get("timestamp"), where)
    divisor = 1
    if spec.units:
        units = data.get("units")
        if units is not None and (not isinstance(units, str) or units not in spec.units):
            expected = ", ".join(spec.units)
            raise DecodeError(f"{where}: units {str(units)[:20]!r} (expected {expected})")
        divisor = spec.units.get(units, 1) if units is not None else 1
    variables: dict[str, str | None] = {}
    for member, variable in spec.variables.items():
        if data.get(member) is not None:
            variables[variable] = _variable_text(data[member], divisor, variable)
    kind = get_record_type(spec.record_type)
    try:
        values = kind.decode_variables(variables)
    except DecodeError as exc:
        raise DecodeError(f"{where}: {exc}", exc.failure_class) from None
    raw: dict[str, str | None] = {
        name: str(item[name])
        for name in ("dataType", "timestamp", "subdeviceGuid", "componentId")
        if item.get(name) is not None
    }
    raw.update({name: None if value is None else str(value) for name, value in data.items()})
    return context.reading(kind, timestamp, values, raw, Source.PUSH)


def _milliseconds(value: Any, where: str) -> int:
    """Unix seconds from an EAGLE-200 millisecond timestamp (a string or a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise DecodeError(f"{where}: no timestamp in milliseconds")
    try:
        seconds = int(float(value)) // 1000
    except (ValueError, OverflowError):
        raise DecodeError(f"{where}: timestamp {str(value)[:30]!r} is not a number") from None
    if not 0 < seconds < 1 << 32:
        raise DecodeError(f"{where}: timestamp {str(value)[:30]!r} is not a time")
    return seconds


def _variable_text(value: Any, divisor: int, variable: str) -> str:
    """A JSON value as the decimal text an EAGLE-200 variable holds, in the record type's unit."""
    if (
        variable == "zigbee:PriceCurrency"
        and isinstance(value, str)
        and _HEX_NUMBER.fullmatch(value)
    ):
        # An ISO 4217 numeric code in hex (0x0348 is 840, USD).
        code = int(value, 16)
        return CURRENCIES.get(code, str(code))
    if divisor != 1 and isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value / divisor)
    return str(value)


# The legacy cgi_manager family: (record type, value members with their EAGLE-200 variables, the
# time member, the units member and the units it may name).
_CGI_READINGS = (
    (
        Demand.name,
        {"demand": "zigbee:InstantaneousDemand"},
        "demand_timestamp",
        "demand_units",
        {"kW": 1, "W": 1000},
    ),
    (
        Summation.name,
        {
            "summation_delivered": "zigbee:CurrentSummationDelivered",
            "summation_received": "zigbee:CurrentSummationReceived",
        },
        "usage_timestamp",
        "summation_units",
        {"kWh": 1, "Wh": 1000},
    ),
)
_UTC_OFFSET = re.compile(r"(?:UTC|GMT)?\s*(?:([+-])(\d{1,2})(?::?(\d{2}))?)?", re.I)


def _is_cgi_manager(parsed: Parsed) -> bool:
    document = parsed.document
    return isinstance(document, dict) and any(
        time_member in document for _, _, time_member, _, _ in _CGI_READINGS
    )


@shape("cgi-manager", "a legacy cgi_manager reply (get_usage_data)", _is_cgi_manager)
def _cgi_manager(parsed: Parsed, context: Context) -> Payload:
    document: dict[str, Any] = parsed.document
    status = str(document.get("meter_status") or "").strip()
    if status and status.lower() != "connected":
        raise DecodeError(f"the meter's status is {status[:40]!r}", FailureClass.METER_NOT_JOINED)
    offset: int | None = None
    readings: list[Reading] = []
    ignored: list[str] = []
    for name, members, time_member, units_member, units in _CGI_READINGS:
        if time_member not in document or not any(m in document for m in members):
            continue
        kind = get_record_type(name)
        if context.expected is not None and kind is not context.expected:
            continue
        if offset is None:
            offset = _local_time_offset(document)
        local = _unix_seconds(document[time_member], time_member)
        unit = str(document.get(units_member) or next(iter(units)))
        if unit not in units:
            raise DecodeError(f"{units_member}={unit[:20]!r} (expected {', '.join(units)})")
        variables = {
            variable: _variable_text(_number(document.get(member)), units[unit], variable)
            for member, variable in members.items()
            if document.get(member) is not None
        }
        values = kind.decode_variables(variables)
        raw = {
            key: str(document[key])
            for key in (
                *members,
                time_member,
                units_member,
                "meter_status",
                "timezone_localTime",
                "timezone_utcTime",
                "timezone_utcOffset",
            )
            if document.get(key) is not None
        }
        readings.append(context.reading(kind, local - offset, values, raw, Source.LEGACY))
    if not readings:
        ignored.append(
            "the reply holds no " + (context.expected.name if context.expected else "reading")
        )
    return Payload("cgi-manager", readings, ignored)


def _number(value: Any) -> Any:
    """A cgi_manager value ('0.4980') as a number, so units can scale it; anything else as is."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _unix_seconds(value: Any, member: str) -> int:
    try:
        seconds = int(str(value).strip(), 0)
    except ValueError:
        raise DecodeError(f"{member}={str(value)[:30]!r} is not a time in seconds") from None
    if not 0 < seconds < 1 << 32:
        raise DecodeError(f"{member}={str(value)[:30]!r} is not a time")
    return seconds


def _local_time_offset(document: Mapping[str, Any]) -> int:
    """Seconds the gateway's local clock is ahead of UTC, from the reply's own timezone fields:
    `timezone_localTime` and `timezone_utcTime` (the same moment, read on both clocks), or
    `timezone_utcOffset` (`UTC`, `UTC-08:00`, `-0800`). DecodeError when there are none: the
    reply's times cannot be placed in UTC."""
    local, utc = document.get("timezone_localTime"), document.get("timezone_utcTime")
    if local is not None and utc is not None:
        difference = _unix_seconds(local, "timezone_localTime") - _unix_seconds(
            utc, "timezone_utcTime"
        )
        # The two clocks are read a moment apart; zones are whole quarter hours.
        return round(difference / 900) * 900
    text = document.get("timezone_utcOffset")
    if isinstance(text, str) and text.strip() and (match := _UTC_OFFSET.fullmatch(text.strip())):
        if not match[1]:
            return 0
        seconds = int(match[2]) * 3600 + int(match[3] or 0) * 60
        if seconds <= 14 * 3600:
            return seconds if match[1] == "+" else -seconds
    raise DecodeError(
        "the reply gives its times in the gateway's local time but no timezone_localTime and "
        "timezone_utcTime (or timezone_utcOffset) to convert them to UTC"
    )
