"""manage.py rotate_logs: ship closed hour files to the archive now (the hourly task does the same)."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from ingestion import hourfiles
from ingestion.archive import rotation
from ingestion.management.options import time_option
from rainlog.stopping import StopRequest


class ProgressBar:
    def __init__(self, bar: tqdm[Any]) -> None:
        self.bar = bar

    def expect(self, more: int) -> None:
        self.bar.total = (self.bar.total or 0) + more
        self.bar.refresh()

    def shipped(self, shipment: rotation.Shipment) -> None:
        self.bar.update(1)


class Command(BaseCommand):
    help = (
        "Ship every closed hour file (and late part) to the archive, verified, then remove the "
        "local copy. Failed files are retried by later runs after a backoff."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--hour", help="only this UTC hour (YYYY-MM-DD-HH or ISO 8601, e.g. 2026-12-03T14)"
        )
        parser.add_argument("--user", metavar="CLOUD_ID", help="only this user's files")
        parser.add_argument(
            "--dry-run", action="store_true", help="list what would be shipped; change nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        hour = time_option("--hour", options["hour"], hourfiles.parse_hour)
        cloud_id = options["user"]
        if cloud_id is not None:
            try:
                cloud_id = hourfiles.checked_cloud_id(cloud_id)
            except ValueError as exc:
                raise CommandError(f"--user: {exc}") from None
        if options["dry_run"]:
            self.dry_run(hour, cloud_id)
            return
        with StopRequest(on_request=self.announce_stop) as stop:
            # To the real stderr: the command's wrapper would end every redraw with a newline.
            with tqdm(
                total=0, unit="file", file=sys.stderr, disable=options["verbosity"] == 0
            ) as bar:
                report = rotation.rotate(
                    hour=hour,
                    cloud_id=cloud_id,
                    should_stop=stop.is_set,
                    progress=ProgressBar(bar),
                )
        self.stdout.write(f"Rotation: {report.summary()}.")
        for error in report.errors:
            self.stderr.write(error)
        if not report.ok:
            raise CommandError(
                f"{report.failed} file(s) failed and {report.conflicts} conflict(s): they stay on "
                "disk; see Hour files in the admin."
            )

    def announce_stop(self) -> None:
        self.stderr.write("Stopping: finishing the files in flight (again to quit now)…")

    def dry_run(self, hour: datetime | None, cloud_id: str | None) -> None:
        files = total = missing = 0
        for planned in rotation.plan_rotation(hour=hour, cloud_id=cloud_id):
            if planned.size is None:
                missing += 1
                self.stdout.write(f"MISSING {planned.key} ({planned.state}): no {planned.path}")
                continue
            files += 1
            total += planned.size
            self.stdout.write(f"{planned.key} ({planned.state}, {planned.size} bytes)")
        self.stdout.write(
            f"Dry run: would ship {files} file(s), {total} bytes; {missing} missing locally."
        )
