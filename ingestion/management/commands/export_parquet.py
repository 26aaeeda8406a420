"""manage.py export_parquet: write shipped hours to the Parquet dataset (the hourly task does the
same for hours whose hour files changed since its last run)."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from ingestion import hourfiles, parquet_export
from ingestion.management.options import add_hour_range_arguments, hour_range
from rainlog.stopping import StopRequest


class Command(BaseCommand):
    help = (
        "Export every shipped hour of a range to the Parquet dataset (PARQUET_PREFIX): hours "
        "never exported, and hours whose hour files changed since (a late part), as a new "
        "complete version. Without --since/--until, the hours changed since the last run."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_hour_range_arguments(parser)
        parser.add_argument(
            "--dry-run", action="store_true", help="list what would be exported; change nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        since, until = hour_range(options)
        if options["dry_run"]:
            self.dry_run(since, until)
            return
        with StopRequest(on_request=self.announce_stop) as stop:
            # To the real stderr: the command's wrapper would end every redraw with a newline.
            with tqdm(
                total=0, unit="hour", file=sys.stderr, disable=options["verbosity"] == 0
            ) as bar:

                def progress(total: int) -> None:
                    if total:
                        bar.total = total
                        bar.refresh()
                    else:
                        bar.update(1)

                report = parquet_export.export(
                    since=since, until=until, should_stop=stop.is_set, on_hour=progress
                )
        self.stdout.write(f"Parquet export: {report.summary()}.")
        for error in report.errors:
            self.stderr.write(error)
        if not report.ok:
            raise CommandError(
                f"{report.failed} hour(s) failed: they are retried after a backoff; see Parquet "
                "hours in the admin."
            )

    def announce_stop(self) -> None:
        self.stderr.write("Stopping after the hour in progress (again to quit now)…")

    def dry_run(self, since: datetime | None, until: datetime | None) -> None:
        counts: dict[str, int] = {}
        for planned in parquet_export.plan_export(since, until):
            counts[planned.status] = counts.get(planned.status, 0) + 1
            if planned.status == "exported":
                continue
            found = planned.sources
            self.stdout.write(
                f"{hourfiles.hour_label(planned.hour)} {planned.status}: {found.verified_files} "
                f"verified hour files, {found.lines} lines, {found.unshipped_files} not verified"
            )
        due = sum(n for status, n in counts.items() if status not in ("exported", "waiting"))
        self.stdout.write(
            f"Dry run: would export {due} hour(s); {counts.get('exported', 0)} up to date, "
            f"{counts.get('waiting', 0)} waiting for their hour files."
        )
