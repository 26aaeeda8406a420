"""Decoding EAGLE replies: real-world shapes, hand-computed values, every failure class, and
property-based checks that no input makes the decoders raise."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pytest_django.fixtures import Settings

from ingestion.eagle.decoders import decode_payload, decode_reply, device_list_meter
from ingestion.eagle.record_types import PreviousReading
from ingestion.records import FailureClass, FetchFailure, Reading

ZIGBEE_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

# The shape the RAVEn/EAGLE XML API documents, as public clients' tests carry it.
DEMAND_XML = """<InstantaneousDemand>
  <DeviceMacId>0xd8d5b9000000f8bc</DeviceMacId>
  <MeterMacId>0x00135003005dba2b</MeterMacId>
  <TimeStamp>0x234e5af3</TimeStamp>
  <Demand>{demand}</Demand>
  <Multiplier>{multiplier}</Multiplier>
  <Divisor>{divisor}</Divisor>
  <DigitsRight>0x03</DigitsRight>
  <DigitsLeft>0x0f</DigitsLeft>
  <SuppressLeadingZero>Y</SuppressLeadingZero>
</InstantaneousDemand>"""

SUMMATION_XML = """<CurrentSummationDelivered>
  <DeviceMacId>0xd8d5b9000000f8bc</DeviceMacId>
  <MeterMacId>0x00135003005dba2b</MeterMacId>
  <TimeStamp>0x234e5b55</TimeStamp>
  <SummationDelivered>0x0000000002cb3ad2</SummationDelivered>
  <SummationReceived>0x00000000000a1b2c</SummationReceived>
  <Multiplier>0x00000001</Multiplier>
  <Divisor>0x000003e8</Divisor>
  <DigitsRight>0x03</DigitsRight>
  <DigitsLeft>0x0f</DigitsLeft>
  <SuppressLeadingZero>Y</SuppressLeadingZero>
</CurrentSummationDelivered>"""

PRICE_XML = """<PriceCluster>
  <DeviceMacId>0xd8d5b9000000f8bc</DeviceMacId>
  <MeterMacId>0x00135003005dba2b</MeterMacId>
  <TimeStamp>0x234e56bd</TimeStamp>
  <Price>0x0000025b</Price>
  <Currency>0x0348</Currency>
  <TrailingDigits>0x04</TrailingDigits>
  <Tier>0x00</Tier>
  <StartTime>0x234da0d0</StartTime>
  <Duration>0x05a0</Duration>
  <RateLabel></RateLabel>
</PriceCluster>"""

# An EAGLE-200 device_query reply as aioeagle parses it: scaled decimals, units apart.
EAGLE200_QUERY = """<Device><DeviceDetails><Name>Power Meter</Name>
<HardwareAddress>0x00078100023076c8</HardwareAddress><Manufacturer>Generic</Manufacturer>
<ModelId>electric_meter</ModelId><Protocol>Zigbee</Protocol><LastContact>0x611d885a</LastContact>
<ConnectionStatus>{status}</ConnectionStatus><NetworkAddress>0x0000</NetworkAddress>
</DeviceDetails><Components><Component><Name>Main</Name><Variables>
<Variable><Name>zigbee:InstantaneousDemand</Name><Value>{demand}</Value><Units>kW</Units></Variable>
<Variable><Name>zigbee:CurrentSummationDelivered</Name><Value>2853.662000</Value><Units>kWh</Units></Variable>
<Variable><Name>zigbee:CurrentSummationReceived</Name><Value>0.000000</Value><Units>kWh</Units></Variable>
<Variable><Name>zigbee:Price</Name><Value>{price}</Value></Variable>
<Variable><Name>zigbee:PriceCurrency</Name><Value>USD</Value></Variable>
<Variable><Name>zigbee:PriceTier</Name><Value>0</Value></Variable>
</Variables></Component></Components></Device>"""

DEVICE_LIST = """<DeviceList><Device><HardwareAddress>0x00078100023076c8</HardwareAddress>
<Manufacturer>Generic</Manufacturer><ModelId>electric_meter</ModelId><Protocol>Zigbee</Protocol>
<LastContact>0x611d885a</LastContact><ConnectionStatus>{status}</ConnectionStatus>
<NetworkAddress>0x0000</NetworkAddress></Device></DeviceList>"""


def demand_xml(demand: str, multiplier: str = "0x00000001", divisor: str = "0x000003e8") -> str:
    return DEMAND_XML.format(demand=demand, multiplier=multiplier, divisor=divisor)


def decoded(text: str, **options: Any) -> Reading:
    result = decode_payload(text, cloud_id="0a1b2c", **options)
    assert isinstance(result, Reading), result
    return result


def refused(text: str, **options: Any) -> FetchFailure:
    result = decode_payload(text, cloud_id="0a1b2c", **options)
    assert isinstance(result, FetchFailure), result
    return result


# --- Values against hand-computed ones --------------------------------------------------------


def test_it_decodes_a_cloud_demand_reply_with_the_2000_epoch() -> None:
    reading = decoded(demand_xml("0x00014d"))
    # 0x14d = 333 W; 0x234e5af3 = 592,337,651 s after 2000-01-01 = 2018-10-08T18:14:11Z.
    assert reading.values == {"demand_kw": 0.333}
    assert reading.meter_timestamp == 1539022451
    assert reading.meter_time == datetime(2018, 10, 8, 18, 14, 11, tzinfo=UTC)
    assert reading.record_type == "demand"
    assert reading.source == "cloud"
    assert reading.raw["Demand"] == "0x00014d"
    assert reading.raw["MeterMacId"] == "0x00135003005dba2b"


@pytest.mark.parametrize(
    ("demand", "kw"),
    [
        ("0xfffb1e", -1.25),  # 24-bit two's complement
        ("0xfffffb1e", -1.25),  # 32-bit two's complement
        ("0x00fffb1e", -1.25),  # 24-bit negative zero-padded to 8 digits by some firmware
        ("0x7fffff", 8388.607),  # the largest 24-bit positive
        ("0x000005dc", 1.5),
        ("0xff", 0.255),  # short fields are not sign-extended
    ],
)
def test_it_reads_negative_demand_in_both_widths(demand: str, kw: float) -> None:
    reading = decode_reply(demand_xml(demand), cloud_id="1")
    assert isinstance(reading, Reading)
    assert reading.values["demand_kw"] == kw


def test_it_takes_a_multiplier_or_divisor_of_zero_as_one() -> None:
    assert decoded(demand_xml("0x000005", "0x00000000", "0x00000000")).values == {"demand_kw": 5.0}
    assert decoded(demand_xml("0x00000d", "0x00000002", "0x00000000")).values == {"demand_kw": 26.0}
    assert decoded(demand_xml("0x00014d", "0x00000002")).values == {"demand_kw": 0.666}


def test_it_decodes_summations_as_unsigned_48_bit_totals() -> None:
    reading = decoded(SUMMATION_XML)
    assert reading.record_type == "summation"
    assert reading.values == {"delivered_kwh": 46873.298, "received_kwh": 662.316}
    top = SUMMATION_XML.replace("0x0000000002cb3ad2", "0xffffffffffff")
    assert decoded(top).values["delivered_kwh"] == 281474976710.655
    too_wide = refused(SUMMATION_XML.replace("0x0000000002cb3ad2", "0x1000000000000"))
    assert too_wide.failure_class is FailureClass.MALFORMED_REPLY
    assert "48 bits" in too_wide.message


def test_it_decodes_a_price_with_its_currency_and_tier() -> None:
    reading = decoded(PRICE_XML)
    assert reading.values == {"price": 0.0603, "currency": "USD", "tier": 0}
    assert reading.meter_timestamp == 0x234E56BD + 946684800


def test_it_says_when_a_meter_offers_no_price() -> None:
    invalid = PRICE_XML.replace("0x0000025b", "0xffffffff").replace("0x04<", "0xff<")
    assert "offers no price" in refused(invalid).message


def test_it_decodes_cloud_json_replies() -> None:
    text = orjson.dumps(
        {
            "InstantaneousDemand": {
                "DeviceMacId": "0xd8d5b9000000b3e8",
                "MeterMacId": "0x00135003007c27b4",
                "TimeStamp": "0x2244aeb3",
                "Demand": "0x0006c1",
                "Multiplier": "0x00000001",
                "Divisor": "0x000003e8",
                "DigitsRight": "0x03",
                "DigitsLeft": "0x0f",
                "SuppressLeadingZero": "Y",
            }
        }
    ).decode()
    reading = decoded(text)
    assert reading.values == {"demand_kw": 1.729}
    assert reading.meter_time == datetime(2018, 3, 21, 5, 48, 35, tzinfo=UTC)


def test_it_decodes_an_xml_declaration_and_compact_replies() -> None:
    text = (
        '<?xml version="1.0"?><InstantaneousDemand><DeviceMacId>0xd8d5b9000000b3e8</DeviceMacId>'
        "<MeterMacId>0x00135003007c27b4</MeterMacId><TimeStamp>0x2244aeb3</TimeStamp>"
        "<Demand>0x0006c1</Demand><Multiplier>0x00000001</Multiplier><Divisor>0x000003e8"
        "</Divisor><DigitsRight>0x03</DigitsRight><DigitsLeft>0x0f</DigitsLeft>"
        "<SuppressLeadingZero>Y</SuppressLeadingZero></InstantaneousDemand>"
    )
    assert decoded(text).values == {"demand_kw": 1.729}


def test_it_decodes_eagle200_device_queries_per_record_type() -> None:
    text = EAGLE200_QUERY.format(status="Connected", demand="1.965000", price="0.053990")
    demand = decoded(text)
    # LastContact is plain unix seconds on the EAGLE-200 (0x611d885a = 2021-08-18T22:23:22Z).
    assert demand.meter_time == datetime(2021, 8, 18, 22, 23, 22, tzinfo=UTC)
    assert demand.source == "eagle200"
    assert demand.values == {"demand_kw": 1.965}
    assert demand.raw["zigbee:InstantaneousDemand"] == "1.965000"
    summation = decoded(text, record_type="summation")
    assert summation.values == {"delivered_kwh": 2853.662, "received_kwh": 0.0}
    price = decoded(text, record_type="price")
    assert price.values == {"price": 0.05399, "currency": "USD", "tier": 0}


def test_it_reads_eagle200_values_that_carry_their_unit() -> None:
    text = EAGLE200_QUERY.format(status="Connected", demand="-1.250 kW", price="invalid")
    assert decoded(text).values == {"demand_kw": -1.25}
    assert "offers no price" in refused(text, record_type="price").message


def test_it_decodes_push_uploads_with_their_fragment() -> None:
    text = (
        '<?xml version="1.0"?>\n<rainForest macId="0x0000d8d5b9000348" version="undefined" '
        'timestamp="1373335064s">\n' + demand_xml("0xfffffb1e") + "\n</rainForest>"
    )
    reading = decoded(text)
    assert reading.source == "push"
    assert reading.values == {"demand_kw": -1.25}
    unsupported = refused('<rainforest macId="0x1" timestamp="1s"><MessageCluster/></rainforest>')
    assert "<MessageCluster> is not a fragment rainlog records" in unsupported.message


def test_it_finds_the_meter_in_an_eagle200_device_list() -> None:
    assert device_list_meter(DEVICE_LIST.format(status="Connected")) == "0x00078100023076c8"
    lost = device_list_meter(DEVICE_LIST.format(status="Not joined"))
    assert isinstance(lost, FetchFailure)
    assert lost.failure_class is FailureClass.METER_NOT_JOINED


# --- Failure classes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "failure_class"),
    [
        ("Invalid user name or password", FailureClass.BAD_CREDENTIALS),
        ("Authentication failed", FailureClass.BAD_CREDENTIALS),
        ("Unknown Cloud ID", FailureClass.UNKNOWN_CLOUD_ID),
        ("Meter not joined", FailureClass.METER_NOT_JOINED),
        ("Gateway did not respond: it may be offline", FailureClass.GATEWAY_UNREACHABLE),
        ("", FailureClass.GATEWAY_UNREACHABLE),
    ],
)
def test_it_classifies_error_replies_by_their_text(text: str, failure_class: FailureClass) -> None:
    for reply in (
        f"<Error><Text>{text}</Text></Error>",
        f"<?xml version='1.0'?>\n<Error>\n  <Text>{text}</Text>\n</Error>\n",
        orjson.dumps({"Error": {"Text": text}}).decode(),
    ):
        result = refused(reply)
        assert result.failure_class is failure_class
        assert result.raw_reply == reply


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("Service Unavailable", "neither XML nor JSON"),
        ("<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>", "HTML page"),
        ("<html><body>Sign in to the hotel wifi</body></html>", "HTML page"),
        (demand_xml("0x00014d")[:150], "broken XML"),
        ('{"InstantaneousDemand": {"Demand": "0x0001', "broken JSON"),
        ("<NetworkInfo><Status>Connected</Status></NetworkInfo>", "unexpected reply <NetworkInfo>"),
        (demand_xml("0x00014d").replace("<TimeStamp>0x234e5af3</TimeStamp>", ""), "no TimeStamp"),
        (demand_xml("zzz"), "not a hexadecimal number"),
        (demand_xml("0x1122334455"), "does not fit in 32 bits"),
        ("[1, 2]", "one object"),
        ('{"a": 1, "b": 2}', "one object"),
        ('{"InstantaneousDemand": "0x1"}', "not an object"),
        ('<!DOCTYPE x [<!ENTITY a "aaaa">]><Error><Text>&a;</Text></Error>', "document type"),
        (DEVICE_LIST.format(status="Connected"), "holds no reading"),
        ("<Device><Name>x</Name></Device>", "without <DeviceDetails>"),
    ],
)
def test_it_classifies_broken_replies_as_malformed(text: str, reason: str) -> None:
    result = refused(text)
    assert result.failure_class is FailureClass.MALFORMED_REPLY
    assert reason in result.message


def test_it_refuses_a_reply_of_another_record_type_than_asked() -> None:
    result = refused(PRICE_XML, record_type="demand")
    assert result.failure_class is FailureClass.MALFORMED_REPLY
    assert "expected <InstantaneousDemand> for demand, got <PriceCluster>" in result.message


def test_it_reports_a_meter_that_is_not_joined_on_an_eagle200() -> None:
    text = EAGLE200_QUERY.format(status="Not joined", demand="0.000000", price="invalid")
    assert refused(text).failure_class is FailureClass.METER_NOT_JOINED


def test_it_keeps_only_the_start_of_a_huge_reply() -> None:
    result = refused("<" + "x" * 100_000)
    assert len(result.raw_reply) == 2000


# --- Judging readings -------------------------------------------------------------------------


def test_it_calls_a_repeated_meter_timestamp_stale() -> None:
    result = refused(demand_xml("0x00014d"), previous_timestamp=1539022451)
    assert result.failure_class is FailureClass.STALE_READING
    assert result.reading is not None and result.reading.values == {"demand_kw": 0.333}
    assert isinstance(
        decode_payload(demand_xml("0x00014d"), previous_timestamp=1539022450), Reading
    )


def test_it_distrusts_a_sudden_zero_but_believes_a_second_one() -> None:
    zero = demand_xml("0x000000")
    sudden = refused(zero, previous=PreviousReading(1539022440, {"demand_kw": 1.2}, True))
    assert sudden.failure_class is FailureClass.SUSPICIOUS_READING
    assert "sudden 0 kW" in sudden.message
    assert refused(zero).failure_class is FailureClass.SUSPICIOUS_READING
    # The same zero read again (same timestamp) is still the one failed read…
    again = refused(zero, previous=PreviousReading(1539022451, {"demand_kw": 0.0}, False))
    assert again.failure_class is FailureClass.SUSPICIOUS_READING
    # …but a zero after an earlier zero reading is a household that really uses nothing.
    assert decoded(zero, previous=PreviousReading(1539022440, {"demand_kw": 0.0}, False))


def test_it_distrusts_demand_beyond_the_limit(settings: Settings) -> None:
    settings.INGEST_MAX_DEMAND_KW = 50.0
    assert decoded(demand_xml("0x00c350")).values == {"demand_kw": 50.0}
    result = refused(demand_xml("0x00c351"))
    assert result.failure_class is FailureClass.SUSPICIOUS_READING
    assert "implausible demand of 50.001 kW" in result.message
    assert refused(demand_xml("0xff3caf")).failure_class is FailureClass.SUSPICIOUS_READING


def test_it_distrusts_meter_totals_that_go_down() -> None:
    previous = PreviousReading(1539022400, {"delivered_kwh": 50000.0, "received_kwh": 0.0}, True)
    result = refused(SUMMATION_XML, previous=previous)
    assert result.failure_class is FailureClass.SUSPICIOUS_READING
    assert "delivered_kwh went down" in result.message
    # Compared only with a total that was itself believed.
    assert decoded(SUMMATION_XML, previous=previous._replace(trusted=False))


# --- Properties -------------------------------------------------------------------------------


@given(st.text(max_size=400))
@settings(max_examples=300, deadline=None)
def test_it_never_raises_on_arbitrary_text(text: str) -> None:
    assert isinstance(decode_payload(text, "1"), Reading | FetchFailure)


TAGS = st.sampled_from(
    [
        "InstantaneousDemand", "CurrentSummation", "PriceCluster", "Error", "Text", "Device",
        "DeviceList", "DeviceDetails", "Variable", "Name", "Value", "LastContact", "Demand",
        "TimeStamp", "Multiplier", "Divisor", "Price", "TrailingDigits", "Currency", "Tier",
        "SummationDelivered", "SummationReceived", "ConnectionStatus", "rainforest",
    ]
)  # fmt: skip
LEAF_TEXT = st.one_of(
    st.from_regex(r"0x[0-9a-fA-F]{0,40}", fullmatch=True),
    st.sampled_from(
        ["", "Connected", "Not joined", "zigbee:InstantaneousDemand", "-1.5 kW", "nan"]
    ),
    st.text(alphabet="0123456789abcdefx.-+ eE", max_size=12),
)


@st.composite
def xml_trees(draw: Any, depth: int = 3) -> str:
    tag = draw(TAGS)
    if depth == 0 or draw(st.booleans()):
        return f"<{tag}>{draw(LEAF_TEXT)}</{tag}>"
    children = draw(st.lists(xml_trees(depth - 1), max_size=5))
    return f"<{tag}>{''.join(children)}</{tag}>"


@given(xml_trees(), st.integers(min_value=0, max_value=400))
@settings(max_examples=400, deadline=None)
def test_it_never_raises_on_xml_shaped_replies_whole_or_cut(text: str, cut: int) -> None:
    for candidate in (text, text[:cut]):
        for record_type in (None, "demand", "summation", "price"):
            result = decode_payload(candidate, "1", record_type=record_type)
            assert isinstance(result, Reading | FetchFailure)
            if isinstance(result, Reading):
                result.to_line()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | LEAF_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TAGS, inner, max_size=6),
    max_leaves=12,
)


@given(st.dictionaries(TAGS, JSON_VALUES, max_size=2))
@settings(max_examples=300, deadline=None)
def test_it_never_raises_on_json_replies(document: dict[str, Any]) -> None:
    # The standard library writes what orjson would refuse to: huge integers, NaN.
    result = decode_payload(json.dumps(document), "1")
    assert isinstance(result, Reading | FetchFailure)


@given(st.integers(min_value=-(1 << 23), max_value=(1 << 23) - 1))
def test_any_24_bit_demand_decodes_to_its_signed_value(watts: int) -> None:
    reading = decode_reply(demand_xml(f"0x{watts & 0xFFFFFF:06x}"), cloud_id="1")
    assert isinstance(reading, Reading)
    assert reading.values["demand_kw"] == watts / 1000


@given(
    st.integers(min_value=-(1 << 31), max_value=(1 << 31) - 1).filter(
        lambda n: not (1 << 23) <= n < (1 << 24)
    )
)
def test_any_32_bit_demand_decodes_to_its_signed_value(watts: int) -> None:
    # Positive values from 8,388.608 kW to 16,777.215 kW are read as zero-padded 24-bit
    # negatives instead (see test_it_reads_negative_demand_in_both_widths).
    reading = decode_reply(demand_xml(f"0x{watts & 0xFFFFFFFF:08x}"), cloud_id="1")
    assert isinstance(reading, Reading)
    assert reading.values["demand_kw"] == watts / 1000


@given(st.integers(min_value=0, max_value=(1 << 48) - 1), st.integers(0, (1 << 48) - 1))
def test_any_48_bit_summation_decodes_unsigned(delivered: int, received: int) -> None:
    text = SUMMATION_XML.replace("0x0000000002cb3ad2", f"0x{delivered:012x}").replace(
        "0x00000000000a1b2c", f"0x{received:016x}"
    )
    reading = decode_reply(text, cloud_id="1")
    assert isinstance(reading, Reading)
    assert reading.values == {"delivered_kwh": delivered / 1000, "received_kwh": received / 1000}


@given(st.integers(min_value=0, max_value=0xFFFFFFFF))
def test_any_meter_timestamp_counts_from_2000(seconds: int) -> None:
    text = demand_xml("0x00014d").replace("0x234e5af3", f"0x{seconds:08x}")
    reading = decode_reply(text, cloud_id="1")
    assert isinstance(reading, Reading)
    assert reading.meter_time == ZIGBEE_EPOCH + timedelta(seconds=seconds)
    assert reading.to_record()["meter_time"] == (
        ZIGBEE_EPOCH + timedelta(seconds=seconds)
    ).strftime("%Y-%m-%dT%H:%M:%SZ")
