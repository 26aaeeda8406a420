"""`manage.py deliver_reports`: one incident-report pass by hand (the q2 schedule runs it too)."""

from __future__ import annotations

import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ingestion import reporting


class Command(BaseCommand):
    help = (
        "Make reports of incidents opened or resolved and POST the due ones to ERROR_REPORT_URL, "
        "signed; failed deliveries are retried later with backoff."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--budget",
            type=float,
            default=reporting.PASS_BUDGET_SECONDS,
            help="stop sending after this many seconds (default %(default)s)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not reporting.reporting_enabled():
            raise CommandError(
                "Incident reports are off: set ERROR_REPORT_URL and ERROR_REPORT_SECRET."
            )
        stopping = False

        def stop(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        self.stdout.write("Making and delivering incident reports...")
        summary = reporting.run_report_pass(lambda: stopping, options["budget"])
        self.stdout.write(summary.summary())
