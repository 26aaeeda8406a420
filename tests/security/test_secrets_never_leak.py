"""EAGLE passwords and tokens never leave rainlog: not in a response, a log line, a command's
output or an incident report.

One flow does what operators and gateways do (users created through the API with known passwords,
polling against the simulator with a wrong password and against a gateway that echoes the
password it was sent, pushes with a token, reads, exports, admin pages and actions, credential
checks, incident reports to a real receiver), with logging at DEBUG. Then everything that came
out is searched for every secret. Only the two answers whose purpose is to hand over a new token
are allowed to hold that token.
"""

from __future__ import annotations

import base64
import logging
import re
import socket
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.test import Client
from pytest_django.fixtures import Settings
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from ingestion.incident_reports import run_report_pass
from ingestion.models import FetchState, Incident, IncidentReport
from tests.factories import OPERATOR_PASSWORD, OperatorFactory
from tests.polling import START, polling_run
from tests.push_uploads import fragment, uploader_xml
from users.models import EagleUser

pytestmark = pytest.mark.django_db

REPORT_SECRET = "receiver-hmac-secret-f00d"
WRONG_PASSWORD = "wrong-password-4f1c9e"
ANOTHER_WRONG_PASSWORD = "still-wrong-88b2a7"
INSTALL_CODE = "echoed-install-code-7d3e"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def echo_the_password(request: Request) -> Response:
    """A legacy gateway that puts the credentials it was sent into its error text."""
    _, _, encoded = request.headers.get("Authorization", "").partition(" ")
    user, _, password = base64.b64decode(encoded).decode().partition(":")
    text = f"Invalid user name or password: {user}/{password} is not allowed"
    return Response(f"<Error><Text>{text}</Text></Error>", content_type="text/xml")


@pytest.fixture
def loopback_server() -> Iterator[HTTPServer]:
    """The incident report receiver (/incidents) and the echoing gateway (/cgi-bin/post_manager)."""
    server = HTTPServer(host="127.0.0.1", port=free_port())
    server.expect_request("/incidents", method="POST").respond_with_data("thanks")
    server.expect_request("/cgi-bin/post_manager", method="POST").respond_with_handler(
        echo_the_password
    )
    server.start()
    yield server
    server.clear()
    server.stop()


class Transcript:
    """Everything rainlog said during the flow, each piece with where it came from."""

    def __init__(self) -> None:
        self.pieces: list[tuple[str, str]] = []

    def add(self, where: str, text: str) -> None:
        self.pieces.append((where, text))

    def response(self, where: str, response: Any) -> Any:
        body = (
            b"".join(response.streaming_content) if response.streaming else response.content
        ).decode("utf-8", errors="replace")
        headers = "\n".join(f"{name}: {value}" for name, value in response.headers.items())
        cookies = "\n".join(morsel.OutputString() for morsel in response.cookies.values())
        self.add(f"{where} -> {response.status_code}", f"{headers}\n{cookies}\n\n{body}")
        return response

    def command(self, where: str, *args: Any) -> None:
        out, err = StringIO(), StringIO()
        try:
            call_command(*args, stdout=out, stderr=err)
        except CommandError as exc:
            err.write(f"CommandError: {exc}")
        self.add(f"manage.py {where}", out.getvalue() + err.getvalue())

    def leaks(self, secrets: dict[str, str]) -> list[tuple[str, str]]:
        """(secret's name, where) of every piece that holds a secret."""
        return [
            (name, where)
            for where, text in self.pieces
            for name, secret in secrets.items()
            if secret in text
        ]


def test_no_password_or_token_appears_in_any_response_log_line_or_report(
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
    loopback_server: HTTPServer,
    tmp_path: Path,
) -> None:
    operator = OperatorFactory(is_superuser=True)
    # As with LOG_LEVEL=DEBUG: everything at DEBUG but the loggers the settings pin.
    caplog.set_level(logging.DEBUG)
    settings.ERROR_REPORT_URL = loopback_server.url_for("/incidents")
    settings.ERROR_REPORT_SECRET = REPORT_SECRET
    # Suspension's reason quotes the last failure: reach it within a few ticks.
    settings.INGEST_SUSPEND_AFTER_AUTH_FAILURES = 2
    echo_gateway = f"http://127.0.0.1:{loopback_server.port}"
    said = Transcript()
    # (secret, where): the answers whose purpose is to hand that new token over, once.
    handed_over: set[tuple[str, str]] = set()

    with polling_run(settings, users=2, create=0) as run:
        good, bad = run.sim.accounts()
        secrets = {
            "operator password": OPERATOR_PASSWORD,
            "good EAGLE password": good["user_pw"],
            "simulated password of the misconfigured user": bad["user_pw"],
            "wrong EAGLE password": WRONG_PASSWORD,
            "second wrong EAGLE password": ANOTHER_WRONG_PASSWORD,
            "install code": INSTALL_CODE,
            "report signing secret": REPORT_SECRET,
            "encryption key": django_settings.FIELD_ENCRYPTION_KEYS[0],
            "SECRET_KEY": django_settings.SECRET_KEY,
        }

        # An operator trades the password for a token: that answer hands the token over.
        anonymous = Client()
        issued = said.response(
            "POST /api/auth/token/",
            anonymous.post(
                "/api/auth/token/",
                {"username": operator.username, "password": OPERATOR_PASSWORD},
                content_type="application/json",
            ),
        )
        secrets["API token"] = issued.json()["token"]
        handed_over.add(("API token", "POST /api/auth/token/ -> 200"))
        api = Client(HTTP_AUTHORIZATION=f"Token {secrets['API token']}")

        def call(method: str, url: str, body: Any = None, **extra: Any) -> Any:
            kwargs = {"content_type": "application/json"} if body is not None else {}
            response = getattr(api, method)(url, body, **kwargs, **extra)
            return said.response(f"{method.upper()} {url}", response)

        # Users created and changed through the API, with the seed's field names too.
        call(
            "post",
            f"/api/users/{good['cloud_id']}",
            {"email": good["user_email"], "eagle_password": good["user_pw"]},
        )
        call(
            "post",
            f"/api/users/{bad['cloud_id']}",
            {"user_email": bad["user_email"], "user_pw": WRONG_PASSWORD},
        )
        call("patch", f"/api/users/{bad['cloud_id']}", {"eagle_password": ANOTHER_WRONG_PASSWORD})
        call(
            "put",
            "/api/users/00ec40",
            {
                "email": "",
                "connection_type": "legacy",
                "gateway_address": echo_gateway,
                "meter_mac": "",
                "is_active": True,
                "suspended_reason": "",
                "eagle_password": INSTALL_CODE,
            },
        )
        call("post", "/api/users/00a1b2", {"connection_type": "push", "email": "push@example.org"})
        # Refused writes say what is wrong without repeating the password.
        call(
            "post", "/api/users/00bad0", {"email": "not-an-email", "eagle_password": WRONG_PASSWORD}
        )
        call("post", "/api/users/00bad2", {"email": "a@example.org", "password": WRONG_PASSWORD})
        call("post", "/api/users/00bad1", {"connection_type": "warp", "user_pw": WRONG_PASSWORD})

        # Polling: readings for the good user, bad credentials (then suspension) for the others.
        run.restart()
        for _ in range(4):
            run.tick()
        assert EagleUser.objects.get(cloud_id="00ec40").is_active is False
        assert Incident.objects.filter(user__cloud_id="00ec40").exists()

        # A push gateway with its token, and one with a wrong token.
        admin = Client()
        admin.force_login(operator)
        push_user = EagleUser.objects.get(cloud_id="00a1b2")
        issued_page = admin.post(
            "/admin/users/eagleuser/",
            {"action": "issue_push_tokens", "_selected_action": [push_user.pk]},
        )
        said.response("admin: issue push tokens", issued_page)
        handed_over.add(("push token", "admin: issue push tokens -> 200"))
        push_token = re.search(r"<code>(rlp_[\w-]+)</code>", issued_page.content.decode())[1]
        secrets["push token"] = push_token
        body = uploader_xml(fragment("demand", int(START) - 60, (1234,)), sent_at=int(START))
        for token in (push_token, "rlp_guessed"):
            said.response(
                "POST /api/push/00a1b2",
                Client().post(
                    "/api/push/00a1b2",
                    body,
                    content_type="text/xml",
                    HTTP_AUTHORIZATION=f"Bearer {token}",
                ),
            )

        # Reads of everything an operator can see.
        for url in (
            "/api/users/",
            "/api/users/?failing=1",
            f"/api/users/{good['cloud_id']}",
            f"/api/users/{bad['cloud_id']}",
            "/api/users/00ec40",
            "/api/users/00a1b2",
            "/api/incidents/",
            "/api/logfiles/",
            "/api/status/",
            f"/api/event/{good['cloud_id']}",
            f"/api/event/{good['cloud_id']}?fresh=1",
            f"/api/event/{bad['cloud_id']}?fresh=1",
            "/api/event/00ec40?fresh=1",
            "/metrics",
            "/healthz",
        ):
            call("get", url)
        for incident in Incident.objects.all():
            call("get", f"/api/incidents/{incident.pk}/")
        window = "start=2026-09-21T00:00:00Z&end=2026-09-23T00:00:00Z"
        for view in ("readings", "readings?format=csv&", "readings/aggregate", "coverage"):
            path, _, query = view.partition("?")
            call("get", f"/api/users/{good['cloud_id']}/{path}?{query}{window}")
        browsable = Client()
        browsable.force_login(operator)
        for cloud_id in (bad["cloud_id"], "00ec40"):
            said.response(
                "browsable API",
                browsable.get(f"/api/users/{cloud_id}", HTTP_ACCEPT="text/html"),
            )

        # The admin: pages, the console's actions, and the changelist's credential check.
        users = {user.cloud_id: user for user in EagleUser.objects.all()}
        admin_urls = [
            "/admin/",
            "/admin/users/eagleuser/",
            "/admin/ingestion/incident/",
            "/admin/ingestion/fetchstate/",
            "/admin/ingestion/incidentreport/",
            "/admin/knox/authtoken/",
            "/admin/console/fleet.json",
            "/dev/playground",
        ]
        for user in users.values():
            admin_urls += [
                f"/admin/users/eagleuser/{user.pk}/change/",
                f"/admin/users/eagleuser/{user.pk}/history/",
                f"/admin/console/users/{user.pk}/demand.json",
                f"/admin/console/users/{user.pk}/readings.csv",
            ]
        admin_urls += [f"/admin/ingestion/incident/{i.pk}/change/" for i in Incident.objects.all()]
        admin_urls += [
            f"/admin/ingestion/fetchstate/{s.pk}/change/" for s in FetchState.objects.all()
        ]
        for url in admin_urls:
            said.response(f"admin: {url}", admin.get(url))
        for cloud_id in (bad["cloud_id"], "00ec40"):
            for action in ("check-credentials", "fetch-now"):
                url = f"/admin/console/users/{users[cloud_id].pk}/{action}/"
                said.response(f"admin: {url}", admin.post(url, follow=True))
        said.response(
            "admin: check credentials action",
            admin.post(
                "/admin/users/eagleuser/",
                {
                    "action": "check_user_credentials",
                    "_selected_action": [users[bad["cloud_id"]].pk, users["00ec40"].pk],
                },
                follow=True,
            ),
        )

        # Commands operators run.
        said.command("check_user (wrong password)", "check_user", bad["cloud_id"])
        said.command("check_user (echoing gateway)", "check_user", "00ec40")
        said.command("export_users", "export_users")
        users_file = tmp_path / "users.jl"
        users_file.write_text(
            f'{{"cloud_id": "0badf0", "user_email": "nope", "user_pw": "{WRONG_PASSWORD}"}}\n'
            f'{{"cloud_id": "../0bad", "user_email": "a@example.org", "user_pw": "{WRONG_PASSWORD}"}}\n'
            f'{{"cloud_id": 1234, "user_email": "a@example.org", "user_pw": "{INSTALL_CODE}"}}\n'
            f'{{"cloud_id": "0badf1", "user_email": "a@example.org", "user_pw": 1, "x": "{INSTALL_CODE}"}}\n'
        )
        said.command("import_users", "import_users", str(users_file))

        # Incident reports, sent signed to a real receiver.
        summary = run_report_pass()
        assert summary.delivered >= 2, summary.summary()
        for payload in IncidentReport.objects.values_list("payload", flat=True):
            said.add("stored report payload", str(payload))
        for request, _ in loopback_server.log:
            if request.path == "/incidents":
                headers = "\n".join(f"{k}: {v}" for k, v in request.headers.items())
                said.add("report delivery", f"{headers}\n\n{request.get_data(as_text=True)}")

    said.add("log", caplog.text)
    cache.clear()

    leaks = [leak for leak in said.leaks(secrets) if leak not in handed_over]
    assert leaks == [], "\n".join(f"{name} in {where}" for name, where in leaks)
    # The flow did reach what it searches: echoed credentials, incidents, reports, admin pages.
    assert loopback_server.log, "the echoing gateway was never asked"
    assert any(where.startswith("report delivery") for where, _ in said.pieces)
    assert len(said.pieces) > 60
