"""Bodies that EAGLE gateways push in uploader mode, encoded by the simulator's meter models."""

from typing import Any

import orjson

from ingestion.eagle.simulator.meters import MODELS, Meter
from ingestion.eagle.simulator.replies import cloud_xml

METER = Meter.create(seed=7, index=0)


def fragment(
    record_type: str, meter_timestamp: int, raw: tuple[int, ...], meter: Meter = METER
) -> str:
    """One XML fragment of a record type, as the meter's firmware encodes `raw`."""
    model = MODELS[record_type]
    return cloud_xml(model.element, model.cloud_fields(meter, meter_timestamp, raw)).decode()


def truth(record_type: str, raw: tuple[int, ...], meter: Meter = METER) -> dict[str, Any]:
    """What a correct decoder makes of `raw`."""
    return MODELS[record_type].values(meter, raw)


def uploader_xml(*fragments: str, sent_at: int, meter: Meter = METER) -> bytes:
    head = (
        f'<?xml version="1.0"?>\n<rainforest macId="{meter.device_mac[:14]}" '
        f'version="undefined" timestamp="{sent_at}s">\n'
    )
    return (head + "".join(fragments) + "</rainforest>\n").encode()


def json_item(
    data_type: str, meter_timestamp: int, data: dict[str, Any], meter: Meter = METER
) -> dict[str, Any]:
    return {
        "timestamp": str(meter_timestamp * 1000),
        "subdeviceGuid": meter.meter_mac.removeprefix("0x"),
        "componentId": "all",
        "dataType": data_type,
        "data": data,
    }


def eagle200_json(*items: dict[str, Any], sent_at: int) -> bytes:
    return orjson.dumps(
        {"timestamp": str(sent_at * 1000), "deviceGuid": "d8d5b9000001", "body": list(items)}
    )
