"""`make run`'s `manage.py run_all`: ports of one's choosing, and each process started only once
what it needs is there (the poller's first tick finds the simulator listening, on every start)."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from rainlog.local_env import write_local_env

PROJECT_DIR = Path(__file__).resolve().parents[2]
TICK = re.compile(r"^\s*poller \| \S+ shard 0: \d+/\d+ users, .* (?P<failures>\d+) failures")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_it_refuses_a_taken_port_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CommandError, match=f"port {port} for the web server is taken"):
            call_command("run_all", port=port, simulator_port=free_port())


def run_all(env: dict[str, str], port: int, simulator_port: int, ticks: int) -> list[str]:
    """Start `run_all`, wait for `ticks` poll ticks, stop it with Ctrl-C; its output lines."""
    process = subprocess.Popen(
        [sys.executable, "manage.py", "run_all", "--port", str(port)]
        + ["--simulator-port", str(simulator_port), "--demo-users", "3"],
        cwd=PROJECT_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 120
    try:
        for line in process.stdout:
            lines.append(line.rstrip())
            if sum(bool(TICK.match(seen)) for seen in lines) >= ticks:
                break
            assert time.monotonic() < deadline, "\n".join(lines)
    finally:
        os.killpg(process.pid, signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    return lines + rest.splitlines()


def fresh_checkout(tmp_path: Path) -> tuple[dict[str, str], int]:
    """The environment of a fresh checkout after `make run`'s first steps (the development
    .env written, the SQLite database migrated), and the simulator's port."""
    simulator_port = free_port()
    env_file = tmp_path / ".env"
    write_local_env(env_file, simulator_port, tmp_path / "var")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        # Line by line into a pipe or file, as it would reach a terminal.
        "PYTHONUNBUFFERED": "1",
        "RAINLOG_ENV_FILE": str(env_file),
        "VAR_DIR": str(tmp_path / "var"),
    }
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr
    return env, simulator_port


@pytest.mark.slow
def test_a_fresh_start_and_a_restart_poll_the_simulator_without_a_failure(tmp_path: Path) -> None:
    port = free_port()
    env, simulator_port = fresh_checkout(tmp_path)

    for _ in range(2):
        lines = run_all(env, port, simulator_port, ticks=3)

        output = "\n".join(lines)
        running = next(i for i, line in enumerate(lines) if "rainlog is running" in line)
        assert f"console at http://127.0.0.1:{port}/admin/" in lines[running]
        listening = next(i for i, line in enumerate(lines) if "accounts written" in line)
        first_poller_line = next(i for i, line in enumerate(lines) if "poller |" in line)
        assert listening < first_poller_line, output
        ticks = [TICK.match(line) for line in lines]
        failures = [int(match["failures"]) for match in ticks if match]
        assert len(failures) >= 3 and not any(failures), output
        assert "Traceback" not in output
