"""A gateway that echoes the password in an encoded form does not get it stored or shown.

The probe's gateway sent the password back HTML-escaped, URL-encoded, upper-cased and inside the
base64 of a Basic header; each form reached incidents, `/api/event/{id}?fresh=1` and admin
messages. Here a real HTTP gateway (pytest-httpserver on loopback) answers every request with
all of these forms, and everything rainlog keeps or shows of its replies is searched for each.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from collections.abc import Iterator
from urllib.parse import quote, quote_plus

import pytest
from django.test import Client
from pytest_django.fixtures import Settings
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from ingestion.incident_reports import report_payload
from ingestion.models import Incident, ReportEvent
from ingestion.redaction import REDACTED, redact
from tests.factories import OperatorFactory
from tests.polling import polling_run
from users.models import ConnectionType, EagleUser

pytestmark = pytest.mark.django_db

CLOUD_ID = "00ec41"
# Characters that every encoding writes differently.
PASSWORD = "Pa&s <w0rd>/\"q'+x"


def encoded_forms(login: str, password: str) -> dict[str, str]:
    basic = base64.b64encode(f"{login}:{password}".encode()).decode()
    return {
        "as sent": password,
        "HTML-escaped": html.escape(password),
        "numeric entities": "".join(f"&#{ord(c)};" for c in password),
        "hex entities": "".join(f"&#X{ord(c):X};" for c in password),
        "URL-encoded": quote(password, safe=""),
        "form-encoded": quote_plus(password),
        "lower-case percent": quote(password, safe="").lower(),
        "upper-cased": password.upper(),
        "JSON-escaped": json.dumps(password, ensure_ascii=True)[1:-1].replace("/", "\\/"),
        "Basic header": f"Basic {basic}",
        "URL-safe base64": base64.urlsafe_b64encode(f"{login}:{password}".encode()).decode(),
        "base64 of the password": base64.b64encode(password.encode()).decode(),
    }


def leaks(text: str) -> list[str]:
    """The names of the password's forms found in `text` (a decoded base64 form counts too)."""
    forms = encoded_forms(CLOUD_ID, PASSWORD)
    found = [name for name, form in forms.items() if form.lower() in text.lower()]
    basic = forms["Basic header"].removeprefix("Basic ")
    if basic[:12] in text:
        found.append("part of the Basic header")
    return found


def echo_in_every_form(request: Request) -> Response:
    """A legacy gateway that refuses the login in an Error reply quoting it, in every encoding."""
    _, _, encoded = request.headers.get("Authorization", "").partition(" ")
    login, _, password = base64.b64decode(encoded).decode().partition(":")
    forms = " | ".join(encoded_forms(login, password).values())
    sent = request.headers.get("Authorization")
    text = html.escape(f"Invalid user name or password: {forms} | {sent}", quote=False)
    return Response(f"<Error><Text>{text}</Text></Error>", content_type="text/xml")


@pytest.fixture
def echoing_gateway(httpserver: HTTPServer) -> Iterator[str]:
    httpserver.expect_request("/cgi-bin/post_manager").respond_with_handler(echo_in_every_form)
    yield f"http://127.0.0.1:{httpserver.port}"


@pytest.fixture
def legacy_user(echoing_gateway: str) -> EagleUser:
    return EagleUser.objects.create(
        cloud_id=CLOUD_ID,
        eagle_password=PASSWORD,
        connection_type=ConnectionType.LEGACY,
        gateway_address=echoing_gateway,
    )


@pytest.mark.parametrize(("name", "form"), list(encoded_forms(CLOUD_ID, PASSWORD).items()))
def test_redact_removes_the_password_in_each_form(name: str, form: str) -> None:
    text = f"the gateway said: {form} (end)"
    redacted = redact(text, [PASSWORD])
    assert REDACTED in redacted, name
    assert not leaks(redacted), name
    assert redacted.endswith(" (end)")


def test_redact_leaves_text_without_the_password_alone() -> None:
    text = 'HTTP 401: the credentials were refused; Basic realm="eagle" 0x0004d2 SGVsbG8gd29ybGQ='
    assert redact(text, [PASSWORD]) == text


def test_redact_finds_a_password_written_in_mixed_encodings() -> None:
    assert redact("pa%26S &lt;W0RD&#62;/&quot;Q&#x27;+X", [PASSWORD]) == REDACTED


def test_the_live_fetch_answer_keeps_no_form_of_the_echoed_password(legacy_user: EagleUser) -> None:
    client = Client()
    client.force_login(OperatorFactory())

    response = client.get(f"/api/event/{CLOUD_ID}?fresh=1")

    assert response.status_code == 502
    assert not leaks(response.content.decode())


def test_incidents_reports_logs_and_admin_messages_keep_no_form_of_the_echoed_password(
    settings: Settings, legacy_user: EagleUser, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with polling_run(settings, users=0, create=0) as run:
        run.restart()
        for _ in range(2):
            run.tick()

    incident = Incident.objects.get(user=legacy_user)
    assert not leaks(incident.message)
    assert not leaks(incident.raw_reply)
    assert REDACTED in incident.raw_reply
    assert not leaks(json.dumps(report_payload(incident, ReportEvent.OPENED)))

    admin = Client()
    admin.force_login(OperatorFactory(is_superuser=True))
    page = admin.post(
        "/admin/users/eagleuser/",
        {"action": "check_user_credentials", "_selected_action": [legacy_user.pk]},
        follow=True,
    )
    shown = "\n".join(str(message) for message in page.context["messages"])
    assert "bad_credentials" in shown
    assert not leaks(shown)
    assert not leaks(page.cookies.get("messages").value if page.cookies.get("messages") else "")
    assert not leaks(caplog.text)
