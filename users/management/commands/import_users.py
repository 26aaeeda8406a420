import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from rainlog.stopping import StopRequest
from users.jsonlines import ImportSummary, Outcome, import_users


class Command(BaseCommand):
    help = (
        "Import EAGLE users from a JSON-lines file (cloud_id, email, eagle_password, optional "
        "fetch metadata; the seed's user_email and user_pw are accepted too). Each line is its own transaction; bad lines are "
        "reported with their number and do not stop the others. Exit status 1 if any line failed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="the JSON-lines file, or - for standard input")
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="report what each line would do, then roll everything back",
        )

    def handle(self, *args: Any, file: str, dry_run: bool, **options: Any) -> None:
        summary = ImportSummary()
        try:
            source = sys.stdin.buffer if file == "-" else Path(file).open("rb")
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc.strerror}") from None
        with source, StopRequest() as stop:
            if dry_run:
                self.stdout.write("Dry run: nothing will be saved.")
            for result in import_users(source, dry_run=dry_run, summary=summary, should_stop=stop):
                style = self.style.ERROR if result.outcome is Outcome.FAILED else None
                self.stdout.write(result.describe(), style)
        self.stdout.write(summary.describe())
        if summary.failed_lines:
            raise CommandError(f"{len(summary.failed_lines)} line(s) could not be imported.")
        if summary.interrupted_at is not None:
            raise CommandError("Interrupted: the lines before were imported, the rest were not.")
