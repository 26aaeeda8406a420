"""Test-suite environment: real PostgreSQL (DATABASE_URL, default the local server).

RAINLOG_TEST_DATABASE=sqlite runs the tests on SQLite instead, the embedded default of `make run`:
`make test` runs the database-dependent tests that way too (SQLITE_TESTS in the Makefile).

Set before Django reads its settings, so the suite runs the same whatever the shell exports.
"""

import os

import dj_database_url
import django
import psycopg2
import pytest

TEST_ENVIRONMENT = {
    "DJANGO_SETTINGS_MODULE": "rainlog.settings",
    # A checkout's development .env (written by `make run`) is not the suite's configuration.
    "RAINLOG_ENV_FILE": os.devnull,
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/test",
    "DEBUG": "0",
    "SECRET_KEY": "test-secret-key-that-is-long-enough-for-django-checks-0123456789",
    "FIELD_ENCRYPTION_KEYS": "dGVzdC1rZXktdGVzdC1rZXktdGVzdC1rZXktdGVzdC0=",
    "ALLOWED_HOSTS": "testserver,localhost,127.0.0.1",
    "SECURE_SSL_REDIRECT": "0",
    "Q_SYNC": "1",
    # The EAGLE simulator and test gateways listen on loopback, and test users name LAN gateways;
    # DEBUG is off in tests (tests/security/test_gateway_addresses.py narrows it).
    "GATEWAY_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128,10.0.0.0/8,192.168.0.0/16",
    "PLAYGROUND_ENABLED": "1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
ON_SQLITE = os.environ.get("RAINLOG_TEST_DATABASE", "postgresql") == "sqlite"
if ON_SQLITE:
    # pytest-django keeps SQLite's test database in memory: the file is never created.
    os.environ["DATABASE_URL"] = "sqlite:///rainlog-test.sqlite3"
for name, value in TEST_ENVIRONMENT.items():
    os.environ.setdefault(name, value)
# Tests never inherit a real archive or broker from the shell; fixtures provide their own.
for name in ("ARCHIVE_BUCKET", "AWS_S3_ENDPOINT_URL", "REDIS_URL", "ERROR_REPORT_URL"):
    os.environ.pop(name, None)


def require_postgresql() -> None:
    url = os.environ["DATABASE_URL"]
    config = dj_database_url.parse(url)
    if config["ENGINE"] != "django.db.backends.postgresql":
        pytest.exit(f"DATABASE_URL={url!r}: the test suite runs on PostgreSQL only.", returncode=2)
    try:
        psycopg2.connect(
            host=config["HOST"] or "127.0.0.1",
            port=config["PORT"] or 5432,
            user=config["USER"] or None,
            password=config["PASSWORD"] or None,
            dbname="postgres",
            connect_timeout=3,
        ).close()
    except psycopg2.OperationalError as exc:
        pytest.exit(
            f"PostgreSQL is not reachable at {config['HOST']}:{config['PORT']} ({exc}).\n"
            "Start it (e.g. `pg_ctlcluster 15 main start`) or point DATABASE_URL at a running server.",
            returncode=2,
        )


if not ON_SQLITE:
    require_postgresql()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if ON_SQLITE:
        skip = pytest.mark.skip(reason="needs PostgreSQL (RAINLOG_TEST_DATABASE=sqlite)")
        for item in items:
            if "postgresql" in item.keywords:
                item.add_marker(skip)


# Set Django up now, so test modules and fixtures can import models at collection time.
django.setup()
