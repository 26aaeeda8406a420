"""The payload playground (/dev/playground): paste a raw EAGLE reply, see what rainlog makes of it."""

from __future__ import annotations

import orjson
from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from ingestion.eagle.decoders import decode_payload
from ingestion.eagle.record_types import RECORD_TYPES
from ingestion.records import FetchFailure, Source
from users.cloud_ids import cloud_id_validator, lower_if_text

MAX_PAYLOAD_CHARS = 200_000

# Reply shapes from the protocol documents, to start from.
EXAMPLES = {
    "cloud-xml": (
        "Cloud reply, XML (export at midday)",
        "<InstantaneousDemand>\n"
        "  <DeviceMacId>0xd8d5b9000000f8bc</DeviceMacId>\n"
        "  <MeterMacId>0x00135003005dba2b</MeterMacId>\n"
        "  <TimeStamp>0x2f0a1b2c</TimeStamp>\n"
        "  <Demand>0xfffb1e</Demand>\n"
        "  <Multiplier>0x00000001</Multiplier>\n"
        "  <Divisor>0x000003e8</Divisor>\n"
        "  <DigitsRight>0x03</DigitsRight>\n"
        "  <DigitsLeft>0x0f</DigitsLeft>\n"
        "  <SuppressLeadingZero>Y</SuppressLeadingZero>\n"
        "</InstantaneousDemand>\n",
    ),
    "cloud-json": (
        "Cloud reply, JSON (summation)",
        '{"CurrentSummation": {"DeviceMacId": "0xd8d5b9000000f8bc", '
        '"MeterMacId": "0x00135003005dba2b", "TimeStamp": "0x2f0a1b2c", '
        '"SummationDelivered": "0x0000000002cb3ad2", "SummationReceived": "0x00000000000a1b2c", '
        '"Multiplier": "0x00000001", "Divisor": "0x000003e8"}}',
    ),
    "eagle200": (
        "EAGLE-200 device_query",
        "<Device><DeviceDetails><Name>Power Meter</Name>"
        "<HardwareAddress>0x001350050047376f</HardwareAddress><ModelId>electric_meter</ModelId>"
        "<LastContact>0x6a1b2c3d</LastContact><ConnectionStatus>Connected</ConnectionStatus>"
        "</DeviceDetails><Components><Component><Name>Main</Name><Variables>\n"
        "<Variable><Name>zigbee:InstantaneousDemand</Name><Value>1.965000</Value>"
        "<Units>kW</Units></Variable>\n"
        "</Variables></Component></Components></Device>\n",
    ),
    "eagle200-upload": (
        "EAGLE-200 push (JSON upload)",
        '{"timestamp": "1772366400000", "deviceGuid": "d8d5b9000001", "body": [\n'
        '  {"timestamp": "1772366395000", "subdeviceGuid": "001350050047376f", '
        '"componentId": "all", "dataType": "InstantaneousDemand", '
        '"data": {"demand": 0.472, "units": "kW"}}\n]}\n',
    ),
    "cgi-manager": (
        "Legacy cgi_manager get_usage_data (local time)",
        '{"meter_status": "Connected", "demand": "0.4980", "demand_units": "kW", '
        '"demand_timestamp": "1394505386", "summation_received": "37.283", '
        '"summation_delivered": "2667.867", "summation_units": "kWh", '
        '"usage_timestamp": "1394505386", "timezone_localTime": "1394502011", '
        '"timezone_utcTime": "1394527211", "timezone_utcOffset": "UTC-07:00"}\n',
    ),
    "error": (
        "Cloud Error reply",
        "<Error>\n  <Text>Invalid user name or password</Text>\n</Error>\n",
    ),
}


class PayloadForm(forms.Form):
    payload = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 16, "cols": 100, "spellcheck": "false"}),
        max_length=MAX_PAYLOAD_CHARS,
        strip=False,
        help_text="A raw reply: cloud or legacy XML/JSON, legacy cgi_manager JSON, EAGLE-200 XML, "
        "or a push upload (uploader XML or EAGLE-200 JSON).",
    )
    cloud_id = forms.CharField(
        validators=[cloud_id_validator],
        strip=False,
        required=False,
        help_text="Optional: the gateway's cloud_id, to see the full record.",
    )
    record_type = forms.ChoiceField(
        choices=[("", "from the reply")] + [(name, name) for name in sorted(RECORD_TYPES)],
        required=False,
    )
    source = forms.ChoiceField(
        choices=[("", "from the reply")] + [(source.value, source.value) for source in Source],
        required=False,
    )


@login_required
def playground(request: HttpRequest) -> HttpResponse:
    # A development tool: staff only, and in production only where PLAYGROUND_ENABLED says so.
    if not settings.PLAYGROUND_ENABLED:
        raise Http404("The playground is off (PLAYGROUND_ENABLED).")
    if not request.user.is_staff:
        raise PermissionDenied("The playground is for staff operators.")
    result = None
    if request.method == "POST":
        form = PayloadForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            result = decode_payload(
                data["payload"],
                cloud_id=lower_if_text(data["cloud_id"]),
                source=data["source"] or None,
                record_type=data["record_type"] or None,
            )
    else:
        example = EXAMPLES.get(request.GET.get("example", ""))
        form = PayloadForm(initial={"payload": example[1]} if example else None)
    reading = result.reading if isinstance(result, FetchFailure) else result
    context = {
        **admin.site.each_context(request),
        "title": "Payload playground",
        "form": form,
        "failure": result if isinstance(result, FetchFailure) else None,
        "record": _pretty(reading.to_record()) if reading is not None else "",
        "line": reading.to_line().decode() if reading is not None else "",
        "examples": [(key, label) for key, (label, _) in EXAMPLES.items()],
    }
    return render(request, "ingestion/playground.html", context)


def _pretty(record: dict[str, object]) -> str:
    return orjson.dumps(record, option=orjson.OPT_INDENT_2).decode()
