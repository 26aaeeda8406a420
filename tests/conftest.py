"""Fixtures shared by the whole suite: moto's S3 server, Redis, per-test log roots, operators."""

import hashlib
import importlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from moto.server import ThreadedMotoServer
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from tests.factories import OperatorFactory, ViewerFactory


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 HTTP API (moto's threaded server) on a free loopback port, for the session."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_client(s3_endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")


@pytest.fixture
def s3_archive(
    settings: Settings, s3_endpoint: str, s3_client: Any, request: pytest.FixtureRequest
) -> str:
    """Point the archive storage at a fresh bucket on moto's server; returns the bucket name."""
    bucket = "rainlog-test-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    bucket = "".join(c if c.isalnum() or c == "-" else "-" for c in bucket)
    # Parametrized tests share a name prefix and the server lives for the session: one bucket
    # each, or a test would find the objects of the one before.
    bucket += "-" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8]
    s3_client.create_bucket(Bucket=bucket)
    settings.ARCHIVE_BUCKET = bucket
    settings.AWS_S3_ENDPOINT_URL = s3_endpoint
    settings.STORAGES = {
        **settings.STORAGES,
        "archive": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": bucket,
                "endpoint_url": s3_endpoint,
                "region_name": "us-east-1",
                "file_overwrite": False,
                "default_acl": None,
                "querystring_expire": 300,
            },
        },
    }
    return bucket


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker: Any) -> Any:
    """The test database as `migrate` leaves it (tests skip migrations): with the cache table, and
    the readings table, which a migration makes with RunSQL, made here from the same SQL."""
    readings = importlib.import_module("ingestion.migrations.0007_readings_store")
    with django_db_blocker.unblock():
        call_command("createcachetable", verbosity=0)
        if connection.vendor != "postgresql":
            return  # the readings store is PostgreSQL only, as its migration is
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass('readings')")
            if cursor.fetchone()[0] is None:
                cursor.execute(readings.CREATE_READINGS)


@pytest.fixture(params=["s3", "local"])
def any_archive(request: pytest.FixtureRequest) -> str:
    """A test using it runs against moto's S3 server and against the local archive."""
    if request.param == "s3":
        request.getfixturevalue("s3_archive")
    return str(request.param)


class RedisServer:
    """A redis-server of the test's own on a free loopback port, without persistence."""

    def __init__(self, directory: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            "redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
            "--save", "", "--appendonly", "no", "--dir", str(self.directory),
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait()
            self.process = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server on this machine")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_cache(settings: Settings, redis_server: RedisServer) -> Iterator[RedisServer]:
    """The shared cache on a running Redis, emptied, as where REDIS_URL is set (a test may stop
    the server: it is started again after)."""
    from ingestion.polling.latest import shared_cache

    if redis_server.process is None:
        redis_server.start()
    redis.Redis.from_url(redis_server.url).flushdb()
    settings.REDIS_URL = redis_server.url
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_server.url,
            "OPTIONS": {"socket_connect_timeout": 1.0, "socket_timeout": 1.0},
        }
    }
    # A cache found unreachable by an earlier test is tried again at once.
    shared_cache.retry_at = 0.0
    yield redis_server
    if redis_server.process is None:
        redis_server.start()


@pytest.fixture(autouse=True)
def fast_password_hasher(settings: Settings) -> None:
    """Operators' passwords hashed cheaply: PBKDF2's deliberate slowness costs ~0.3 s a hash."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def isolated_storage(settings, tmp_path: Path) -> None:
    """Every test gets its own LOG_ROOT and local archive directory."""
    settings.LOG_ROOT = tmp_path / "logs"
    settings.ARCHIVE_ROOT = tmp_path / "archive"
    settings.STORAGES = {
        **settings.STORAGES,
        "archive": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "archive")},
        },
    }


@pytest.fixture
def operator(db: None) -> User:
    return OperatorFactory()


@pytest.fixture
def viewer(db: None) -> User:
    return ViewerFactory()


@pytest.fixture
def operator_client(operator: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(operator)
    return client


@pytest.fixture
def viewer_client(viewer: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(viewer)
    return client
