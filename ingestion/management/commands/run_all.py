"""`manage.py run_all`: the whole system in one foreground process group, for `make run`.

Starts the EAGLE simulator with a few demo households, then the web server, a django-q2 cluster
(rotation and other jobs) and the poller; prefixes their output; stops them all cleanly on
Ctrl-C/SIGTERM. Each process starts once what it needs is there: the poller's first tick comes
after the simulator listens and its households are imported, and the start-up message after the
web server listens.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from rainlog.stopping import StopRequest

DEMO_OPERATOR = "demo"
# The simulator's port, unless given, is the web server's plus this (8000 -> 8765), as in the Makefile.
SIMULATOR_PORT_OFFSET = 765
LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT_SECONDS = 60


def listening(port: int) -> bool:
    """Whether something accepts connections on the loopback `port`."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


class Command(BaseCommand):
    help = (
        "Run the web server, task cluster, EAGLE simulator and poller together (Ctrl-C stops all)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8000, help="web server port")
        parser.add_argument(
            "--simulator-port",
            type=int,
            help=f"EAGLE simulator port (default: the web server's + {SIMULATOR_PORT_OFFSET})",
        )
        parser.add_argument("--demo-users", type=int, default=5, help="simulated households")
        parser.add_argument(
            "--no-simulator", action="store_true", help="poll real gateways (EAGLE_CLOUD_URL)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        port = options["port"]
        simulator_port = options["simulator_port"] or port + SIMULATOR_PORT_OFFSET
        ports = {"web server": port}
        if not options["no_simulator"]:
            ports["simulator"] = simulator_port
        for name, taken in ports.items():
            if listening(taken):
                raise CommandError(
                    f"port {taken} for the {name} is taken: choose others with "
                    "`make run RUN_PORT=...` (and SIMULATOR_PORT=...)"
                )
        self.ensure_demo_operator()
        env = dict(os.environ)
        manage = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py")]
        users_file = Path(settings.VAR_DIR) / "demo-users.jl"
        simulator = [
            *manage,
            "run_simulator",
            "--port",
            str(simulator_port),
            "--users",
            str(options["demo_users"]),
            "--users-file",
            str(users_file),
        ]
        if not options["no_simulator"]:
            env["EAGLE_CLOUD_URL"] = f"http://{LOOPBACK}:{simulator_port}/cgi-bin/post_manager"
        others = {
            "web": [*manage, "runserver", "--noreload", f"{LOOPBACK}:{port}"],
            "tasks": [*manage, "qcluster"],
            "poller": [*manage, "poll"],
        }

        children: dict[str, subprocess.Popen[bytes]] = {}
        with StopRequest() as stopping:
            try:
                if not options["no_simulator"]:
                    # A file left by an earlier run would not say that this simulator listens.
                    users_file.unlink(missing_ok=True)
                    children["simulator"] = self.start("simulator", simulator, env)
                    if not self.wait_for(
                        lambda: users_file.exists() and listening(simulator_port),
                        children,
                        stopping,
                    ):
                        return
                    call_command("import_users", str(users_file), stdout=self.stdout)
                for name, command in others.items():
                    children[name] = self.start(name, command, env)
                if not self.wait_for(lambda: listening(port), children, stopping):
                    return
                base = f"http://{LOOPBACK}:{port}"
                self.stdout.write(
                    self.style.SUCCESS(
                        f"\nrainlog is running: console at {base}/admin/ (login: {DEMO_OPERATOR}), "
                        f"API at {base}/api/, health at {base}/healthz. Ctrl-C stops everything.\n"
                    )
                )
                while not stopping.wait(1.0):
                    if self.exited(children):
                        stopping.set()
            finally:
                self.stop_all(children)

    def wait_for(
        self,
        ready: Callable[[], bool],
        children: dict[str, subprocess.Popen[bytes]],
        stopping: StopRequest,
    ) -> bool:
        """Wait until `ready()`; False if a child exits, a stop is asked or it takes too long."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not ready():
            if self.exited(children) or stopping.wait(0.2):
                return False
            if time.monotonic() > deadline:
                self.stderr.write(f"still not started after {STARTUP_TIMEOUT_SECONDS} s: stopping.")
                return False
        return True

    def exited(self, children: dict[str, subprocess.Popen[bytes]]) -> bool:
        for name, child in children.items():
            if child.poll() is not None:
                self.stderr.write(f"{name} exited with status {child.returncode}.")
                return True
        return False

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
