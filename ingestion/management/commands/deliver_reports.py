"""`manage.py deliver_reports`: one incident-report pass by hand (the q2 schedule runs it too)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ingestion import incident_reports
from rainlog.stopping import StopRequest


class Command(BaseCommand):
    help = (
        "Make reports of incidents opened or resolved and POST the due ones to ERROR_REPORT_URL, "
        "signed; failed deliveries are retried later with backoff."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--budget",
            type=float,
            default=incident_reports.PASS_BUDGET_SECONDS,
            help="stop sending after this many seconds (default %(default)s)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not incident_reports.reporting_enabled():
            raise CommandError(
                "Incident reports are off: set ERROR_REPORT_URL and ERROR_REPORT_SECRET."
            )
        self.stdout.write("Making and delivering incident reports...")
        with StopRequest() as stop:
            summary = incident_reports.run_report_pass(stop, options["budget"])
        self.stdout.write(summary.summary())
