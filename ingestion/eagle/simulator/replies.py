"""The bytes the simulated gateways send: cloud/legacy replies, EAGLE-200 replies, faults.

Shapes follow the Rainforest API documents and what public clients parse (see
docs/record-format.md, "Where readings come from").
"""

from __future__ import annotations

import functools
from xml.sax.saxutils import escape

import orjson

from ingestion.eagle.simulator.meters import Meter


def cloud_xml(element: str, fields: list[tuple[str, str]]) -> bytes:
    names, values = zip(*fields, strict=True)
    # One escape() over all the values, split again at NUL (which XML cannot hold): a new
    # reading is rendered on most requests, and escaping field by field cost more than the rest.
    escaped = escape("\0".join(values)).split("\0")
    return (_xml_layout(element, names) % tuple(escaped)).encode()


@functools.cache
def _xml_layout(element: str, names: tuple[str, ...]) -> str:
    """The reply with a %s for each field's value; the same few layouts serve every meter."""
    body = "".join(f"  <{name}>%s</{name}>\n" for name in names)
    return f"<{element}>\n{body}</{element}>\n"


def cloud_json(element: str, fields: list[tuple[str, str]]) -> bytes:
    return orjson.dumps({element: dict(fields)})


def error_reply(text: str, json: bool = False) -> bytes:
    if json:
        return orjson.dumps({"Error": {"Text": text}})
    return f"<Error>\n  <Text>{escape(text)}</Text>\n</Error>\n".encode()


def network_info(meter: Meter, model_id: str, json: bool = False) -> bytes:
    """A legacy EAGLE's get_network_info: its radio, firmware and model."""
    fields = [
        ("DeviceMacId", meter.device_mac),
        ("InstallCode", f"0x{meter.index + 1:016x}"),
        ("FWVersion", "1.4.48 (6952)"),
        ("HWVersion", "1.2.5"),
        ("Manufacturer", "Rainforest Automation, Inc."),
        ("ModelId", model_id),
        ("DateCode", "2014051823520701"),
        ("ImageType", "0x1301"),
        ("Protocol", "Zigbee"),
    ]
    return (cloud_json if json else cloud_xml)("NetworkInfo", fields)


def wrong_root(meter: Meter) -> bytes:
    return cloud_xml(
        "NetworkInfo",
        [
            ("DeviceMacId", meter.device_mac),
            ("CoordMacId", meter.meter_mac),
            ("Status", "Connected"),
            ("LinkStrength", "0x64"),
        ],
    )


HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>503 Service Temporarily Unavailable</title></head>\n"
    b"<body><h1>Service Temporarily Unavailable</h1><p>The server is temporarily unable to "
    b"service your request. Please try again later.</p></body></html>\n"
)


def _device_details(meter: Meter, last_contact: int, status: str) -> str:
    return (
        "<DeviceDetails>"
        "<Name>Power Meter</Name>"
        f"<HardwareAddress>{meter.meter_mac}</HardwareAddress>"
        "<Protocol>Zigbee</Protocol>"
        "<Manufacturer>Generic</Manufacturer>"
        "<ModelId>electric_meter</ModelId>"
        f"<LastContact>0x{last_contact:08x}</LastContact>"
        f"<ConnectionStatus>{status}</ConnectionStatus>"
        "<NetworkAddress>0x0000</NetworkAddress>"
        "</DeviceDetails>"
    )


def device_list(meter: Meter, last_contact: int, status: str) -> bytes:
    details = _device_details(meter, last_contact, status)
    # device_list lists the same fields as DeviceDetails, directly under Device.
    device = details.replace("DeviceDetails>", "Device>")
    return f"<DeviceList>{device}</DeviceList>\n".encode()


def device_query(
    meter: Meter, last_contact: int, status: str, variables: list[tuple[str, str, str]]
) -> bytes:
    rows = "".join(
        f"<Variable><Name>{name}</Name><Value>{escape(value)}</Value>"
        f"<Units>{escape(units)}</Units></Variable>"
        for name, value, units in variables
    )
    return (
        f"<Device>{_device_details(meter, last_contact, status)}"
        f"<Components><Component><Name>Main</Name><Variables>{rows}</Variables>"
        f"</Component></Components></Device>\n"
    ).encode()
