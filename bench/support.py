"""What the benchmarks share: ports, subprocesses, moto's and Redis's servers, scratch databases,
CPU time."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dj_database_url
import psycopg2

MOTO_SERVER = (
    "import signal, sys\n"
    "from moto.server import ThreadedMotoServer\n"
    "server = ThreadedMotoServer(ip_address='127.0.0.1', port=int(sys.argv[1]), verbose=False)\n"
    "server.start()\n"
    "signal.sigwait([signal.SIGTERM, signal.SIGINT])\n"
    "server.stop()\n"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_average() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def wait_for(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up within {timeout:.0f} s: {exc}") from exc
            time.sleep(0.2)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def process(
    args: list[str], env: dict[str, str] | None, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process with its output in `log`, stopped with SIGTERM (then SIGKILL) on exit."""
    with open(log, "wb") as output:
        child = subprocess.Popen(args, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        yield child
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


@contextmanager
def moto_server(port: int, log: Path) -> Iterator[tuple[str, int]]:
    """moto's S3 server in its own process on a loopback port: (endpoint, pid)."""
    with process([sys.executable, "-c", MOTO_SERVER, str(port)], None, log) as child:
        endpoint = f"http://127.0.0.1:{port}"
        wait_for(f"{endpoint}/")
        yield endpoint, child.pid


@contextmanager
def redis_server(port: int, log: Path) -> Iterator[tuple[str, int]]:
    """A redis-server of the benchmark's own on a loopback port, without persistence: (url, pid)."""
    import redis

    command = [
        "redis-server", "--bind", "127.0.0.1", "--port", str(port),
        "--save", "", "--appendonly", "no", "--dir", str(log.parent),
    ]  # fmt: skip
    with process(command, None, log) as child:
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url, child.pid


def connect(url: str, dbname: str | None = None) -> Any:
    """An autocommit psycopg2 connection to the server of `url`, to its database or `dbname`."""
    config = dj_database_url.parse(url)
    connection = psycopg2.connect(
        host=config["HOST"] or "127.0.0.1",
        port=config["PORT"] or 5432,
        user=config["USER"] or None,
        password=config["PASSWORD"] or None,
        dbname=dbname or config["NAME"],
    )
    connection.autocommit = True
    return connection


def _admin_connection(url: str) -> Any:
    return connect(url, "postgres"), dj_database_url.parse(url)["NAME"]


def drop_database(url: str) -> None:
    admin, name = _admin_connection(url)
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def recreate_database(url: str) -> None:
    drop_database(url)
    admin, name = _admin_connection(url)
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()


def configure_django(work: Path, database_url: str, **overrides: str) -> None:
    """Environment for running the project in this process (and its children) under `work`."""
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "rainlog.settings",
            "RAINLOG_ENV_FILE": str(work / "no.env"),
            "DEBUG": "0",
            "SECRET_KEY": "bench-secret-key-long-enough-for-django-checks-0123456789abcdef",
            "FIELD_ENCRYPTION_KEYS": "YmVuY2gta2V5LWJlbmNoLWtleS1iZW5jaC1rZXktYmU=",
            "DATABASE_URL": database_url,
            "SECURE_SSL_REDIRECT": "0",
            "VAR_DIR": str(work),
            "LOG_ROOT": str(work / "logs"),
            "LOG_LEVEL": "WARNING",
            **overrides,
        }
    )
