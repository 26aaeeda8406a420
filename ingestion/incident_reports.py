"""Incident reports: incidents opened and resolved, POSTed as signed JSON to ERROR_REPORT_URL.

Decoupled from polling and rotation: a periodic django-q2 task (`ingestion.tasks.
deliver_incident_reports`) or `manage.py deliver_reports` runs `run_report_pass()`, which

1. makes one IncidentReport per incident event not yet reported (idempotent: unique per incident
   and event), for incidents opened or resolved within ERROR_REPORT_LOOKBACK_HOURS;
2. delivers the due ones, oldest event first, each claimed by a conditional UPDATE so concurrent
   passes never send the same report at once. A failed attempt is retried with exponential
   backoff; the pass stops at the first sign that the endpoint is down, so a dead receiver costs
   one timeout per pass.

What a receiver gets (`POST`, `Content-Type: application/json`):

- body: the report (see `report_payload`), with `report_key` naming it: a receiver may get the
  same report twice (delivery is at least once) and should ignore a key it has seen;
- `X-Rainlog-Timestamp`: Unix seconds when this attempt was signed;
- `X-Rainlog-Signature`: `sha256=` + hex HMAC-SHA256, keyed with ERROR_REPORT_SECRET, of
  `<timestamp>.<body>`. A receiver recomputes it over the raw body and rejects a timestamp more
  than a few minutes old, so a captured request cannot be replayed later.

Reports carry cloud ids, failure classes, times, counts and messages; never EAGLE passwords,
tokens or raw gateway replies.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from ingestion.models import (
    Incident,
    IncidentReport,
    IncidentState,
    ReportEvent,
    ReportState,
)
from ingestion.records import FailureClass, iso_utc
from ingestion.redaction import redact

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Rainlog-Signature"
TIMESTAMP_HEADER = "X-Rainlog-Timestamp"
EVENT_HEADER = "X-Rainlog-Event"
USER_AGENT = "rainlog-incident-reports/1"
# Leave room for the next scheduled pass (every minute) rather than overlap it.
PASS_BUDGET_SECONDS = 50.0


def reporting_enabled() -> bool:
    return bool(settings.ERROR_REPORT_URL and settings.ERROR_REPORT_SECRET)


# --- Making reports ---------------------------------------------------------------------------


def report_payload(incident: Incident, event: ReportEvent) -> dict[str, Any]:
    """The JSON object sent for one incident event."""
    # A gateway's reply may have echoed the account's password into the failure message.
    secrets = [incident.user.eagle_password] if incident.user is not None else []
    message = redact(incident.message, secrets)
    payload: dict[str, Any] = {
        "report_key": f"rainlog-incident-{incident.pk}-{event}",
        "event": str(event),
        "service": "rainlog",
        "site_url": settings.SITE_URL,
        "incident_id": incident.pk,
        "cloud_id": incident.user.cloud_id if incident.user is not None else None,
        "shard": incident.shard,
        "failure_class": incident.failure_class,
        "failure_label": FailureClass(incident.failure_class).label,
        "message": message,
        "opened_at": iso_utc(incident.opened_at),
        "last_seen_at": iso_utc(incident.last_seen_at),
        "occurrences": incident.occurrences,
    }
    if event == ReportEvent.RESOLVED and incident.resolved_at is not None:
        payload["resolved_at"] = iso_utc(incident.resolved_at)
        payload["duration_seconds"] = round(
            (incident.resolved_at - incident.opened_at).total_seconds()
        )
        payload["resolved_by_operator"] = incident.resolved_by_id is not None
    return payload


def create_reports(now: datetime | None = None) -> int:
    """Make the reports of incident events not reported yet; returns how many were made.

    Safe to run any number of times, also concurrently: a report already made is not made again.
    """
    now = now or timezone.now()
    horizon = now - timedelta(hours=settings.ERROR_REPORT_LOOKBACK_HOURS)
    unreported = {
        ReportEvent.OPENED: Incident.objects.filter(opened_at__gte=horizon),
        ReportEvent.RESOLVED: Incident.objects.filter(
            state=IncidentState.RESOLVED, resolved_at__gte=horizon
        ),
    }
    reports = []
    for event, incidents in unreported.items():
        for incident in incidents.exclude(reports__event=event).select_related("user"):
            event_at = incident.resolved_at if event == ReportEvent.RESOLVED else incident.opened_at
            assert event_at is not None  # resolved incidents were picked by their resolved_at
            reports.append(
                IncidentReport(
                    incident=incident,
                    event=event,
                    event_at=event_at,
                    payload=report_payload(incident, event),
                    next_attempt_at=now,
                    created_at=now,
                )
            )
    created = 0
    for report in reports:
        try:
            with transaction.atomic():
                report.save(force_insert=True)
        except IntegrityError:
            # A concurrent pass made it since the query; the constraint keeps it to one.
            continue
        created += 1
    return created


# --- Signing and sending ----------------------------------------------------------------------


def signature(body: bytes, timestamp: str, secret: str) -> str:
    """The `X-Rainlog-Signature` value of a body signed at `timestamp` (Unix seconds)."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


@dataclass(frozen=True, slots=True)
class SendResult:
    delivered: bool
    status: int | None = None
    error: str = ""
    # The endpoint looks down (unreachable, timing out, 5xx, 429): other reports would fail too.
    endpoint_down: bool = False


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # urllib would turn a redirected POST into a GET without the body and call that a delivery.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def send_report(report: IncidentReport, now: datetime) -> SendResult:
    """One signed POST of a report to ERROR_REPORT_URL; never raises for network trouble."""
    body = orjson.dumps(report.payload, option=orjson.OPT_SORT_KEYS)
    timestamp = str(int(now.timestamp()))
    request = urllib.request.Request(
        settings.ERROR_REPORT_URL,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            EVENT_HEADER: report.event,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(body, timestamp, settings.ERROR_REPORT_SECRET),
            "Idempotency-Key": report.payload["report_key"],
        },
    )
    try:
        with _opener.open(request, timeout=settings.ERROR_REPORT_TIMEOUT) as response:
            return SendResult(delivered=True, status=response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
        try:
            detail = exc.read(300).decode(errors="replace").strip()
        except (OSError, http.client.HTTPException):
            detail = ""
        finally:
            exc.close()
        if 300 <= status < 400:
            error = f"HTTP {status}: the endpoint redirects to {exc.headers.get('Location', '?')}"
            error += "; set ERROR_REPORT_URL to the final address"
        else:
            error = f"HTTP {status} {exc.reason}" + (f": {detail}" if detail else "")
        return SendResult(
            delivered=False,
            status=status,
            error=error,
            endpoint_down=status >= 500 or status == 429,
        )
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return SendResult(
            delivered=False, error=f"cannot reach the endpoint: {reason}", endpoint_down=True
        )


# --- A pass -----------------------------------------------------------------------------------


@dataclass(slots=True)
class ReportPass:
    """What one pass did."""

    created: int = 0
    delivered: int = 0
    failed: int = 0
    gave_up: int = 0
    pending: int = 0
    # Why the pass stopped early, if it did.
    stopped: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        text = (
            f"{self.created} new reports; {self.delivered} delivered, {self.failed} failed "
            f"(will be retried), {self.gave_up} given up; {self.pending} pending"
        )
        return text + (f"; stopped early: {self.stopped}" if self.stopped else "")


def deliver_due_reports(
    summary: ReportPass,
    should_stop: Callable[[], bool] = lambda: False,
    budget_seconds: float = PASS_BUDGET_SECONDS,
) -> None:
    """Send due reports one by one until none is due, the endpoint looks down, the time budget is
    spent or `should_stop()` says so. Each attempt's outcome is saved as soon as it is known."""
    deadline = timezone.now() + timedelta(seconds=budget_seconds)
    # A claim lasts longer than any attempt can.
    lease = timedelta(seconds=2 * settings.ERROR_REPORT_TIMEOUT + 10)
    while True:
        if should_stop():
            summary.stopped = "asked to stop"
            return
        now = timezone.now()
        if now >= deadline:
            summary.stopped = "time budget spent"
            return
        report = IncidentReport.objects.claim_next(now, lease)
        if report is None:
            return
        result = send_report(report, now)
        if result.delivered:
            report.record_delivery(result.status or 0, timezone.now())
            summary.delivered += 1
            continue
        report.record_failure(result.error, result.status, timezone.now())
        logger.warning(
            "incident report %s (attempt %d) not delivered: %s",
            report.payload["report_key"],
            report.attempts,
            result.error,
        )
        if report.state == ReportState.FAILED:
            summary.gave_up += 1
        else:
            summary.failed += 1
        if result.endpoint_down:
            summary.stopped = f"the endpoint looks down ({result.error})"
            return


def run_report_pass(
    should_stop: Callable[[], bool] = lambda: False,
    budget_seconds: float = PASS_BUDGET_SECONDS,
) -> ReportPass:
    """Make new reports and deliver the due ones; does nothing unless reporting is configured."""
    summary = ReportPass()
    if not reporting_enabled():
        summary.stopped = "reporting is off (ERROR_REPORT_URL and ERROR_REPORT_SECRET are unset)"
        return summary
    summary.created = create_reports()
    deliver_due_reports(summary, should_stop, budget_seconds)
    summary.pending = IncidentReport.objects.filter(state=ReportState.PENDING).count()
    return summary
