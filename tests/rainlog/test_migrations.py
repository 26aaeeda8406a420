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


@pytest.mark.slow
def test_hours_exported_before_the_demand_summary_are_exported_again(
    empty_postgresql_database: str, tmp_path: Path
) -> None:
    url = empty_postgresql_database
    before = manage("migrate", "ingestion", "0011", database_url=url, tmp_path=tmp_path)
    assert before.returncode == 0, before.stderr[-3000:]
    config = dj_database_url.parse(url)
    connection = psycopg2.connect(
        host=config["HOST"], port=config["PORT"], user=config["USER"], dbname=config["NAME"]
    )
    with connection, connection.cursor() as cursor:
        for hour, state, record_type in [
            ("2026-03-08 09:00Z", "exported", "demand"),
            ("2026-03-08 10:00Z", "exported", "price"),
            ("2026-03-08 11:00Z", "failed", "demand"),
        ]:
            cursor.execute(
                "INSERT INTO ingestion_datasethour (hour, state, version, attempt_version, "
                "source_files, source_lines, duplicates, skipped, attempts, last_error, "
                "created_at, updated_at) VALUES (%s, %s, 1, 1, 1, 1, 0, 0, 1, '', now(), now()) "
                "RETURNING id",
                [hour, state],
            )
            (hour_id,) = cursor.fetchone()
            cursor.execute(
                "INSERT INTO ingestion_datasetfile (dataset_hour_id, version, record_type, key, "
                "state, rows, size, sha256, created_at) "
                "VALUES (%s, 1, %s, %s, 'current', 1, 1, '', now())",
                [hour_id, record_type, f"{hour}-{record_type}"],
            )

    after = manage("migrate", "ingestion", "0012", database_url=url, tmp_path=tmp_path)
    assert after.returncode == 0, after.stderr[-3000:]
    with connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT to_char(hour AT TIME ZONE 'UTC', 'HH24'), state FROM ingestion_datasethour "
            "ORDER BY 1"
        )
        # Only the exported hour with demand readings lacks a summary; a failed one is retried
        # anyway.
        assert cursor.fetchall() == [("09", "pending"), ("10", "exported"), ("11", "failed")]
        cursor.execute("SELECT DISTINCT content FROM ingestion_datasetfile")
        assert cursor.fetchall() == [("readings",)]
    connection.close()
