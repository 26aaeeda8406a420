"""Reply shapes and uploads as real gateways send them (documented by Rainforest, carried by
public clients' code and tests, reported in bug threads), each decoded by `decode_payload` to the
right kW and UTC time; and the same upload decodes the same through push and decode_payload."""

from datetime import UTC, datetime

import pytest

from ingestion.eagle.decoders import decode_payload
from ingestion.push import parse_push
from ingestion.records import FailureClass, FetchFailure, Reading, iso_utc

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)

# A legacy EAGLE's local API answering eagle100's <Format>JSON</Format> command.
LEGACY_JSON_DEMAND = """{"InstantaneousDemand": {"DeviceMacId": "0xd8d5b900000054a2",
"MeterMacId": "0x00135003004c6e29", "TimeStamp": "0x1c5de3b6", "Demand": "0x0003a0",
"Multiplier": "0x00000001", "Divisor": "0x000003e8", "DigitsRight": "0x03",
"DigitsLeft": "0x06", "SuppressLeadingZero": "Y"}}"""

# The same reply in XML, with a declaration and CRLF line ends.
LEGACY_XML_DEMAND = (
    '<?xml version="1.0" encoding="UTF-8"?>\r\n<InstantaneousDemand>\r\n'
    "<DeviceMacId>0xd8d5b900000054a2</DeviceMacId>\r\n<MeterMacId>0x00135003004c6e29</MeterMacId>\r\n"
    "<TimeStamp>0x1c5de3b6</TimeStamp>\r\n<Demand>0xfffffb1e</Demand>\r\n"
    "<Multiplier>0x00000001</Multiplier>\r\n<Divisor>0x000003e8</Divisor>\r\n"
    "<DigitsRight>0x03</DigitsRight>\r\n<DigitsLeft>0x06</DigitsLeft>\r\n"
    "<SuppressLeadingZero>Y</SuppressLeadingZero>\r\n</InstantaneousDemand>\r\n"
)

# A legacy summation whose firmware sends 24-bit negative zero-padded demand elsewhere; here the
# total counts in watt-hours (Divisor 1000 makes it kWh).
LEGACY_SUMMATION = """<CurrentSummationDelivered>
<DeviceMacId>0xabcdef1234567901</DeviceMacId><MeterMacId>0xabcdef1234567901</MeterMacId>
<TimeStamp>0x21443fe2</TimeStamp><SummationDelivered>0x00000000061cbd97</SummationDelivered>
<SummationReceived>0x0000000000000054</SummationReceived><Multiplier>0x00000001</Multiplier>
<Divisor>0x000003e8</Divisor><DigitsRight>0x01</DigitsRight><DigitsLeft>0x06</DigitsLeft>
<SuppressLeadingZero>Y</SuppressLeadingZero></CurrentSummationDelivered>"""

# An EAGLE-200 device_query of all components (as Home Assistant's aioeagle asks), whose firmware
# writes a bare & in a description.
EAGLE200_ALL = """<Device>
<DeviceDetails><Name>Power Meter</Name><HardwareAddress>0x00135005000f59de</HardwareAddress>
<Protocol>Zigbee</Protocol><Manufacturer>Generic</Manufacturer><ModelId>electric_meter</ModelId>
<LastContact>0x611d885a</LastContact><ConnectionStatus>Connected</ConnectionStatus>
<NetworkAddress>0x0000</NetworkAddress></DeviceDetails>
<Components><Component><HardwareId>0x0</HardwareId><FixedId>0</FixedId><Name>Main</Name>
<Variables>
<Variable><Name>zigbee:InstantaneousDemand</Name><Value>-0.734000</Value><Units>kW</Units>
<Description>Instantaneous Demand (Power & Light)</Description></Variable>
<Variable><Name>zigbee:CurrentSummationDelivered</Name><Value>23003.621000</Value><Units>kWh</Units>
<Description>Total Meter Delivered</Description></Variable>
<Variable><Name>zigbee:CurrentSummationReceived</Name><Value>3042.908000</Value><Units>kWh</Units>
<Description>Total Meter Received</Description></Variable>
<Variable><Name>zigbee:Price</Name><Value>0.112900</Value><Units>USD/kWh</Units></Variable>
<Variable><Name>zigbee:PriceCurrency</Name><Value>USD</Value></Variable>
<Variable><Name>zigbee:PriceTier</Name><Value>2</Value></Variable>
<Variable><Name>zigbee:Message</Name><Value>Rate change &amp; notice</Value></Variable>
</Variables></Component></Components></Device>"""

# An uploader's push as the EAGLE's "cloud provider" setting sends it: several fragments, most
# without a reading.
UPLOADER_PUSH = """<?xml version="1.0"?><rainforest macId="0xabcdef123456" version="undefined" timestamp="1504805914s">
<DeviceInfo><DeviceMacId>0xabcdef1234567901</DeviceMacId><InstallCode>0x1234567890abcdef</InstallCode>
<FWVersion>1.4.48 (6952)</FWVersion><ModelId>Z109-EAGLE</ModelId></DeviceInfo>
<InstantaneousDemand><DeviceMacId>0xabcdef1234567901</DeviceMacId>
<MeterMacId>0xabcdef1234567901</MeterMacId><TimeStamp>0x21443fe2</TimeStamp><Demand>0xfffb1e</Demand>
<Multiplier>0x00000001</Multiplier><Divisor>0x000003e8</Divisor><DigitsRight>0x03</DigitsRight>
<DigitsLeft>0x0f</DigitsLeft><SuppressLeadingZero>Y</SuppressLeadingZero></InstantaneousDemand>
</rainforest>"""

# An EAGLE-200's JSON upload.
EAGLE200_UPLOAD = """{"timestamp": "1539632334000", "deviceGuid": "d8d5b9000000b29c",
"body": [{"timestamp": "1539632322000", "subdeviceGuid": "00135003004c6e29",
"componentId": "all", "dataType": "InstantaneousDemand", "data": {"demand": 472, "units": "W"}},
{"timestamp": "1539632322000", "subdeviceGuid": "00135003004c6e29", "componentId": "all",
"dataType": "CurrentSummation", "data": {"summationDelivered": 36692.711,
"summationReceived": 4.01, "units": "kWh"}}]}"""

# A legacy EAGLE's cgi_manager get_usage_data, with the gateway's time zone (Pacific daylight
# time, UTC-7): demand_timestamp is its local clock read as Unix seconds.
CGI_USAGE = """{"meter_status": "Connected", "demand": "0.4980", "demand_units": "kW",
"demand_timestamp": "1394505386", "summation_received": "37.283",
"summation_delivered": "2667.867", "summation_units": "kWh", "usage_timestamp": "1394505386",
"price": "0.1400", "price_units": "$", "price_label": "Set by User",
"message_timestamp": "946684800", "message_text": "", "message_confirmed": "N",
"message_confirm_required": "N", "message_id": "0", "message_queue": "active",
"message_priority": "", "message_read": "Y",
"timezone_localTime": "1394502011", "timezone_utcTime": "1394527211",
"timezone_olsonName": "America/Los_Angeles"}"""


@pytest.mark.parametrize(
    ("reply", "record_type", "source", "values", "meter_time"),
    [
        (LEGACY_JSON_DEMAND, None, "cloud", {"demand_kw": 0.928}, "2015-01-30T06:39:50Z"),
        (LEGACY_XML_DEMAND, None, "cloud", {"demand_kw": -1.25}, "2015-01-30T06:39:50Z"),
        (
            LEGACY_SUMMATION,
            None,
            "cloud",
            {"delivered_kwh": 102546.839, "received_kwh": 0.084},
            "2017-09-07T17:35:30Z",
        ),
        (EAGLE200_ALL, None, "eagle200", {"demand_kw": -0.734}, "2021-08-18T22:23:22Z"),
        (
            EAGLE200_ALL,
            "summation",
            "eagle200",
            {"delivered_kwh": 23003.621, "received_kwh": 3042.908},
            "2021-08-18T22:23:22Z",
        ),
        (
            EAGLE200_ALL,
            "price",
            "eagle200",
            {"price": 0.1129, "currency": "USD", "tier": 2},
            "2021-08-18T22:23:22Z",
        ),
        (UPLOADER_PUSH, None, "push", {"demand_kw": -1.25}, "2017-09-07T17:35:30Z"),
        (EAGLE200_UPLOAD, None, "push", {"demand_kw": 0.472}, "2018-10-15T19:38:42Z"),
        (
            EAGLE200_UPLOAD,
            "summation",
            "push",
            {"delivered_kwh": 36692.711, "received_kwh": 4.01},
            "2018-10-15T19:38:42Z",
        ),
        (CGI_USAGE, None, "legacy", {"demand_kw": 0.498}, "2014-03-11T09:36:26Z"),
        (
            CGI_USAGE,
            "summation",
            "legacy",
            {"delivered_kwh": 2667.867, "received_kwh": 37.283},
            "2014-03-11T09:36:26Z",
        ),
        (
            CGI_USAGE.replace(
                '"timezone_localTime": "1394502011", "timezone_utcTime": "1394527211"',
                '"timezone_utcOffset": "UTC-07:00"',
            ),
            None,
            "legacy",
            {"demand_kw": 0.498},
            "2014-03-11T09:36:26Z",
        ),
        (
            CGI_USAGE.replace(
                '"demand": "0.4980", "demand_units": "kW"', '"demand": "-1250", "demand_units": "W"'
            ),
            None,
            "legacy",
            {"demand_kw": -1.25},
            "2014-03-11T09:36:26Z",
        ),
    ],
)
def test_it_decodes_each_real_shape_to_the_right_value_and_utc_time(
    reply: str, record_type: str | None, source: str, values: dict, meter_time: str
) -> None:
    reading = decode_payload(reply, cloud_id="00a1b2", record_type=record_type, received_at=NOW)

    assert isinstance(reading, Reading), reading
    assert reading.values == pytest.approx(values)
    assert iso_utc(reading.meter_time) == meter_time
    assert reading.source == source
    assert reading.cloud_id == "00a1b2"


def test_a_cgi_manager_reply_without_its_time_zone_is_refused_clearly() -> None:
    reply = CGI_USAGE.replace(
        ',\n"timezone_localTime": "1394502011", "timezone_utcTime": "1394527211",\n'
        '"timezone_olsonName": "America/Los_Angeles"',
        "",
    )

    failure = decode_payload(reply, cloud_id="00a1b2")

    assert isinstance(failure, FetchFailure)
    assert failure.failure_class is FailureClass.MALFORMED_REPLY
    assert "local time" in failure.message and "timezone_localTime" in failure.message


def test_a_cgi_manager_reply_of_a_lost_meter_is_not_joined() -> None:
    failure = decode_payload(CGI_USAGE.replace('"Connected"', '"Not joined"'), cloud_id="00a1b2")

    assert isinstance(failure, FetchFailure)
    assert failure.failure_class is FailureClass.METER_NOT_JOINED


@pytest.mark.parametrize(
    "broken",
    [
        EAGLE200_ALL[: len(EAGLE200_ALL) // 2],
        EAGLE200_ALL[: EAGLE200_ALL.index("Power & Light") + 9],
        EAGLE200_ALL.replace("</Variables>", "</Variable>"),
        EAGLE200_ALL.replace("<Value>-0.734000</Value>", "<Value>-0.734000</Valu>"),
        UPLOADER_PUSH.replace("</rainforest>", ""),
    ],
)
def test_a_bare_ampersand_is_tolerated_but_a_truncated_or_garbled_reply_is_not(
    broken: str,
) -> None:
    failure = decode_payload(broken, cloud_id="00a1b2")

    assert isinstance(failure, FetchFailure)
    assert failure.failure_class is FailureClass.MALFORMED_REPLY
    assert "broken XML" in failure.message


def test_an_upload_decodes_the_same_through_push_and_decode_payload() -> None:
    received = datetime(2018, 10, 15, 19, 40, tzinfo=UTC)
    for upload in (UPLOADER_PUSH, EAGLE200_UPLOAD):
        moment = received if upload is EAGLE200_UPLOAD else datetime(2017, 9, 7, 17, 40, tzinfo=UTC)
        pushed = parse_push(upload, "00a1b2", moment).readings[0]
        decoded = decode_payload(upload, cloud_id="00a1b2", received_at=moment)

        assert decoded == pushed
