"""manage.py load_readings: load sealed hours into the SQL readings store now (backfill); the
scheduled "load-readings" task does the same for new hours."""

from __future__ import annotations

import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from tqdm import tqdm

from ingestion import hourfiles, readings_store
from ingestion.management.options import add_hour_range_arguments, hour_range
from ingestion.models import ReadingsLoad
from rainlog.stopping import StopRequest


class Command(BaseCommand):
    help = (
        "Load sealed hour files into the readings table (READINGS_STORE=postgres): every hour not "
        "yet loaded, oldest first. Loading an hour again never duplicates a reading."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_hour_range_arguments(parser)
        parser.add_argument(
            "--workers",
            type=int,
            help="hours loaded at once (default READINGS_LOAD_WORKERS)",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="list the hours that would be loaded"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not readings_store.enabled():
            raise CommandError(readings_store.off_reason())
        now = timezone.now()
        since, until = hour_range(options)
        hours = readings_store.pending_hours(now, since, until)
        files = sum(pending.files for pending in hours)
        if options["dry_run"]:
            for pending in hours:
                self.stdout.write(f"{hourfiles.hour_label(pending.hour)}  {pending.files} file(s)")
            self.stdout.write(f"{len(hours)} hour(s), {files} file(s) to load.")
            return
        started = time.monotonic()
        with StopRequest(on_request=self.announce_stop) as stop:
            # To the real stderr: the command's wrapper would end every redraw with a newline.
            with tqdm(
                total=files, unit="file", file=sys.stderr, disable=options["verbosity"] == 0
            ) as bar:
                new_rows = [0]

                def advance(load: ReadingsLoad) -> None:
                    new_rows[0] += load.rows_inserted
                    bar.set_postfix(new_rows=new_rows[0], refresh=False)
                    bar.update(load.files + load.files_failed)

                loads = readings_store.load_pending(
                    hours,
                    workers=options["workers"],
                    now=now,
                    on_load=advance,
                    should_stop=stop.is_set,
                )
        read = sum(load.rows_read for load in loads)
        inserted = sum(load.rows_inserted for load in loads)
        seconds = time.monotonic() - started
        self.stdout.write(
            f"Loaded {sum(load.files for load in loads)} file(s) of {len(hours)} hour(s): "
            f"{read} readings read, {inserted} new, in {seconds:.1f} s."
        )
        failed = [load for load in loads if load.failed]
        for load in failed:
            self.stderr.write(f"{hourfiles.hour_label(load.hour)}: {load.error}")
        if failed:
            raise CommandError(
                f"{len(failed)} load(s) failed; what they could not load is tried again by the "
                "next run (see Readings loads in the admin)."
            )

    def announce_stop(self) -> None:
        self.stderr.write("Stopping: finishing the hours in flight (again to quit now)…")
