"""Startup configuration: settings come from the environment and fail loudly when they are wrong."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]
PRODUCTION_ENVIRONMENT = {
    "DEBUG": "0",
    "SECRET_KEY": "a-production-like-secret-key-with-enough-entropy-0123456789-abcdefghij",
    "FIELD_ENCRYPTION_KEYS": "dGVzdC1rZXktdGVzdC1rZXktdGVzdC1rZXktdGVzdC0=",
    "ALLOWED_HOSTS": "rainlog.example.org",
    # Without it /metrics is closed and `check --deploy` warns (tests/security/test_no_enumeration).
    "METRICS_TOKEN": "a-scrape-token-for-prometheus",
}


def manage(*args: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run manage.py in a clean environment: nothing from the test run's own variables leaks in."""
    clean_env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "VAR_DIR": str(tmp_path / "var"),
    }
    clean_env["RAINLOG_ENV_FILE"] = str(tmp_path / "no.env")
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_DIR,
        env={**clean_env, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_it_refuses_to_start_without_a_secret_key_when_debug_is_off(tmp_path: Path) -> None:
    env = {k: v for k, v in PRODUCTION_ENVIRONMENT.items() if k != "SECRET_KEY"}
    result = manage("check", env=env, tmp_path=tmp_path)
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DEBUG", "maybe"),
        ("INGEST_POLL_SECONDS", "six"),
        ("Q_WORKERS", "0"),
        ("EAGLE_CLOUD_URL", "rainforestcloud.com"),
        ("ARCHIVE_COMPRESS", "zip"),
        # Shorter than a poll period: a healthy holder would lose its shard between two ticks.
        ("INGEST_LEASE_SECONDS", "6"),
        # The dataset's readings, its summary and the hour files each need a prefix of their own.
        ("PARQUET_PREFIX", "rainforest-logs"),
        ("PARQUET_SUMMARY_PREFIX", "rainforest-parquet/summary"),
    ],
)
def test_it_names_the_variable_that_does_not_parse(
    tmp_path: Path, variable: str, value: str
) -> None:
    result = manage("check", env={**PRODUCTION_ENVIRONMENT, variable: value}, tmp_path=tmp_path)
    assert result.returncode != 0
    assert f"{variable}=" in result.stderr


def test_check_deploy_is_clean_with_production_like_settings(tmp_path: Path) -> None:
    env = {**PRODUCTION_ENVIRONMENT, "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/test"}
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "no issues" in result.stdout


def test_embedded_defaults_migrate_and_pass_checks_on_sqlite(tmp_path: Path) -> None:
    env = {"DEBUG": "1"}
    migrated = manage("migrate", "--no-input", env=env, tmp_path=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert (tmp_path / "var" / "rainlog.sqlite3").exists()
    checked = manage("check", env=env, tmp_path=tmp_path)
    assert checked.returncode == 0, checked.stderr
