"""The record format: real output validates against docs/record-format.schema.json, which is what
the registered record types generate, and the documentation covers every field and class."""

import asyncio
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from ingestion.eagle.client import EagleClient, GatewayTarget
from ingestion.eagle.decoders import decode_payload
from ingestion.eagle.record_types import RECORD_TYPES, record_json_schema, record_json_schema_text
from ingestion.eagle.simulator import Simulator
from ingestion.records import FailureClass, Reading, parse_line
from users.models import ConnectionType

DOCS = Path(__file__).resolve().parents[2] / "docs"
SCHEMA_FILE = DOCS / "record-format.schema.json"


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = orjson.loads(SCHEMA_FILE.read_bytes())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def test_the_schema_file_is_what_the_record_types_generate() -> None:
    assert SCHEMA_FILE.read_text() == record_json_schema_text(), (
        "docs/record-format.schema.json is out of date: "
        "run `python -m ingestion.eagle.record_types > docs/record-format.schema.json`"
    )
    variants = {variant["title"] for variant in record_json_schema()["oneOf"]}
    assert variants == set(RECORD_TYPES) >= {"demand", "summation", "price"}


def fetch_everything(sim: Simulator) -> list[Reading]:
    async def main() -> list[Reading]:
        readings = []
        async with EagleClient(cloud_url=sim.cloud_url, timeout=30.0) as client:
            for account in sim.accounts():
                for connection_type in (
                    ConnectionType.CLOUD,
                    ConnectionType.EAGLE200,
                    ConnectionType.LEGACY,
                ):
                    target = GatewayTarget(
                        account["cloud_id"],
                        connection_type,
                        account["user_email"],
                        account["user_pw"],
                        sim.gateway_address(
                            account["cloud_id"],
                            "legacy" if connection_type == "legacy" else "eagle200",
                        ),
                    )
                    for record_type in RECORD_TYPES:
                        result = await client.fetch(target, record_type)
                        if isinstance(result, Reading):
                            readings.append(result)
        return readings

    return asyncio.run(main())


def test_real_output_of_every_protocol_and_record_type_validates(
    validator: Draft202012Validator,
) -> None:
    with Simulator(users=6, seed=3) as sim:
        readings = fetch_everything(sim)
    # Every record type over each of the three protocols, for each gateway that offers it.
    assert len(readings) == 6 * 3 * 2 + 3 * sum(g.meter.offers_price for g in sim.gateways.values())
    assert {r.record_type for r in readings} == set(RECORD_TYPES)
    for reading in readings:
        record = parse_line(reading.to_line())
        errors = [error.message for error in validator.iter_errors(record)]
        assert not errors, (record, errors)
        # What a poller keeps in the database while its disk is full is written back unchanged.
        assert Reading.from_record(record).to_line() == reading.to_line()


def test_pushed_and_negative_readings_validate(validator: Draft202012Validator) -> None:
    push = (
        '<rainforest macId="0xd8d5b9000000f8bc" timestamp="1735876268s"><InstantaneousDemand>'
        "<TimeStamp>0x2f0a1b2c</TimeStamp><Demand>0xfffffb1e</Demand><Multiplier>0x1</Multiplier>"
        "<Divisor>0x3e8</Divisor></InstantaneousDemand></rainforest>"
    )
    reading = decode_payload(push, cloud_id="002738")
    assert isinstance(reading, Reading)
    record = parse_line(reading.to_line())
    assert record["demand_kw"] == -1.25 and record["source"] == "push"
    validator.validate(record)


def a_record() -> dict[str, Any]:
    reading = decode_payload(
        "<InstantaneousDemand><TimeStamp>0x2f0a1b2c</TimeStamp><Demand>0x0004d2</Demand>"
        "<Divisor>0x3e8</Divisor>"
        "</InstantaneousDemand>",
        cloud_id="002738",
    )
    assert isinstance(reading, Reading)
    return parse_line(reading.to_line())


@pytest.mark.parametrize(
    "spoil",
    [
        lambda r: r.pop("demand_kw"),
        lambda r: r.pop("meter_time"),
        lambda r: r.update(record_type="price"),
        lambda r: r.update(delivered_kwh=1.0),
        lambda r: r.update(cloud_id="not-hex"),
        lambda r: r.update(meter_time="2025-01-03 03:51:08"),
        lambda r: r.update(format_version=2),
        lambda r: r.update(source="carrier-pigeon"),
        lambda r: r.update(demand_kw="1.234"),
        lambda r: r.update(raw={"Demand": 1234}),
    ],
)
def test_the_schema_refuses_records_that_break_the_format(
    validator: Draft202012Validator,
    spoil: Any,
) -> None:
    record = a_record()
    validator.validate(record)
    spoil(record)
    assert not validator.is_valid(record)


def test_the_documentation_covers_every_field_type_and_failure_class() -> None:
    text = (DOCS / "record-format.md").read_text()
    schema = record_json_schema()
    fields = set(schema["properties"]) | {
        name for variant in schema["oneOf"] for name in variant["properties"]
    }
    documented = set(re.findall(r"`([a-z_]+)`", text))
    assert fields <= documented, fields - documented
    assert set(RECORD_TYPES) <= documented
    assert {failure_class.value for failure_class in FailureClass} <= documented
    assert "946684800" in text and "two's complement" in text and "48-bit" in text
