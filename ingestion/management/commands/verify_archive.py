"""manage.py verify_archive: audit the archive against the manifest and the local disk."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ingestion import hourfiles
from ingestion.archive import audit
from ingestion.management.options import time_option


class Command(BaseCommand):
    help = (
        "Compare the manifest with the archive (presence, size, SHA-256) and the local disk; "
        "report missing, mismatched and orphaned objects and unshipped files gone from disk. "
        "Exits non-zero on any problem."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--since",
            help="only hours from this time on: YYYY-MM-DD-HH or ISO 8601, UTC unless an offset "
            "is given (default: all)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        since = time_option("--since", options["since"], hourfiles.parse_utc_time)
        report = audit.AuditReport()

        def show_progress(report: audit.AuditReport) -> None:
            if options["verbosity"] > 0:
                self.stderr.write(
                    f"… {report.verified_checked} verified files checked, "
                    f"{report.objects_listed} objects listed"
                )

        try:
            for problem in audit.audit_archive(report, since=since, on_page=show_progress):
                self.stdout.write(f"{problem.kind.upper()} {problem.key}: {problem.detail}")
        except KeyboardInterrupt:
            # The audit changes nothing: stopping it anywhere is safe.
            self.stdout.write(f"Interrupted. So far: {report.summary()}.")
            raise CommandError("interrupted", returncode=130) from None
        self.stdout.write(f"Audit: {report.summary()}.")
        if not report.ok:
            raise CommandError("the archive does not match the manifest: see the lines above")
