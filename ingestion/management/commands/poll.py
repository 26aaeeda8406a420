"""`manage.py poll`: the polling loop in the foreground (the same ticks as the scheduled windows)."""

from __future__ import annotations

import resource
import threading
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from ingestion.models import PollLease
from ingestion.polling.engine import Poller, TickReport, following_slot, grid_floor, run_ticks
from ingestion.polling.leases import FOREGROUND, HolderSession, ShardLease
from rainlog.stopping import StopRequest

# How long `--once` waits for a shard held by someone else.
ONCE_WAIT_TICKS = 3


class Command(BaseCommand):
    help = (
        "Poll every active user's EAGLE every INGEST_POLL_SECONDS in the foreground, on the same "
        "grid and under the same shard leases as the scheduled polling windows. Stops cleanly "
        "on SIGTERM or Ctrl-C after the current tick (files synced, leases released)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="run one tick now, then stop")
        parser.add_argument(
            "--shard",
            type=int,
            action="append",
            dest="shards",
            help="poll only this shard (repeatable; default: every shard)",
        )
        parser.add_argument("--ticks", type=int, help="stop after this many ticks")

    def handle(self, *args: Any, **options: Any) -> None:
        shards = sorted(set(options["shards"] or range(settings.INGEST_SHARDS)))
        bad = [shard for shard in shards if not 0 <= shard < settings.INGEST_SHARDS]
        if bad:
            raise CommandError(
                f"no shard {bad[0]}: INGEST_SHARDS={settings.INGEST_SHARDS} "
                f"(shards 0 to {settings.INGEST_SHARDS - 1})"
            )
        if options["ticks"] is not None and options["ticks"] < 1:
            raise CommandError("--ticks must be 1 or more")
        database = connections["default"]
        if database.vendor == "postgresql":
            database.settings_dict.setdefault("OPTIONS", {})["application_name"] = "rainlog poll"
            if not database.in_atomic_block:
                database.close()  # reconnects under that name

        with StopRequest(on_request=self.announce_stop) as stop:
            self.poll(shards, stop, options)

    def announce_stop(self) -> None:
        self.stdout.write("stopping after the current tick...")

    def poll(self, shards: list[int], stop: threading.Event, options: dict[str, Any]) -> None:
        session = HolderSession(FOREGROUND)
        holder = session.holder
        poller = Poller(shards, holder)
        leases = [ShardLease(shard, holder, session=session) for shard in shards]
        try:
            self.stdout.write(f"loading the users of shard {', '.join(map(str, shards))}...")
            poller.load_users()
            self.stdout.write(f"{len(poller.slots):,} users to poll every {poller.period:g} s")
            if not self.acquire(leases, stop, options["once"]):
                return
            poller.resume(from_files=not all(lease.handed_over for lease in leases))
            previous = [lease.previous_tick_at for lease in leases if lease.previous_tick_at]
            first_slot = following_slot(min(previous, default=None), poller.period)
            max_ticks = options["ticks"]
            if options["once"]:
                # Now, unless the previous holder already polled this slot.
                first_slot = max(grid_floor(time.time(), poller.period), first_slot or 0.0)
                max_ticks = 1
            ended = run_ticks(
                poller,
                leases,
                stop,
                hand_over=False,
                first_slot=first_slot,
                max_ticks=max_ticks,
                on_tick=self.show_tick,
            )
        finally:
            for lease in leases:
                lease.release()
            poller.close()
            session.close()
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.stdout.write(
            self.style.SUCCESS(f"{ended}: {poller.totals.summary()}; peak RSS {peak_mb:.0f} MB")
        )

    def acquire(self, leases: list[ShardLease], stop: threading.Event, once: bool) -> bool:
        wait = ONCE_WAIT_TICKS * settings.INGEST_POLL_SECONDS if once else float("inf")
        for lease in leases:

            def waiting(row: PollLease, shard: int = lease.shard) -> None:
                self.stdout.write(f"shard {shard} is polled by {row.holder}: waiting for it...")

            how = lease.acquire(stop, wait, leave_to_foreground=False, on_wait=waiting)
            if how.acquired:
                continue
            for taken in leases:
                taken.release()
            if stop.is_set():
                self.stdout.write("stopped before polling.")
                return False
            raise CommandError(f"shard {lease.shard} was not free: {how.value}")
        return True

    def show_tick(self, report: TickReport) -> None:
        line = report.summary()
        self.stdout.write(self.style.WARNING(line) if report.late else line)
