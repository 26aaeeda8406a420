"""How push bodies travel: chunked (under a real gunicorn), with a UTF-8 BOM, gzip-encoded (and
gzip bombs), after a challenge that offers Basic; and totals that go down refused as documented."""

import base64
import gzip
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.conf import settings
from django.db import connection
from django.test import Client

from ingestion import hourfiles
from ingestion.hourfiles import iter_records
from ingestion.models import Incident
from ingestion.records import FailureClass
from tests.factories import EagleUserFactory
from tests.push_uploads import eagle200_json, fragment, json_item, uploader_xml
from users.models import ConnectionType, EagleUser

NOW = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
T0 = int(NOW.timestamp()) - 60
URL = "/api/push/00a1b2"
UPLOADER_CONTENT_TYPE = "application/x-www-form-urlencoded"


@pytest.fixture
def user(db: None) -> EagleUser:
    household = EagleUserFactory(
        cloud_id="00a1b2", connection_type=ConnectionType.PUSH, eagle_password=""
    )
    household.ensure_fetch_state()
    return household


@pytest.fixture
def token(user: EagleUser) -> str:
    return user.issue_push_token()


@pytest.fixture
def frozen() -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


def post(body: bytes, token: str | None, **headers: str) -> Any:
    if token is not None:
        headers.setdefault("HTTP_AUTHORIZATION", f"Bearer {token}")
    return Client().post(URL, data=body, content_type=UPLOADER_CONTENT_TYPE, **headers)


def hour_records(moment: datetime = NOW) -> list[dict]:
    path = hourfiles.local_path("00a1b2", hourfiles.hour_floor(moment))
    return list(iter_records(path)) if path.exists() else []


def demand_push(timestamp: int = T0, raw: int = 1234) -> bytes:
    return uploader_xml(fragment("demand", timestamp, (raw,)), sent_at=timestamp + 1)


# --- Through the test client -------------------------------------------------------------------


def test_a_body_that_starts_with_a_bom_lands_once(token: str, frozen: None) -> None:
    body = b"\xef\xbb\xbf" + demand_push()

    assert post(body, token).status_code == 202
    assert post(body, token).status_code == 202

    assert [record["meter_timestamp"] for record in hour_records()] == [T0]


def test_a_gzip_body_lands_once(token: str, frozen: None) -> None:
    body = gzip.compress(demand_push())

    first = post(body, token, HTTP_CONTENT_ENCODING="gzip")
    second = post(body, token, HTTP_CONTENT_ENCODING="gzip")

    assert first.status_code == second.status_code == 202, first.json()
    assert [record["meter_timestamp"] for record in hour_records()] == [T0]


def test_a_gzip_bomb_is_refused_as_too_large_without_writing(token: str, frozen: None) -> None:
    # A few kilobytes that unpack to many times the limit.
    body = gzip.compress(demand_push() + b" " * (settings.PUSH_MAX_BODY_BYTES * 50))
    assert len(body) < settings.PUSH_MAX_BODY_BYTES

    answer = post(body, token, HTTP_CONTENT_ENCODING="gzip")

    assert answer.status_code == 413
    assert "unpacks to more than" in answer.json()["detail"]
    assert hour_records() == []


@pytest.mark.parametrize(
    ("body", "encoding", "status", "detail"),
    [
        (gzip.compress(b"<rainforest/>")[:-12], "gzip", 400, "truncated"),
        (b"<rainforest/>", "gzip", 400, "not valid gzip"),
        (b"<rainforest/>", "br", 415, "Content-Encoding 'br'"),
    ],
)
def test_a_broken_or_unknown_encoding_is_refused_clearly(
    token: str, frozen: None, body: bytes, encoding: str, status: int, detail: str
) -> None:
    answer = post(body, token, HTTP_CONTENT_ENCODING=encoding)

    assert answer.status_code == status
    assert detail in answer.json()["detail"]
    assert Incident.objects.filter(failure_class=FailureClass.MALFORMED_REPLY).count() == 1


def test_the_challenge_offers_basic_and_a_basic_retry_is_accepted(token: str, frozen: None) -> None:
    challenge = post(demand_push(), None)

    assert challenge.status_code == 401
    offered = challenge["WWW-Authenticate"]
    assert 'Basic realm="rainlog push"' in offered and "Bearer" in offered
    basic = base64.b64encode(f"00a1b2:{token}".encode()).decode()
    assert post(demand_push(), None, HTTP_AUTHORIZATION=f"Basic {basic}").status_code == 202
    assert len(hour_records()) == 1


def test_a_total_that_goes_down_after_a_logged_one_is_refused(token: str, frozen: None) -> None:
    def summation(timestamp: int, delivered: float) -> bytes:
        item = json_item(
            "CurrentSummation",
            timestamp,
            {"summationDelivered": delivered, "summationReceived": 1.5, "units": "kWh"},
        )
        return eagle200_json(item, sent_at=timestamp)

    assert post(summation(T0 - 30, 46873.4), token).status_code == 202
    assert post(summation(T0, 46873.3), token).status_code == 202

    records = hour_records()
    assert [record["delivered_kwh"] for record in records] == [46873.4]
    incident = Incident.objects.get(failure_class=FailureClass.SUSPICIOUS_READING)
    assert "delivered_kwh went down from 46873.4 to 46873.3" in incident.message


def test_totals_within_one_push_are_judged_in_meter_time_order(token: str, frozen: None) -> None:
    items = [
        json_item(
            "CurrentSummation", T0 - 20, {"summationDelivered": 10.0, "summationReceived": 0}
        ),
        json_item("CurrentSummation", T0 - 10, {"summationDelivered": 9.5, "summationReceived": 0}),
        json_item("CurrentSummation", T0, {"summationDelivered": 10.2, "summationReceived": 0}),
    ]

    assert post(eagle200_json(*items, sent_at=T0), token).status_code == 202

    assert [record["delivered_kwh"] for record in hour_records()] == [10.0, 10.2]


# --- Through a real gunicorn: chunked bodies -----------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def gunicorn(transactional_db: None) -> Iterator[int]:
    """The project under gunicorn on a free loopback port, on the test database; pushes are
    ingested in the request (Q_SYNC)."""
    port = free_port()
    database = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST'] or '127.0.0.1'}:"
        f"{database['PORT'] or 5432}/{database['NAME']}",
        "LOG_ROOT": str(settings.LOG_ROOT),
        "Q_SYNC": "1",
    }
    command = [sys.executable, "-m", "gunicorn", "rainlog.wsgi", "--bind", f"127.0.0.1:{port}"]
    server = subprocess.Popen(
        [*command, "--workers", "1"],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("gunicorn did not start") from None
                time.sleep(0.1)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)


def chunked_post(port: int, path: str, token: str, body: bytes, chunk: int = 100) -> int:
    """POST `body` with Transfer-Encoding: chunked and no Content-Length; the status answered."""
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: {UPLOADER_CONTENT_TYPE}\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + encoded)
        answer = b""
        while data := sock.recv(65536):
            answer += data
    return int(answer.split(b" ", 2)[1])


def test_a_chunked_push_under_gunicorn_is_read_to_the_end_and_lands_once(
    gunicorn: int, token: str
) -> None:
    now = int(time.time())
    body = uploader_xml(
        "<DeviceInfo><ModelId>Z109-EAGLE</ModelId></DeviceInfo>\n" * 5,
        fragment("demand", now - 5, (1234,)),
        sent_at=now,
    )
    assert len(body) > 500

    statuses = [chunked_post(gunicorn, URL, token, body) for _ in range(2)]

    assert statuses == [202, 202]
    records = hour_records(datetime.fromtimestamp(now - 5, UTC))
    assert [record["meter_timestamp"] for record in records] == [now - 5]
    assert not Incident.objects.exists()


def test_a_chunked_push_over_the_limit_is_refused_under_gunicorn(gunicorn: int, token: str) -> None:
    body = demand_push(int(time.time()) - 5) + b" " * settings.PUSH_MAX_BODY_BYTES

    assert chunked_post(gunicorn, URL, token, body, chunk=8192) == 413
