"""Incident reports: signed POSTs to a real HTTP receiver on loopback, retried with backoff."""

import hashlib
import hmac
import io
import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.test import Client
from django_q.models import Schedule
from pytest_django.fixtures import Settings
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from ingestion.incident_reports import create_reports, run_report_pass
from ingestion.models import Incident, IncidentReport, IncidentState, ReportState
from ingestion.polling.schedules import register_schedules
from ingestion.records import FailureClass
from ingestion.tasks import deliver_incident_reports
from tests.factories import EagleUserFactory
from tests.rainlog.test_settings import PRODUCTION_ENVIRONMENT, manage

pytestmark = pytest.mark.django_db

SECRET = "receiver-shared-secret"
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def receiver() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1", port=free_port())
    yield server
    if server.is_running():
        server.clear()
        server.stop()


@pytest.fixture
def reporting_to(settings: Settings, receiver: HTTPServer) -> HTTPServer:
    """Reports configured to go to `receiver` (which the test starts when it wants it up)."""
    settings.ERROR_REPORT_URL = f"http://127.0.0.1:{receiver.port}/incidents"
    settings.ERROR_REPORT_SECRET = SECRET
    return receiver


@pytest.fixture
def clock() -> Iterator[time_machine.Traveller]:
    with time_machine.travel(START, tick=False) as traveller:
        yield traveller


def open_incident(
    cloud_id: str = "00a1b2", message: str = "Gateway unreachable", **over: Any
) -> Incident:
    user = EagleUserFactory(cloud_id=cloud_id)
    fields = {"failure_class": FailureClass.GATEWAY_UNREACHABLE, "message": message, **over}
    return Incident.objects.create(user=user, **fields)


def resolve(incident: Incident) -> None:
    incident.state = IncidentState.RESOLVED
    incident.resolved_at = datetime.now(UTC)
    incident.save()


def verified_report(request: Request, now: datetime) -> dict:
    """The report in a received request, after checking its signature as a receiver would."""
    timestamp = request.headers["X-Rainlog-Timestamp"]
    body = request.get_data()
    expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    assert hmac.compare_digest(
        request.headers["X-Rainlog-Signature"], "sha256=" + expected.hexdigest()
    )
    # Signed when sent, so that a receiver can refuse old (replayed) requests.
    assert int(timestamp) == int(now.timestamp())
    assert request.headers["Content-Type"] == "application/json"
    return json.loads(body)


def test_it_posts_signed_reports_when_an_incident_opens_and_when_it_resolves(
    reporting_to: HTTPServer, clock: time_machine.Traveller
) -> None:
    reporting_to.expect_request("/incidents", method="POST").respond_with_data("ok")
    reporting_to.start()
    incident = open_incident(occurrences=3)

    opened_pass = run_report_pass()

    assert (opened_pass.created, opened_pass.delivered) == (1, 1)
    ((request, response),) = reporting_to.log
    report = verified_report(request, START)
    assert report["event"] == "opened"
    assert report["cloud_id"] == "00a1b2"
    assert report["failure_class"] == "gateway_unreachable"
    assert report["occurrences"] == 3
    assert report["opened_at"] == "2026-03-01T12:00:00Z"
    assert request.headers["Idempotency-Key"] == report["report_key"]

    clock.shift(timedelta(minutes=7))
    resolve(incident)
    resolved_pass = run_report_pass()

    assert (resolved_pass.created, resolved_pass.delivered) == (1, 1)
    report = verified_report(reporting_to.log[1][0], START + timedelta(minutes=7))
    assert report["event"] == "resolved"
    assert report["resolved_at"] == "2026-03-01T12:07:00Z"
    assert report["duration_seconds"] == 420
    assert IncidentReport.objects.filter(state=ReportState.DELIVERED).count() == 2


def test_it_delivers_after_the_receiver_was_down_for_a_while_backing_off_between_attempts(
    reporting_to: HTTPServer, clock: time_machine.Traveller
) -> None:
    open_incident()

    # Nothing listens on the port yet.
    first = run_report_pass()
    report = IncidentReport.objects.get()
    assert (first.delivered, first.failed) == (0, 1)
    assert "cannot reach the endpoint" in report.last_error
    assert report.next_attempt_at == START + timedelta(seconds=30)

    clock.shift(timedelta(seconds=20))
    assert run_report_pass().failed == 0  # not due yet: no attempt
    assert IncidentReport.objects.get().attempts == 1

    # Up, but failing.
    reporting_to.expect_ordered_request("/incidents").respond_with_data("overloaded", status=503)
    reporting_to.start()
    clock.shift(timedelta(seconds=10))
    assert run_report_pass().failed == 1
    report.refresh_from_db()
    assert (report.attempts, report.response_status) == (2, 503)
    assert report.next_attempt_at == START + timedelta(seconds=30 + 60)

    reporting_to.expect_ordered_request("/incidents").respond_with_data("ok", status=202)
    clock.shift(timedelta(seconds=60))
    assert run_report_pass().delivered == 1

    report.refresh_from_db()
    assert report.state == ReportState.DELIVERED
    assert (report.attempts, report.response_status) == (3, 202)
    assert report.delivered_at == START + timedelta(seconds=90)
    assert len(reporting_to.log) == 2
    delivered = verified_report(reporting_to.log[1][0], START + timedelta(seconds=90))
    assert delivered["cloud_id"] == "00a1b2"


def test_it_stops_a_pass_at_an_unreachable_endpoint_and_leaves_the_other_reports_due(
    reporting_to: HTTPServer, clock: time_machine.Traveller
) -> None:
    for cloud_id in ("000001", "000002", "000003"):
        open_incident(cloud_id)

    summary = run_report_pass()

    assert (summary.created, summary.failed, summary.pending) == (3, 1, 3)
    assert "looks down" in summary.stopped
    assert sorted(IncidentReport.objects.values_list("attempts", flat=True)) == [0, 0, 1]


def test_it_makes_each_report_once_however_often_it_scans(
    reporting_to: HTTPServer, clock: time_machine.Traveller
) -> None:
    incident = open_incident()
    resolve(incident)

    assert create_reports() == 2
    assert create_reports() == 0
    assert sorted(IncidentReport.objects.values_list("event", flat=True)) == ["opened", "resolved"]


def test_it_never_puts_eagle_passwords_or_raw_replies_in_a_report(
    reporting_to: HTTPServer, clock: time_machine.Traveller
) -> None:
    reporting_to.expect_request("/incidents").respond_with_data("ok")
    reporting_to.start()
    password = "Hunter2-household-password"
    user = EagleUserFactory(cloud_id="00beef", eagle_password=password)
    Incident.objects.create(
        user=user,
        failure_class=FailureClass.BAD_CREDENTIALS,
        message=f"login refused for password {password}",
        raw_reply=f"<Error><Text>bad password {password}</Text></Error>",
    )

    assert run_report_pass().delivered == 1

    body = reporting_to.log[0][0].get_data(as_text=True)
    assert password not in body
    assert "<Error>" not in body
    assert verified_report(reporting_to.log[0][0], START)["message"] == (
        "login refused for password [redacted]"
    )


def test_it_gives_up_after_the_last_attempt_until_an_operator_retries(
    settings: Settings, reporting_to: HTTPServer, clock: time_machine.Traveller
) -> None:
    settings.ERROR_REPORT_MAX_ATTEMPTS = 2
    reporting_to.expect_request("/incidents").respond_with_data("no such topic", status=404)
    reporting_to.start()
    open_incident()

    run_report_pass()
    clock.shift(timedelta(minutes=1))
    run_report_pass()
    clock.shift(timedelta(hours=2))
    summary = run_report_pass()

    report = IncidentReport.objects.get()
    assert report.state == ReportState.FAILED
    assert report.attempts == 2
    assert "HTTP 404" in report.last_error and "no such topic" in report.last_error
    assert summary.pending == 0

    reporting_to.clear()
    reporting_to.expect_request("/incidents").respond_with_data("ok")
    report.retry_now()
    assert run_report_pass().delivered == 1


def test_it_does_not_count_a_redirect_as_a_delivery(
    reporting_to: HTTPServer, clock: time_machine.Traveller
) -> None:
    reporting_to.expect_request("/incidents").respond_with_response(
        Response(status=302, headers={"Location": "http://127.0.0.1:1/elsewhere"})
    )
    reporting_to.start()
    open_incident()

    run_report_pass()

    report = IncidentReport.objects.get()
    assert report.state == ReportState.PENDING
    assert report.response_status == 302
    assert "redirects to http://127.0.0.1:1/elsewhere" in report.last_error


def test_it_makes_no_reports_while_reporting_is_off(settings: Settings, clock: Any) -> None:
    settings.ERROR_REPORT_URL = ""
    open_incident()

    summary = run_report_pass()

    assert "reporting is off" in summary.stopped
    assert not IncidentReport.objects.exists()


def test_it_does_not_report_incidents_older_than_the_lookback(
    reporting_to: HTTPServer, clock: time_machine.Traveller
) -> None:
    open_incident(opened_at=START - timedelta(days=3), last_seen_at=START - timedelta(days=3))

    assert create_reports() == 0


def test_deliver_reports_command_runs_a_pass_and_prints_what_it_did(
    reporting_to: HTTPServer, clock: time_machine.Traveller
) -> None:
    reporting_to.expect_request("/incidents").respond_with_data("ok")
    reporting_to.start()
    open_incident()
    output = io.StringIO()

    call_command("deliver_reports", stdout=output)

    assert "1 new reports; 1 delivered" in output.getvalue()


def test_deliver_reports_command_says_how_to_turn_reporting_on(settings: Settings) -> None:
    settings.ERROR_REPORT_URL = ""
    with pytest.raises(CommandError, match="ERROR_REPORT_URL"):
        call_command("deliver_reports")


def test_the_admin_shows_delivery_state(
    admin_client: Client, reporting_to: HTTPServer, clock: time_machine.Traveller
) -> None:
    open_incident("00c0de")
    run_report_pass()  # the receiver is down: one failed attempt

    response = admin_client.get("/admin/ingestion/incidentreport/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "00c0de" in page
    assert "cannot reach the endpoint" in page


def test_reports_are_delivered_by_a_task_scheduled_every_minute(
    reporting_to: HTTPServer, clock: time_machine.Traveller
) -> None:
    reporting_to.expect_request("/incidents").respond_with_data("ok")
    reporting_to.start()
    open_incident()

    register_schedules()
    result = deliver_incident_reports()

    schedule = Schedule.objects.get(name="deliver-incident-reports")
    assert schedule.func == "ingestion.tasks.deliver_incident_reports"
    assert (schedule.schedule_type, schedule.minutes) == (Schedule.MINUTES, 1)
    assert result["delivered"] == 1


def test_a_receiver_that_never_answers_costs_one_short_timeout_per_pass(
    settings: Settings, clock: time_machine.Traveller
) -> None:
    with socket.socket() as silent:
        # Connections are queued by the kernel but never answered.
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        settings.ERROR_REPORT_URL = f"http://127.0.0.1:{silent.getsockname()[1]}/incidents"
        settings.ERROR_REPORT_SECRET = SECRET
        settings.ERROR_REPORT_TIMEOUT = 0.5
        open_incident("000001")
        open_incident("000002")

        summary = run_report_pass()

    assert (summary.failed, summary.delivered) == (1, 0)
    assert "looks down" in summary.stopped
    assert "timed out" in IncidentReport.objects.get(attempts=1).last_error


def test_it_refuses_to_start_with_a_report_url_but_no_secret(tmp_path: Path) -> None:
    env = {**PRODUCTION_ENVIRONMENT, "ERROR_REPORT_URL": "https://alerts.example.org/rainlog"}

    result = manage("check", env=env, tmp_path=tmp_path)

    assert result.returncode != 0
    assert "ERROR_REPORT_SECRET is not" in result.stderr
