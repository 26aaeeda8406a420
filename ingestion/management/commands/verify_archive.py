"""manage.py verify_archive: audit the archive against the manifest and the local disk."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ingestion import hourfiles
from ingestion.archive import audit


def parse_since(value: str) -> datetime:
    """A UTC hour (YYYY-MM-DD-HH), a day (YYYY-MM-DD) or an ISO 8601 time (UTC if naive)."""
    try:
        return hourfiles.parse_hour_label(value)
    except ValueError:
        pass
    try:
        day = date.fromisoformat(value)
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(
            f"--since {value!r}: give YYYY-MM-DD, YYYY-MM-DD-HH or an ISO 8601 time"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Command(BaseCommand):
    help = (
        "Compare the manifest with the archive (presence, size, SHA-256) and the local disk; "
        "report missing, mismatched and orphaned objects and unshipped files gone from disk. "
        "Exits non-zero on any problem."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--since", type=parse_since, help="only hours from this UTC time on (default: all)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        report = audit.AuditReport()

        def show_progress(report: audit.AuditReport) -> None:
            if options["verbosity"] > 0:
                self.stderr.write(
                    f"… {report.verified_checked} verified files checked, "
                    f"{report.objects_listed} objects listed"
                )

        try:
            for problem in audit.audit_archive(
                report, since=options["since"], on_page=show_progress
            ):
                self.stdout.write(f"{problem.kind.upper()} {problem.key}: {problem.detail}")
        except KeyboardInterrupt:
            # The audit changes nothing: stopping it anywhere is safe.
            self.stdout.write(f"Interrupted. So far: {report.summary()}.")
            raise CommandError("interrupted", returncode=130) from None
        self.stdout.write(f"Audit: {report.summary()}.")
        if not report.ok:
            raise CommandError("the archive does not match the manifest: see the lines above")
