"""`manage.py run_all`: the whole system in one foreground process group, for `make run`.

Starts the web server, a django-q2 cluster (rotation and other jobs), the EAGLE simulator with a few
demo households, and the poller; prefixes their output; stops them all cleanly on Ctrl-C/SIGTERM.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from rainlog.stopping import StopRequest

DEMO_OPERATOR = "demo"


class Command(BaseCommand):
    help = (
        "Run the web server, task cluster, EAGLE simulator and poller together (Ctrl-C stops all)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8000, help="web server port")
        parser.add_argument("--simulator-port", type=int, default=8765)
        parser.add_argument("--demo-users", type=int, default=5, help="simulated households")
        parser.add_argument(
            "--no-simulator", action="store_true", help="poll real gateways (EAGLE_CLOUD_URL)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.ensure_demo_operator()
        env = dict(os.environ)
        processes: dict[str, list[str]] = {}
        manage = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py")]
        if not options["no_simulator"]:
            users_file = Path(settings.VAR_DIR) / "demo-users.jl"
            processes["simulator"] = [
                *manage,
                "run_simulator",
                "--port",
                str(options["simulator_port"]),
                "--users",
                str(options["demo_users"]),
                "--users-file",
                str(users_file),
            ]
            env["EAGLE_CLOUD_URL"] = (
                f"http://127.0.0.1:{options['simulator_port']}/cgi-bin/post_manager"
            )
        processes["web"] = [*manage, "runserver", "--noreload", f"127.0.0.1:{options['port']}"]
        processes["tasks"] = [*manage, "qcluster"]
        processes["poller"] = [*manage, "poll"]

        children: dict[str, subprocess.Popen[bytes]] = {}
        with StopRequest() as stopping:
            try:
                for name, command in processes.items():
                    children[name] = self.start(name, command, env)
                    if name == "simulator":
                        self.import_demo_users(users_file, stopping)
                self.stdout.write(
                    self.style.SUCCESS(
                        f"\nrainlog is running: admin at http://127.0.0.1:{options['port']}/admin/ "
                        f"(login: {DEMO_OPERATOR}), API at http://127.0.0.1:{options['port']}/api/, "
                        f"health at http://127.0.0.1:{options['port']}/healthz. "
                        "Ctrl-C stops everything.\n"
                    )
                )
                while not stopping.wait(1.0):
                    for name, child in children.items():
                        if child.poll() is not None:
                            self.stderr.write(f"{name} exited with status {child.returncode}.")
                            stopping.set()
            finally:
                self.stop_all(children)

    def start(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        threading.Thread(target=self.relay, args=(name, child), daemon=True).start()
        return child

    def relay(self, name: str, child: subprocess.Popen[bytes]) -> None:
        assert child.stdout is not None
        for line in child.stdout:
            self.stdout.write(f"{name:>9} | {line.decode(errors='replace').rstrip()}")

    def stop_all(self, children: dict[str, subprocess.Popen[bytes]]) -> None:
        # Reverse order: the poller flushes its files before the simulator goes away.
        for name, child in reversed(children.items()):
            if child.poll() is None:
                self.stdout.write(f"stopping {name}...")
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for child in children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
        self.stdout.write("all stopped.")

    def import_demo_users(self, users_file: Path, stopping: StopRequest) -> None:
        # The simulator writes its accounts file once it listens.
        deadline = time.monotonic() + 30
        while not users_file.exists() and time.monotonic() < deadline:
            if stopping.wait(0.2):
                return
        if users_file.exists():
            call_command("import_users", str(users_file), stdout=self.stdout)

    def ensure_demo_operator(self) -> None:
        operators = get_user_model().objects
        if operators.filter(username=DEMO_OPERATOR).exists():
            self.stdout.write(
                f"Demo operator '{DEMO_OPERATOR}' exists (its password was printed on the first run; "
                f"`manage.py changepassword {DEMO_OPERATOR}` sets a new one)."
            )
            return
        password = secrets.token_urlsafe(12)
        operators.create_superuser(DEMO_OPERATOR, "demo@localhost", password)
        self.stdout.write(
            self.style.WARNING(
                f"Created demo operator: username '{DEMO_OPERATOR}', password '{password}' "
                "(shown only this once)."
            )
        )
