"""`manage.py run_simulator`: the EAGLE simulator in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import threading
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ingestion.eagle.simulator import FaultPlan, Simulator
from rainlog.stopping import StopRequest
from users.models import ConnectionType

STATS_EVERY_SECONDS = 10.0


class Command(BaseCommand):
    help = (
        "Serve simulated EAGLE gateways: the cloud API at /cgi-bin/post_manager and each "
        "gateway's local API at /eagle200/<cloud_id>/cgi-bin/post_manager (as an EAGLE-200) and "
        "/legacy/<cloud_id>/cgi-bin/post_manager (as a legacy EAGLE)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--users", type=int, default=10, help="number of simulated gateways")
        parser.add_argument("--latency", type=float, default=0.0, help="seconds added to replies")
        parser.add_argument("--seed", type=int, default=0, help="same seed, same households")
        parser.add_argument(
            "--users-file", help="write the accounts here as JSON lines (for import_users)"
        )
        parser.add_argument(
            "--connection-type",
            default=ConnectionType.CLOUD,
            choices=[ConnectionType.CLOUD, ConnectionType.EAGLE200, ConnectionType.LEGACY],
            help="how the users in --users-file reach their gateways",
        )
        parser.add_argument(
            "--faults",
            default="",
            help="comma-separated KIND[@CLOUD_ID][*SHARE][=RATE][~SECONDS], e.g. timeout=0.02",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["users"] < 0 or options["latency"] < 0:
            raise CommandError("--users and --latency cannot be negative")
        try:
            plan = FaultPlan.parse(options["faults"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        simulator = Simulator(
            users=options["users"],
            latency=options["latency"],
            seed=options["seed"],
            faults=plan,
            host=options["host"],
            port=options["port"],
        )
        try:
            simulator.start()
        except OSError as exc:
            raise CommandError(
                f"cannot listen on {options['host']}:{options['port']}: {exc}"
            ) from None

        # Signals are handled before readiness is announced: a caller that reads the banner and
        # then sends SIGTERM gets a clean stop, however late this process is scheduled.
        try:
            with StopRequest() as stopping:
                self.stdout.write(
                    f"EAGLE simulator: {options['users']} gateways at {simulator.url} "
                    f"(seed {options['seed']}, latency {options['latency']:g} s)\n"
                    f"  cloud API:  EAGLE_CLOUD_URL={simulator.cloud_url}\n"
                    f"  local APIs: gateway_address={simulator.url}/eagle200/<cloud_id> or "
                    f"{simulator.url}/legacy/<cloud_id>"
                )
                if plan.specs:
                    self.stdout.write(f"  faults: {options['faults']}")
                if options["users_file"]:
                    path = simulator.write_users_file(
                        options["users_file"], options["connection_type"]
                    )
                    self.stdout.write(f"  accounts written to {path}")
                self.report_until(stopping, simulator)
        finally:
            simulator.stop()
        stats = simulator.stats()
        self.stdout.write(
            f"stopped: {stats['requests']} requests, {stats['readings_served']} readings served, "
            f"{stats['faults_injected']} faults injected."
        )

    def report_until(self, stopping: threading.Event, simulator: Simulator) -> None:
        last_requests, last_time = 0, time.monotonic()
        while not stopping.wait(STATS_EVERY_SECONDS):
            stats, now = simulator.stats(), time.monotonic()
            rate = (stats["requests"] - last_requests) / (now - last_time)
            last_requests, last_time = stats["requests"], now
            self.stdout.write(
                f"{rate:8.1f} requests/s, {stats['in_flight']} in flight "
                f"(peak {stats['peak_in_flight']}), {stats['requests']} requests in all"
            )
