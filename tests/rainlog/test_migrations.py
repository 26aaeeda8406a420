"""Migrations: the suite builds its tables without them (--no-migrations), so they are proven here.

A fresh PostgreSQL database and a fresh SQLite file are migrated from zero by `manage.py migrate`
in a subprocess, as `make run` and a deployment do, and the models must match the migrations.
"""

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import dj_database_url
import psycopg2
import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]


def manage(*args: str, database_url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "VAR_DIR": str(tmp_path / "var"),
        "RAINLOG_ENV_FILE": str(tmp_path / "no.env"),
        "DEBUG": "1",
        "SECRET_KEY": "migration-check-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
        "FIELD_ENCRYPTION_KEYS": os.environ["FIELD_ENCRYPTION_KEYS"],
        "DATABASE_URL": database_url,
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def admin_connection() -> "psycopg2.extensions.connection":
    config = dj_database_url.parse(os.environ["DATABASE_URL"])
    connection = psycopg2.connect(
        host=config["HOST"] or "127.0.0.1",
        port=config["PORT"] or 5432,
        user=config["USER"] or None,
        password=config["PASSWORD"] or None,
        dbname="postgres",
    )
    connection.autocommit = True
    return connection


@pytest.fixture
def empty_postgresql_database() -> Iterator[str]:
    name = f"rainlog_migrations_{uuid.uuid4().hex[:12]}"
    connection = admin_connection()
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    config = dj_database_url.parse(os.environ["DATABASE_URL"])
    user = config["USER"] or "postgres"
    host = config["HOST"] or "127.0.0.1"
    port = config["PORT"] or 5432
    try:
        yield f"postgres://{user}@{host}:{port}/{name}"
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.close()


@pytest.mark.slow
def test_it_migrates_an_empty_postgresql_database_to_the_models(
    empty_postgresql_database: str, tmp_path: Path
) -> None:
    migrated = manage(
        "migrate", "--no-input", database_url=empty_postgresql_database, tmp_path=tmp_path
    )
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    check = manage(
        "makemigrations",
        "--check",
        "--dry-run",
        database_url=empty_postgresql_database,
        tmp_path=tmp_path,
    )
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]


@pytest.mark.slow
def test_it_migrates_an_empty_sqlite_database_as_make_run_does(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'rainlog.sqlite3'}"
    migrated = manage("migrate", "--no-input", database_url=database_url, tmp_path=tmp_path)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
