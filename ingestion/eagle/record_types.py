"""The kinds of meter reading rainlog records, and how each is asked for and decoded.

A record type is one class registered here: its cloud command, the element names its replies and
push fragments use, its EAGLE-200 variable names, and decoders from the two number formats:

- cloud, legacy local and push replies carry hexadecimal fields (`0x1d2b3c4f`) that are scaled by
  Multiplier/Divisor (0 means 1), with timestamps in seconds since 2000-01-01T00:00:00Z;
- EAGLE-200 local replies carry decimal strings already scaled (`-1.250000` or `-1.250 kW`).

Adding a record type means adding one subclass with `@register`; the client, the poller and the
simulator find it in RECORD_TYPES. `python -m ingestion.eagle.record_types` prints the record JSON Schema
(docs/record-format.schema.json is its output).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

import orjson

from ingestion.records import FORMAT_VERSION, FailureClass, Source
from users.cloud_ids import NORMALISED_CLOUD_ID_PATTERN

# Seconds between the Unix epoch and the ZigBee epoch (2000-01-01T00:00:00Z) used by meter clocks.
ZIGBEE_EPOCH = 946684800


class DecodeError(ValueError):
    """A reply that cannot become a reading, with the failure class it deserves."""

    def __init__(self, message: str, failure_class: FailureClass = FailureClass.MALFORMED_REPLY):
        super().__init__(message)
        self.failure_class = failure_class


# --- Numbers ----------------------------------------------------------------------------------


_HEX = re.compile(r"\s*(?:0[xX])?([0-9a-fA-F]{1,32})\s*")


def hex_field_and_digits(fields: Mapping[str, Any], name: str, bits: int = 32) -> tuple[int, int]:
    """The unsigned integer in a `0x…` field and how many hex digits it was sent with (the
    firmware's width). DecodeError if it is missing, not hexadecimal or wider than `bits`."""
    text = fields.get(name)
    if text is None:
        raise DecodeError(f"the reply has no {name} field")
    match = _HEX.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise DecodeError(f"{name}={str(text)[:40]!r} is not a hexadecimal number")
    value = int(match[1], 16)
    if value >> bits:
        raise DecodeError(f"{name}={text.strip()[:40]} does not fit in {bits} bits")
    return value, len(match[1])


def hex_field(fields: Mapping[str, Any], name: str, bits: int = 32) -> int:
    return hex_field_and_digits(fields, name, bits)[0]


def scale(fields: Mapping[str, Any]) -> tuple[int, int]:
    """(multiplier, divisor) of a reply; a 0 (or absent) multiplier or divisor means 1."""
    multiplier = hex_field(fields, "Multiplier") if fields.get("Multiplier") else 1
    divisor = hex_field(fields, "Divisor") if fields.get("Divisor") else 1
    return multiplier or 1, divisor or 1


def signed_demand(raw: int, digits: int) -> int:
    """A demand field as a signed integer: 24-bit two's complement when sent with up to 6 hex
    digits, 32-bit otherwise. Negative means export."""
    if digits <= 6:
        return raw - (1 << 24) if raw & 0x800000 else raw
    if raw & 0x80000000:
        return raw - (1 << 32)
    if raw & 0x800000 and raw < (1 << 24):
        # A 24-bit negative zero-padded to 8 digits by some firmware: read as 32 bits it would be
        # 8,388 kW or more, far beyond any household, so the 24-bit reading is the meter's.
        return raw - (1 << 24)
    return raw


def meter_timestamp(fields: Mapping[str, Any], name: str = "TimeStamp") -> int:
    """Unix seconds from a meter clock field (seconds since 2000-01-01T00:00:00Z)."""
    return hex_field(fields, name) + ZIGBEE_EPOCH


def decimal_variable(variables: Mapping[str, str | None], name: str) -> float:
    """An EAGLE-200 variable as a float: decimal text, possibly followed by its unit."""
    text = variables.get(name)
    if text is None:
        raise DecodeError(f"the reply has no {name} variable")
    number = text.strip().split(" ", 1)[0]
    try:
        value = float(number)
    except ValueError:
        raise DecodeError(f"{name}={text[:40]!r} is not a number") from None
    if not math.isfinite(value):
        raise DecodeError(f"{name}={text[:40]!r} is not a finite number")
    return value


# ISO 4217 numeric codes of the currencies utilities in EAGLE markets bill in.
CURRENCIES = {
    36: "AUD",
    124: "CAD",
    392: "JPY",
    554: "NZD",
    826: "GBP",
    840: "USD",
    978: "EUR",
}


class PreviousReading(NamedTuple):
    """The last reading of one type decoded for one gateway, which plausibility checks compare to."""

    meter_timestamp: int
    values: Mapping[str, Any]
    # False when that reading was itself refused as suspicious.
    trusted: bool


# --- Registry ---------------------------------------------------------------------------------


class RecordType:
    """One kind of reading. Subclasses fill in the class attributes and the two decoders."""

    name: ClassVar[str]
    description: ClassVar[str]
    # The cloud/legacy command that asks for it.
    cloud_command: ClassVar[str]
    # Element names of replies and push fragments that carry it; the first is what the cloud sends.
    cloud_elements: ClassVar[tuple[str, ...]]
    # EAGLE-200 variables it is decoded from (the device_query asks for exactly these).
    eagle200_variables: ClassVar[tuple[str, ...]]
    # JSON Schema of the fields it adds to a record (see docs/record-format.md).
    value_schema: ClassVar[dict[str, dict[str, Any]]]
    required_values: ClassVar[tuple[str, ...]]

    def decode_fields(self, fields: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """(unix meter timestamp, values) from the hexadecimal fields of one reply element."""
        raise NotImplementedError

    def decode_variables(self, variables: Mapping[str, str | None]) -> dict[str, Any]:
        """Values from EAGLE-200 variables (decimal, already scaled)."""
        raise NotImplementedError

    def suspicion(
        self, meter_timestamp: int, values: Mapping[str, Any], previous: PreviousReading | None
    ) -> str | None:
        """Why a decoded reading should not be trusted, or None."""
        return None


RECORD_TYPES: dict[str, RecordType] = {}
# Reply element name -> record type, for replies and push fragments of any registered type.
RECORD_TYPES_BY_ELEMENT: dict[str, RecordType] = {}


def register(cls: type[RecordType]) -> type[RecordType]:
    record_type = cls()
    if cls.name in RECORD_TYPES:
        raise ValueError(f"record type {cls.name!r} is registered twice")
    RECORD_TYPES[cls.name] = record_type
    for element in cls.cloud_elements:
        RECORD_TYPES_BY_ELEMENT[element] = record_type
    return cls


def get_record_type(name: str) -> RecordType:
    try:
        return RECORD_TYPES[name]
    except KeyError:
        known = ", ".join(sorted(RECORD_TYPES))
        raise ValueError(f"unknown record type {name!r} (known: {known})") from None


# The record type every polled user gets each tick; the others are extras, enabled per user.
DEMAND = "demand"


@register
class Demand(RecordType):
    name = DEMAND
    description = "Instantaneous demand in kW; negative when the household exports (solar)."
    cloud_command = "get_instantaneous_demand"
    cloud_elements = ("InstantaneousDemand",)
    eagle200_variables = ("zigbee:InstantaneousDemand",)
    value_schema = {
        "demand_kw": {
            "type": "number",
            "description": "Demand in kW, Demand x Multiplier / Divisor; negative = export.",
        }
    }
    required_values = ("demand_kw",)

    def decode_fields(self, fields: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        raw, digits = hex_field_and_digits(fields, "Demand")
        multiplier, divisor = scale(fields)
        demand = signed_demand(raw, digits) * multiplier / divisor
        return meter_timestamp(fields), {"demand_kw": demand}

    def decode_variables(self, variables: Mapping[str, str | None]) -> dict[str, Any]:
        return {"demand_kw": decimal_variable(variables, "zigbee:InstantaneousDemand")}

    def suspicion(
        self, meter_timestamp: int, values: Mapping[str, Any], previous: PreviousReading | None
    ) -> str | None:
        from django.conf import settings

        demand = values["demand_kw"]
        limit = settings.INGEST_MAX_DEMAND_KW
        if abs(demand) > limit:
            return f"implausible demand of {demand:g} kW (the limit is {limit:g} kW)"
        # A sudden 0 kW is nearly always a failed read. A zero that follows an earlier zero
        # reading (a different meter timestamp) is believed: the household really uses nothing.
        if demand == 0 and not (
            previous is not None
            and previous.values.get("demand_kw") == 0
            and previous.meter_timestamp != meter_timestamp
        ):
            return "a sudden 0 kW reading, usually a failed read of the meter"
        return None


@register
class Summation(RecordType):
    name = "summation"
    description = "Energy meter totals in kWh: delivered to and received from the household."
    cloud_command = "get_current_summation"
    cloud_elements = ("CurrentSummation", "CurrentSummationDelivered")
    eagle200_variables = ("zigbee:CurrentSummationDelivered", "zigbee:CurrentSummationReceived")
    value_schema = {
        "delivered_kwh": {
            "type": "number",
            "minimum": 0,
            "description": "Total energy delivered to the household (imported), kWh.",
        },
        "received_kwh": {
            "type": "number",
            "minimum": 0,
            "description": "Total energy received from the household (exported), kWh.",
        },
    }
    required_values = ("delivered_kwh", "received_kwh")

    def decode_fields(self, fields: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        multiplier, divisor = scale(fields)
        values = {}
        for field, key in (
            ("SummationDelivered", "delivered_kwh"),
            ("SummationReceived", "received_kwh"),
        ):
            values[key] = hex_field(fields, field, bits=48) * multiplier / divisor
        return meter_timestamp(fields), values

    def decode_variables(self, variables: Mapping[str, str | None]) -> dict[str, Any]:
        values = {
            "delivered_kwh": decimal_variable(variables, "zigbee:CurrentSummationDelivered"),
            "received_kwh": decimal_variable(variables, "zigbee:CurrentSummationReceived"),
        }
        for key, value in values.items():
            if value < 0:
                raise DecodeError(f"{key} is negative: meter totals only count up")
        return values

    def suspicion(
        self, meter_timestamp: int, values: Mapping[str, Any], previous: PreviousReading | None
    ) -> str | None:
        # Totals only count up; compare with the last total that was itself believed.
        if previous is None or not previous.trusted:
            return None
        for key in ("delivered_kwh", "received_kwh"):
            if values[key] < previous.values[key]:
                return f"{key} went down from {previous.values[key]:g} to {values[key]:g}"
        return None


_CURRENCY_CODE = re.compile(r"[A-Z]{3}|[0-9]{1,4}")


def currency_code(text: str) -> str:
    """An ISO 4217 code (USD) or numeric code (840) from a gateway's text; anything else, such as
    a spreadsheet formula, is refused."""
    code = text.strip().upper()
    if code and not _CURRENCY_CODE.fullmatch(code):
        raise DecodeError(f"currency {text[:20]!r} is not an ISO 4217 code or number")
    return code


@register
class Price(RecordType):
    name = "price"
    description = "The current price of energy per kWh, its currency and tier, where offered."
    cloud_command = "get_price"
    cloud_elements = ("PriceCluster",)
    eagle200_variables = ("zigbee:Price", "zigbee:PriceCurrency", "zigbee:PriceTier")
    value_schema = {
        "price": {"type": "number", "description": "Price per kWh in `currency`."},
        "currency": {
            "type": "string",
            "description": "ISO 4217 code (USD), or the numeric code when it is not a known one.",
        },
        "tier": {"type": ["integer", "null"], "minimum": 0, "description": "Price tier, if any."},
    }
    required_values = ("price", "currency", "tier")

    def decode_fields(self, fields: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        raw = hex_field(fields, "Price")
        trailing = hex_field(fields, "TrailingDigits", bits=8)
        if raw == 0xFFFFFFFF or trailing == 0xFF:
            raise DecodeError("this meter offers no price (Price is marked invalid)")
        if trailing > 15:
            raise DecodeError(f"TrailingDigits={trailing} is beyond any price's precision")
        currency_code = hex_field(fields, "Currency", bits=16)
        tier = hex_field(fields, "Tier", bits=8) if fields.get("Tier") else None
        values = {
            "price": raw / 10**trailing,
            "currency": CURRENCIES.get(currency_code, str(currency_code)),
            "tier": tier,
        }
        return meter_timestamp(fields), values

    def decode_variables(self, variables: Mapping[str, str | None]) -> dict[str, Any]:
        if (variables.get("zigbee:Price") or "").strip().lower() in ("", "invalid"):
            raise DecodeError("this meter offers no price (zigbee:Price is invalid)")
        tier_text = (variables.get("zigbee:PriceTier") or "").strip()
        if tier_text and not (tier_text.isascii() and tier_text.isdigit() and len(tier_text) <= 3):
            raise DecodeError(f"zigbee:PriceTier={tier_text[:20]!r} is not a tier number")
        return {
            "price": decimal_variable(variables, "zigbee:Price"),
            "currency": currency_code(variables.get("zigbee:PriceCurrency") or ""),
            "tier": int(tier_text) if tier_text else None,
        }


# --- The record format as JSON Schema ---------------------------------------------------------


def record_json_schema() -> dict[str, Any]:
    """JSON Schema (2020-12) of one record line, covering every registered record type."""
    timestamp_pattern = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?Z$"
    common = {
        "format_version": {"const": FORMAT_VERSION, "description": "Changes only with the format."},
        "record_type": {"enum": sorted(RECORD_TYPES), "description": "Which values follow."},
        "cloud_id": {
            "type": "string",
            "pattern": NORMALISED_CLOUD_ID_PATTERN,
            "description": "The household's gateway, hexadecimal in lower case, leading zeros "
            "kept.",
        },
        "meter_timestamp": {
            "type": "integer",
            "description": "Unix seconds of the meter's own clock for this reading.",
        },
        "meter_time": {
            "type": "string",
            "format": "date-time",
            "pattern": timestamp_pattern,
            "description": "meter_timestamp as ISO 8601 UTC.",
        },
        "received_at": {
            "type": "string",
            "format": "date-time",
            "pattern": timestamp_pattern,
            "description": "When rainlog received the reading, ISO 8601 UTC (milliseconds).",
        },
        "source": {
            "enum": [source.value for source in Source],
            "description": "How the reading reached rainlog.",
        },
        "raw": {
            "type": "object",
            "description": "The reply's fields as received (hex strings, or EAGLE-200 text).",
            "additionalProperties": {"type": ["string", "null"]},
        },
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://rainlog.invalid/schemas/record-format.schema.json",
        "title": "rainlog record",
        "description": "One line of an hour file: one meter reading. See docs/record-format.md.",
        "type": "object",
        "properties": common,
        "required": list(common),
        "oneOf": [
            {
                "title": name,
                "description": record_type.description,
                "properties": {"record_type": {"const": name}, **record_type.value_schema},
                "required": list(record_type.required_values),
            }
            for name, record_type in sorted(RECORD_TYPES.items())
        ],
        "unevaluatedProperties": False,
    }


def record_json_schema_text() -> str:
    return orjson.dumps(record_json_schema(), option=orjson.OPT_INDENT_2).decode() + "\n"


if __name__ == "__main__":
    print(record_json_schema_text(), end="")
