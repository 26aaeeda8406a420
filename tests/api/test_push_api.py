"""POST /api/push/{cloud_id}: uploads from EAGLE gateways, end to end to the hour file."""

import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import time_machine
from django.conf import settings
from django.test import Client

from ingestion import hourfiles
from ingestion.eagle.record_types import record_json_schema
from ingestion.hourfiles import iter_records
from ingestion.models import FetchState, Incident
from ingestion.records import FailureClass
from tests.factories import EagleUserFactory
from tests.push_uploads import eagle200_json, fragment, json_item, truth, uploader_xml
from users.models import ConnectionType, EagleUser

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
T0 = int(NOW.timestamp()) - 60
URL = "/api/push/00a1b2"
# What the uploader sends: raw XML, labelled as a form.
UPLOADER_CONTENT_TYPE = "application/x-www-form-urlencoded"


@pytest.fixture(autouse=True)
def frozen() -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def user() -> EagleUser:
    household = EagleUserFactory(
        cloud_id="00a1b2", connection_type=ConnectionType.PUSH, eagle_password=""
    )
    household.ensure_fetch_state()
    return household


@pytest.fixture
def token(user: EagleUser) -> str:
    return user.issue_push_token()


def post(
    body: bytes,
    token: str | None = None,
    content_type: str = UPLOADER_CONTENT_TYPE,
    url: str = URL,
    **headers: str,
) -> Any:
    if token is not None:
        headers.setdefault("HTTP_AUTHORIZATION", f"Bearer {token}")
    return Client().post(url, data=body, content_type=content_type, **headers)


def hour_records() -> list[dict]:
    path = hourfiles.local_path("00a1b2", hourfiles.hour_floor(NOW))
    return list(iter_records(path)) if path.exists() else []


def nothing_written() -> bool:
    root = Path(settings.LOG_ROOT)
    return not root.exists() or not any(root.rglob("*.jl"))


def test_an_uploader_xml_push_lands_in_the_hour_file_once(token: str) -> None:
    body = uploader_xml(fragment("demand", T0, (1234,)), sent_at=T0 + 1)

    first = post(body, token)
    second = post(body, token)

    assert first.status_code == second.status_code == 202
    answer = first.json()
    assert answer["status"] == "accepted"
    assert answer["accepted"] == 1
    assert answer["readings"] == [
        {"record_type": "demand", "meter_timestamp": T0, "meter_time": "2026-03-01T12:29:00Z"}
    ]
    (record,) = hour_records()
    assert record["meter_timestamp"] == T0
    assert record["demand_kw"] == truth("demand", (1234,))["demand_kw"]
    assert record["source"] == "push"
    assert record["received_at"] == "2026-03-01T12:30:00Z"
    jsonschema.validate(record, record_json_schema())
    assert FetchState.objects.get(user__cloud_id="00a1b2").total_events_logged == 1


def test_an_eagle200_json_push_lands_in_the_hour_file_once(token: str) -> None:
    body = eagle200_json(
        json_item("InstantaneousDemand", T0, {"demand": 0.472, "units": "kW"}),
        json_item(
            "CurrentSummation",
            T0,
            {"summationDelivered": 36692.711, "summationReceived": 4.01, "units": "kWh"},
        ),
        sent_at=T0 + 1,
    )

    assert post(body, token, content_type="application/json").status_code == 202
    assert post(body, token, content_type="application/json").status_code == 202

    records = hour_records()
    assert [(r["record_type"], r["meter_timestamp"]) for r in records] == [
        ("demand", T0),
        ("summation", T0),
    ]
    assert records[0]["demand_kw"] == 0.472
    assert records[1]["delivered_kwh"] == 36692.711
    for record in records:
        jsonschema.validate(record, record_json_schema())


def test_a_push_reports_what_it_ignored(token: str) -> None:
    body = uploader_xml(
        "<NetworkInfo><Status>Connected</Status></NetworkInfo>\n",
        fragment("demand", T0, (500,)),
        sent_at=T0,
    )

    answer = post(body, token).json()

    assert answer["accepted"] == 1
    assert "<NetworkInfo>" in answer["ignored"][0]


def test_the_token_may_come_as_x_push_token_or_as_the_basic_auth_password(token: str) -> None:
    first = uploader_xml(fragment("demand", T0, (500,)), sent_at=T0)
    second = uploader_xml(fragment("demand", T0 + 9, (510,)), sent_at=T0)
    basic = base64.b64encode(f"00a1b2:{token}".encode()).decode()

    assert post(first, HTTP_X_PUSH_TOKEN=token).status_code == 202
    assert post(second, HTTP_AUTHORIZATION=f"Basic {basic}").status_code == 202
    assert len(hour_records()) == 2


GOOD_BODY = uploader_xml(fragment("demand", T0, (900,)), sent_at=T0)


@pytest.mark.parametrize(
    ("case", "status", "words"),
    [
        ("no token", 401, "no push token"),
        ("wrong token", 403, "not the push token"),
        ("another user's token", 403, "not the push token"),
        ("unknown user", 403, "not the push token of 0badbad"),
        ("polled user", 409, "not in push mode"),
        ("suspended user", 409, "suspended"),
        ("oversized body", 413, "larger than"),
        ("bad XML", 400, "broken XML"),
        ("bad JSON", 400, "broken JSON"),
        ("not XML or JSON", 415, "neither XML"),
        ("not UTF-8", 400, "not UTF-8"),
        ("unsupported fragment", 422, "nothing rainlog records"),
        ("undecodable fragment", 422, "no Demand field"),
    ],
)
def test_a_refused_push_gets_a_clear_reason_and_writes_nothing(
    user: EagleUser, token: str, case: str, status: int, words: str
) -> None:
    body, url, send_token = GOOD_BODY, URL, token
    if case == "no token":
        send_token = None
    elif case == "wrong token":
        send_token = token[:-2] + "xx"
    elif case == "another user's token":
        other = EagleUserFactory(
            cloud_id="00beef", connection_type=ConnectionType.PUSH, eagle_password=""
        )
        send_token = other.issue_push_token()
    elif case == "unknown user":
        url = "/api/push/0badbad"
    elif case == "polled user":
        EagleUser.objects.filter(pk=user.pk).update(connection_type=ConnectionType.CLOUD)
    elif case == "suspended user":
        user.suspend("Moved house.")
    elif case == "oversized body":
        body = GOOD_BODY + b" " * settings.PUSH_MAX_BODY_BYTES
    elif case == "bad XML":
        body = GOOD_BODY[: len(GOOD_BODY) // 2]
    elif case == "bad JSON":
        body = b'{"timestamp": "1", "body": [{'
    elif case == "not XML or JSON":
        body = b"demand=0.9"
    elif case == "not UTF-8":
        body = b"<rainforest>\xff\xfe</rainforest>"
    elif case == "unsupported fragment":
        body = uploader_xml("<MessageCluster><Text>Hello</Text></MessageCluster>\n", sent_at=T0)
    elif case == "undecodable fragment":
        body = uploader_xml(
            "<InstantaneousDemand><TimeStamp>0x1</TimeStamp></InstantaneousDemand>", sent_at=T0
        )

    response = post(body, send_token, url=url)

    assert response.status_code == status
    assert response["Content-Type"] == "application/problem+json"
    answer = response.json()
    assert (answer["status"], answer["code"]) == (status, "push_rejected")
    assert words in answer["detail"]
    assert nothing_written()
    if status == 401:
        assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_revoked_token_stops_working(user: EagleUser, token: str) -> None:
    user.revoke_push_token()

    response = post(GOOD_BODY, token)

    assert response.status_code == 403
    assert nothing_written()


def test_a_broken_push_from_an_authenticated_gateway_shows_in_its_state(
    user: EagleUser, token: str
) -> None:
    response = post(b"<rainforest><InstantaneousDemand>", token)

    assert response.status_code == 400
    state = FetchState.objects.get(user=user)
    assert state.last_error_class == FailureClass.MALFORMED_REPLY
    assert "broken XML" in state.last_error
    assert Incident.objects.get(user=user).failure_class == FailureClass.MALFORMED_REPLY

    assert post(GOOD_BODY, token).status_code == 202
    assert not Incident.objects.open().filter(user=user).exists()


def test_a_wrong_token_is_not_counted_against_the_gateway(user: EagleUser, token: str) -> None:
    post(GOOD_BODY, "rlp_guess")

    assert FetchState.objects.get(user=user).consecutive_failures == 0
    assert not Incident.objects.exists()


def test_operator_tokens_do_not_open_the_push_endpoint(
    operator_client: Any, user: EagleUser
) -> None:
    response = operator_client.post(URL, data=GOOD_BODY, content_type=UPLOADER_CONTENT_TYPE)

    assert response.status_code == 401
    assert nothing_written()
