"""Push ingestion: decoding uploader XML and EAGLE-200 JSON, and logging each reading once."""

import io
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from hypothesis import given, settings
from hypothesis import strategies as st

from ingestion import hourfiles
from ingestion.hourfiles import iter_records
from ingestion.models import FetchState, Incident, IncidentState
from ingestion.push import (
    PushRejectedError,
    ingest_readings,
    parse_push,
    token_from_headers,
)
from ingestion.records import FailureClass, Reading
from tests.factories import EagleUserFactory
from tests.push_uploads import (
    METER,
    eagle200_json,
    fragment,
    json_item,
    truth,
    uploader_xml,
)
from users.models import ConnectionType

NOW = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
T0 = int(NOW.timestamp()) - 60


def push_user(**over: Any) -> Any:
    fields = {
        "cloud_id": "00a1b2",
        "connection_type": ConnectionType.PUSH,
        "eagle_password": "",
        **over,
    }
    user = EagleUserFactory(**fields)
    user.ensure_fetch_state()
    return user


def parse(body: bytes, meter_mac: str = "") -> list[Reading]:
    return parse_push(body.decode(), "00a1b2", NOW, meter_mac).readings


def hour_records(cloud_id: str = "00a1b2", hour: datetime = NOW) -> list[dict]:
    path = hourfiles.local_path(cloud_id, hourfiles.hour_floor(hour))
    return list(iter_records(path)) if path.exists() else []


# --- Decoding ---------------------------------------------------------------------------------


def test_it_decodes_an_uploader_xml_push_with_the_shared_decoders() -> None:
    (reading,) = parse(uploader_xml(fragment("demand", T0, (1234,)), sent_at=T0 + 2))

    assert reading.record_type == "demand"
    assert reading.meter_timestamp == T0
    assert reading.values == truth("demand", (1234,)) == {"demand_kw": 1.234}
    assert reading.source == "push"
    assert reading.received_at == NOW
    assert reading.raw["MeterMacId"] == METER.meter_mac


def test_it_decodes_negative_demand_of_a_solar_household() -> None:
    (reading,) = parse(uploader_xml(fragment("demand", T0, (-2500,)), sent_at=T0))

    assert reading.values["demand_kw"] == -2.5


def test_it_takes_every_reading_fragment_and_ignores_fragments_without_readings() -> None:
    network_info = "<NetworkInfo>\n<Status>Connected</Status>\n</NetworkInfo>\n"
    body = uploader_xml(
        network_info,
        fragment("demand", T0, (800,)),
        fragment("summation", T0 + 1, (12_345_678, 9_000)),
        fragment("price", T0 + 2, (1893, 1)),
        sent_at=T0 + 3,
    )

    parsed = parse_push(body.decode(), "00a1b2", NOW)

    assert [r.record_type for r in parsed.readings] == ["demand", "summation", "price"]
    assert parsed.readings[1].values == {"delivered_kwh": 12345.678, "received_kwh": 9.0}
    assert parsed.readings[2].values == truth("price", (1893, 1))
    assert len(parsed.ignored) == 1 and "<NetworkInfo>" in parsed.ignored[0]


def test_it_decodes_eagle200_json_with_millisecond_timestamps_and_units() -> None:
    body = eagle200_json(
        json_item("InstantaneousDemand", T0, {"demand": 472, "units": "W"}),
        json_item(
            "CurrentSummation",
            T0 + 5,
            {"summationDelivered": 36692.711, "summationReceived": 4.01, "units": "kWh"},
        ),
        json_item("Price", T0 + 9, {"price": 0.0884, "currency": "0x0348", "units": "USD/kWh"}),
        json_item("Message", T0, {"text": "Registration Successful"}),
        sent_at=T0 + 10,
    )

    parsed = parse_push(body.decode(), "00a1b2", NOW)

    demand, summation, price = parsed.readings
    assert (demand.meter_timestamp, demand.values) == (T0, {"demand_kw": 0.472})
    assert summation.values == {"delivered_kwh": 36692.711, "received_kwh": 4.01}
    assert price.values == {"price": 0.0884, "currency": "USD", "tier": None}
    assert all(reading.source == "push" for reading in parsed.readings)
    assert demand.raw["subdeviceGuid"] == METER.meter_mac.removeprefix("0x")
    assert "Message" in parsed.ignored[0]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"", 400, "empty"),
        (b"<rainforest><InstantaneousDemand><Demand>0x01", 400, "broken XML"),
        (b'{"body": [', 400, "broken JSON"),
        (b"demand=1.2&time=now", 415, "neither XML"),
        (
            b'<!DOCTYPE r [<!ENTITY a "aaaa">]><rainforest>&a;</rainforest>',
            400,
            "document type declaration",
        ),
        (
            b"<NetworkInfo><Status>Connected</Status></NetworkInfo>",
            422,
            "expected an uploader push",
        ),
        (
            uploader_xml("<DeviceInfo><ModelId>Z109</ModelId></DeviceInfo>\n", sent_at=T0),
            422,
            "nothing rainlog records",
        ),
        (uploader_xml(sent_at=T0), 422, "nothing rainlog records"),
        (b'{"timestamp": "1"}', 422, "or an EAGLE-200 push"),
        (
            eagle200_json(
                json_item("InstantaneousDemand", T0, {"demand": 1.0, "units": "MW"}), sent_at=T0
            ),
            422,
            "units 'MW'",
        ),
        (
            eagle200_json(json_item("InstantaneousDemand", T0, {"demand": "lots"}), sent_at=T0),
            422,
            "not a number",
        ),
        (
            uploader_xml(
                "<InstantaneousDemand><TimeStamp>0x3120e100</TimeStamp></InstantaneousDemand>",
                sent_at=T0,
            ),
            422,
            "no Demand field",
        ),
        (
            uploader_xml(fragment("demand", T0 + 3 * 86400, (500,)), sent_at=T0),
            422,
            "too far from ours",
        ),
    ],
)
def test_it_refuses_a_push_it_cannot_decode_with_a_status_and_a_reason(
    body: bytes, status: int, words: str
) -> None:
    with pytest.raises(PushRejectedError) as refused:
        parse(body)

    assert refused.value.status == status
    assert words in refused.value.message


def test_it_refuses_a_whole_push_when_one_of_its_fragments_is_broken() -> None:
    body = uploader_xml(
        fragment("demand", T0, (800,)),
        "<CurrentSummationDelivered><TimeStamp>0x1</TimeStamp></CurrentSummationDelivered>",
        sent_at=T0,
    )

    with pytest.raises(PushRejectedError) as refused:
        parse(body)

    assert refused.value.status == 422
    assert "<CurrentSummationDelivered>" in refused.value.message


def test_it_refuses_readings_of_another_meter_than_the_users() -> None:
    body = uploader_xml(fragment("demand", T0, (800,)), sent_at=T0)

    assert parse(body, meter_mac=METER.meter_mac.upper().replace("0X", ""))
    with pytest.raises(PushRejectedError, match="not from this user's meter"):
        parse(body, meter_mac="0x00135000000000ff")


# --- Ingesting --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_logs_each_reading_once_however_often_it_is_pushed() -> None:
    user = push_user()
    readings = parse(
        uploader_xml(
            fragment("demand", T0, (1234,)), fragment("summation", T0, (5000, 0)), sent_at=T0
        )
    )

    first = ingest_readings(user, readings, NOW)
    again = ingest_readings(user, readings, NOW + timedelta(seconds=8))

    assert (first.written, first.duplicates) == (2, 0)
    assert (again.written, again.duplicates) == (0, 2)
    records = hour_records()
    assert [(r["record_type"], r["meter_timestamp"]) for r in records] == [
        ("demand", T0),
        ("summation", T0),
    ]
    assert records[0]["demand_kw"] == 1.234 and records[0]["source"] == "push"
    state = FetchState.objects.get(user=user)
    assert state.total_events_logged == 2
    assert state.last_timestamp == T0 == state.first_timestamp
    assert state.extra_timestamps == {"summation": T0}
    assert state.last_success_at == NOW + timedelta(seconds=8)


@pytest.mark.django_db
def test_it_logs_a_resent_older_reading_once_and_an_unseen_older_one_too() -> None:
    user = push_user()
    older, newer, unseen = (
        parse(uploader_xml(fragment("demand", ts, (700,)), sent_at=ts))[0]
        for ts in (T0, T0 + 9, T0 - 30)
    )
    ingest_readings(user, [older], NOW)
    ingest_readings(user, [newer], NOW)

    resent = ingest_readings(user, [older], NOW)
    # A meter clock set back: older than the last reading, yet never logged.
    late = ingest_readings(user, [unseen], NOW)

    assert (resent.written, resent.duplicates) == (0, 1)
    assert (late.written, late.duplicates) == (1, 0)
    assert sorted(r["meter_timestamp"] for r in hour_records()) == [T0 - 30, T0, T0 + 9]
    assert FetchState.objects.get(user=user).last_timestamp == T0 + 9


@pytest.mark.django_db
def test_it_refuses_a_sudden_zero_as_the_poller_does_and_resolves_the_incident_later() -> None:
    user = push_user()
    zero = parse(uploader_xml(fragment("demand", T0, (0,)), sent_at=T0))

    refused = ingest_readings(user, zero, NOW)

    assert refused.written == 0 and "sudden 0 kW" in refused.refused[0]
    assert hour_records() == []
    incident = Incident.objects.get(user=user)
    assert incident.failure_class == FailureClass.SUSPICIOUS_READING
    state = FetchState.objects.get(user=user)
    assert state.last_error_class == FailureClass.SUSPICIOUS_READING
    assert state.consecutive_failures == 1

    ingest_readings(user, parse(uploader_xml(fragment("demand", T0 + 9, (650,)), sent_at=T0)), NOW)

    incident.refresh_from_db()
    assert incident.state == IncidentState.RESOLVED
    assert FetchState.objects.get(user=user).consecutive_failures == 0


@pytest.mark.django_db
def test_it_writes_nothing_for_a_user_suspended_after_its_push_was_accepted() -> None:
    user = push_user()
    readings = parse(uploader_xml(fragment("demand", T0, (900,)), sent_at=T0))
    user.suspend("Being deleted together with its data.")

    result = ingest_readings(user, readings, NOW)

    assert result.written == 0 and "no longer takes pushes" in result.refused[0]
    assert not Path(hourfiles.hour_dir(NOW)).exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_pushes_for_one_user_never_log_a_reading_twice() -> None:
    user = push_user()
    readings = parse(
        uploader_xml(*(fragment("demand", T0 + 9 * i, (600 + i,)) for i in range(5)), sent_at=T0)
    )
    start = threading.Barrier(4)
    results = []

    def push_all() -> None:
        try:
            start.wait()
            results.append(ingest_readings(user, readings, NOW))
        finally:
            connection.close()

    threads = [threading.Thread(target=push_all) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sum(result.written for result in results) == 5
    assert sum(result.duplicates for result in results) == 15
    assert sorted(r["meter_timestamp"] for r in hour_records()) == [T0 + 9 * i for i in range(5)]
    assert FetchState.objects.get(user=user).total_events_logged == 5


# --- Push tokens ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_push_token_is_shown_once_and_only_its_hash_is_kept() -> None:
    user = push_user()

    token = user.issue_push_token()

    user.refresh_from_db()
    assert token.startswith("rlp_") and len(token) > 40
    assert token not in user.push_token_hash
    assert user.check_push_token(token)
    assert not user.check_push_token(token + "x")
    assert not user.check_push_token("")


@pytest.mark.django_db
def test_issuing_a_new_push_token_retires_the_old_one_and_revoking_retires_both() -> None:
    user = push_user()
    old = user.issue_push_token()
    new = user.issue_push_token()

    assert not user.check_push_token(old) and user.check_push_token(new)
    assert user.revoke_push_token()
    user.refresh_from_db()
    assert not user.check_push_token(new)
    assert user.push_token_issued_at is None
    assert not user.revoke_push_token()


@pytest.mark.parametrize(
    ("headers", "token"),
    [
        ({"Authorization": "Bearer rlp_abc"}, "rlp_abc"),
        ({"Authorization": "bearer  rlp_abc "}, "rlp_abc"),
        ({"X-Push-Token": "rlp_abc"}, "rlp_abc"),
        # What an EAGLE's uploader settings send: user name and password as HTTP Basic.
        ({"Authorization": "Basic " + "MDBhMWIyOnJscF9hYmM="}, "rlp_abc"),
        ({"Authorization": "Basic not-base64!"}, ""),
        ({"Authorization": "Token rlp_abc"}, ""),
        ({}, ""),
    ],
)
def test_it_reads_the_push_token_from_the_headers_an_uploader_can_send(
    headers: dict[str, str], token: str
) -> None:
    assert token_from_headers(headers) == token


@pytest.mark.django_db
def test_push_token_command_issues_a_working_token_and_revokes_it() -> None:
    user = push_user()
    output = io.StringIO()

    call_command("push_token", "00a1b2", "--issue", stdout=output)

    token = next(line for line in output.getvalue().splitlines() if line.startswith("rlp_"))
    user.refresh_from_db()
    assert user.check_push_token(token)
    assert "/api/push/00a1b2" in output.getvalue()

    call_command("push_token", "00a1b2", "--revoke", stdout=output)

    user.refresh_from_db()
    assert not user.check_push_token(token)
    assert "revoked" in output.getvalue()


@pytest.mark.django_db
def test_push_token_command_warns_when_the_user_is_polled_and_fails_for_unknown_users() -> None:
    EagleUserFactory(cloud_id="00c0de")
    output = io.StringIO()

    call_command("push_token", "00c0de", "--issue", stdout=output)

    assert "not in push mode" in output.getvalue()
    with pytest.raises(CommandError, match="No user"):
        call_command("push_token", "0bad", "--issue")


@pytest.mark.django_db
def test_the_admin_issues_a_token_shown_once_on_an_uncached_page_and_revokes_it(
    admin_client: Client,
) -> None:
    user = push_user()
    changelist = "/admin/users/eagleuser/"

    page = admin_client.post(
        changelist, {"action": "issue_push_tokens", "_selected_action": [user.pk]}
    )

    assert page.status_code == 200
    assert "no-store" in page["Cache-Control"]
    html = page.content.decode()
    token = html.split("<code>rlp_", 1)[1].split("</code>", 1)[0]
    user.refresh_from_db()
    assert user.check_push_token("rlp_" + token)
    assert "/api/push/00a1b2" in html

    admin_client.post(changelist, {"action": "revoke_push_tokens", "_selected_action": [user.pk]})

    user.refresh_from_db()
    assert not user.check_push_token("rlp_" + token)
    change_page = admin_client.get(f"{changelist}{user.pk}/change/").content.decode()
    assert "push_token_hash" not in change_page


JSON_LEAVES = (
    st.none()
    | st.booleans()
    # JSON integers are 64-bit.
    | st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["kW", "W", "kWh", "0x0348", "USD", "1772368140000", "-1", "1e400"])
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
JSON_DATA = st.dictionaries(
    st.sampled_from(
        ["demand", "units", "summationDelivered", "summationReceived", "price", "currency", "tier"]
    ),
    JSON_VALUES,
    max_size=4,
)
JSON_PUSH_ITEMS = st.fixed_dictionaries(
    {
        "dataType": st.sampled_from(["InstantaneousDemand", "CurrentSummation", "Price", "Message"])
        | JSON_VALUES,
        "timestamp": st.sampled_from([str(T0 * 1000), T0 * 1000]) | JSON_VALUES,
        "data": JSON_DATA | JSON_VALUES,
    }
)


@given(st.lists(JSON_PUSH_ITEMS, max_size=3))
@settings(max_examples=300, deadline=None)
def test_any_eagle200_shaped_push_is_decoded_or_refused_with_a_status(items: list[Any]) -> None:
    text = orjson.dumps({"timestamp": "1", "body": items}).decode()
    try:
        parsed = parse_push(text, "00a1b2", NOW)
    except PushRejectedError as refused:
        assert refused.status in (400, 422)
    else:
        for reading in parsed.readings:
            reading.to_line()


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_any_text_is_decoded_or_refused_with_a_status(text: str) -> None:
    try:
        parse_push(text, "00a1b2", NOW)
    except PushRejectedError as refused:
        assert refused.status in (400, 415, 422)
