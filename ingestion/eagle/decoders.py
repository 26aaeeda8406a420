"""Pure decoders: an EAGLE reply's text in, a Reading or a classified FetchFailure out.

Understood shapes (see docs/record-format.md, "Where readings come from"):

- cloud and legacy local replies, XML or JSON: a root element named after the record type
  (`InstantaneousDemand`, `CurrentSummation`, `PriceCluster`, …) with hexadecimal fields, or a root
  `Error` element with a `Text` child;
- EAGLE-200 local replies: `Device` (device_query) with `DeviceDetails` and `Variable`s, and
  `DeviceList` (device_list), which names the meter but holds no reading;
- push uploads: `<rainforest macId=… timestamp=…>` wrapping one fragment of the cloud shape.

Nothing here raises for any input text: every problem becomes a FetchFailure. The common cloud
reply (one flat element of hex fields) is read by a precompiled regex; anything else goes through
ElementTree, which also gives precise reasons for broken replies.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from ingestion.eagle.record_types import (
    RECORD_TYPES,
    RECORD_TYPES_BY_ELEMENT,
    DecodeError,
    PreviousReading,
    RecordType,
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

    `source` defaults to what the reply's shape says (cloud, eagle200, push). `record_type`, when
    given, is what the reply must carry; otherwise it is read from the reply.
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
    received_at = received_at or datetime.now(UTC)
    try:
        root, fields, element = _parse(text)
        if root == "Error":
            error_text = str(fields.get("Text") or "").strip() or "(no text)"
            return failure(
                classify_error_text(error_text), f"the service replied Error: {error_text}", text
            )
        if root == "Device" and element is not None:
            return _eagle200_reading(
                element, text, cloud_id, source or Source.EAGLE200, expected, received_at
            )
        if root == "DeviceList" and element is not None:
            address = meter_address(element)
            return failure(
                FailureClass.MALFORMED_REPLY,
                f"a device list (meter {address}) holds no reading: device_query asks for one",
                text,
            )
        if root.lower() == "rainforest" and element is not None:
            root, fields = _push_fragment(element)
            source = source or Source.PUSH
        kind = RECORD_TYPES_BY_ELEMENT.get(root)
        if kind is None:
            raise DecodeError(f"unexpected reply <{root[:60]}>: not a reading rainlog knows")
        if expected is not None and kind is not expected:
            raise DecodeError(
                f"expected <{expected.cloud_elements[0]}> for {expected.name}, got <{root}>"
            )
        timestamp, values = kind.decode_fields(fields)
        return Reading(
            cloud_id=cloud_id,
            record_type=kind.name,
            meter_timestamp=timestamp,
            received_at=received_at,
            source=str(source or Source.CLOUD),
            values=values,
            raw={name: value for name, value in fields.items() if isinstance(value, str)},
        )
    except DecodeError as exc:
        return failure(exc.failure_class, str(exc), text)


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
        root, fields, element = _parse(text)
        if root == "Error":
            error_text = str(fields.get("Text") or "").strip() or "(no text)"
            return failure(
                classify_error_text(error_text), f"the gateway replied Error: {error_text}", text
            )
        if root != "DeviceList" or element is None:
            raise DecodeError(f"expected <DeviceList>, got <{root[:60]}>")
        return meter_address(element)
    except DecodeError as exc:
        return failure(exc.failure_class, str(exc), text)


# --- Parsing ----------------------------------------------------------------------------------


def _parse(text: str) -> tuple[str, Mapping[str, Any], ET.Element | None]:
    """(root name, leaf fields, element or None on the fast path) of an XML or JSON reply."""
    if not isinstance(text, str):
        raise DecodeError("the reply is not text")
    match = _FLAT_XML.fullmatch(text)
    if match and match[1] not in _NESTED_ROOTS and match[1].lower() != "html":
        return match[1], dict(_FLAT_FIELD.findall(match[2])), None
    start = text.lstrip()[:1]
    if start in ("{", "["):
        root, fields = _parse_json(text)
        return root, fields, None
    if start != "<":
        if not start:
            raise DecodeError("the reply is empty")
        raise DecodeError("the reply is neither XML nor JSON")
    head = text.lstrip()[:200].lower()
    if head.startswith("<!doctype html") or head.startswith("<html") or "<html" in head:
        raise DecodeError("an HTML page instead of an EAGLE reply (an error page or a portal?)")
    if "<!doctype" in text.lower() or "<!entity" in text.lower():
        # EAGLE replies never declare a DTD; refusing them avoids entity expansion attacks.
        raise DecodeError("XML with a document type declaration is not an EAGLE reply")
    try:
        element = ET.fromstring(text)
    except (ET.ParseError, ValueError) as exc:
        raise DecodeError(f"broken XML ({exc}): truncated or garbled reply") from None
    return element.tag, _leaf_fields(element), element


def _parse_json(text: str) -> tuple[str, Mapping[str, Any]]:
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"broken JSON ({exc}): truncated or garbled reply") from None
    if not isinstance(document, dict) or len(document) != 1:
        keys = ", ".join(sorted(document)[:8]) if isinstance(document, dict) else ""
        raise DecodeError(
            f"a JSON reply is one object with one member named after the reply, not {keys or type(document).__name__}"
        )
    ((root, body),) = document.items()
    if root == "Error" and isinstance(body, str):
        return root, {"Text": body}
    if not isinstance(body, dict):
        raise DecodeError(f"the JSON member {root[:60]!r} is not an object")
    return root, body


def _leaf_fields(element: ET.Element) -> dict[str, str]:
    return {child.tag: (child.text or "").strip() for child in element if len(child) == 0}


def _push_fragment(wrapper: ET.Element) -> tuple[str, dict[str, str]]:
    """The one fragment of a push upload that carries a registered reading."""
    tags = []
    for child in wrapper:
        if child.tag in RECORD_TYPES_BY_ELEMENT:
            return child.tag, _leaf_fields(child)
        tags.append(child.tag)
    if not tags:
        raise DecodeError("a push upload without a fragment")
    raise DecodeError(f"unsupported push fragment <{str(tags[0])[:60]}>")


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


def _eagle200_reading(
    device: ET.Element,
    text: str,
    cloud_id: str,
    source: Source | str,
    expected: RecordType | None,
    received_at: datetime,
) -> Reading:
    details = device.find("DeviceDetails")
    if details is None:
        raise DecodeError("a <Device> reply without <DeviceDetails>")
    _check_connected(details)
    detail_fields = _leaf_fields(details)
    timestamp = hex_field(detail_fields, "LastContact")
    variables: dict[str, str | None] = {}
    for variable in device.iter("Variable"):
        name = (variable.findtext("Name") or "").strip()
        if name:
            value = variable.findtext("Value")
            variables[name] = value.strip() if value is not None else None
    kind = expected or _record_type_of_variables(variables)
    values = kind.decode_variables(variables)
    raw: dict[str, Any] = {
        name: detail_fields.get(name)
        for name in ("HardwareAddress", "LastContact", "ConnectionStatus")
        if name in detail_fields
    }
    raw.update({name: variables.get(name) for name in kind.eagle200_variables})
    return Reading(
        cloud_id=cloud_id,
        record_type=kind.name,
        meter_timestamp=timestamp,
        received_at=received_at,
        source=str(source),
        values=values,
        raw=raw,
    )


def _record_type_of_variables(variables: Mapping[str, str | None]) -> RecordType:
    for kind in RECORD_TYPES.values():
        if kind.eagle200_variables[0] in variables:
            return kind
    raise DecodeError("the device reply holds none of the variables rainlog records")
