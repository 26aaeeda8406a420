"""manage.py as a new user meets it: a closed pipe ends a command quietly, and a development
checkout works on the `.env` that `make run` writes, without exporting anything."""

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from pytest_django.fixtures import Settings

from rainlog.local_env import write_local_env
from tests.factories import EagleUserFactory

PROJECT_DIR = Path(__file__).resolve().parents[2]


def manage(*args: str, env: dict[str, str], **kwargs: Any) -> subprocess.Popen[str]:
    clean = {"PATH": os.environ["PATH"], "HOME": env.get("HOME", "/nonexistent")}
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_DIR,
        env={**clean, **env},
        text=True,
        **kwargs,
    )


def test_it_writes_a_private_env_with_generated_keys_and_never_overwrites_it(
    tmp_path: Path,
) -> None:
    env_file = tmp_path / ".env"

    assert write_local_env(env_file, simulator_port=8876, var_dir=tmp_path / "var")
    first = env_file.read_text()
    assert not write_local_env(env_file, simulator_port=9999, var_dir=tmp_path / "var")

    assert env_file.read_text() == first
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    values = dict(line.split("=", 1) for line in first.splitlines() if "=" in line)
    assert values["DEBUG"] == "1"
    assert len(values["SECRET_KEY"]) >= 50
    assert values["EAGLE_CLOUD_URL"] == "http://127.0.0.1:8876/cgi-bin/post_manager"
    assert "," not in values["FIELD_ENCRYPTION_KEYS"]
    second = tmp_path / "other.env"
    write_local_env(second, simulator_port=8876, var_dir=tmp_path / "var")
    assert second.read_text() != first


def test_it_keeps_the_debug_key_readable_when_an_earlier_debug_run_left_data(
    tmp_path: Path,
) -> None:
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "rainlog.sqlite3").touch()

    write_local_env(tmp_path / ".env", simulator_port=8765, var_dir=tmp_path / "var")

    assert "FIELD_ENCRYPTION_KEYS=" in (text := (tmp_path / ".env").read_text())
    keys = text.split("FIELD_ENCRYPTION_KEYS=")[1].splitlines()[0].split(",")
    assert keys[1] == "ZGV2ZWxvcG1lbnQta2V5LW5vdC1mb3ItcHJvZC11c2U="


def test_commands_run_on_the_written_env_alone_and_talk_to_the_local_simulator(
    tmp_path: Path,
) -> None:
    env_file = tmp_path / ".env"
    write_local_env(env_file, simulator_port=8876, var_dir=tmp_path / "var")
    env = {"RAINLOG_ENV_FILE": str(env_file), "VAR_DIR": str(tmp_path / "var")}

    shell = manage(
        "shell",
        "-c",
        "from django.conf import settings; print(settings.DEBUG, settings.EAGLE_CLOUD_URL)",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = shell.communicate(timeout=120)

    assert shell.returncode == 0, err
    assert out.strip().endswith("True http://127.0.0.1:8876/cgi-bin/post_manager")
    assert "Traceback" not in err


def test_a_debug_run_without_an_env_never_defaults_to_the_real_cloud(tmp_path: Path) -> None:
    env = {"DEBUG": "1", "RAINLOG_ENV_FILE": str(tmp_path / "none"), "VAR_DIR": str(tmp_path)}
    shell = manage(
        "shell",
        "-c",
        "from django.conf import settings; print(settings.EAGLE_CLOUD_URL)",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = shell.communicate(timeout=120)
    assert out.strip().splitlines()[-1].startswith("http://127.0.0.1:"), err


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("users", [3, 2000])
def test_a_reader_that_goes_away_ends_the_command_quietly(
    settings: Settings, tmp_path: Path, users: int
) -> None:
    # A few lines sit in the output buffer until exit; thousands fill the pipe while exporting.
    EagleUserFactory.create_batch(users)
    database = connection.settings_dict
    env = {
        "DEBUG": "1",
        "RAINLOG_ENV_FILE": str(tmp_path / "none"),
        "FIELD_ENCRYPTION_KEYS": ",".join(settings.FIELD_ENCRYPTION_KEYS),
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/"
        f"{database['NAME']}",
    }
    export = manage(
        "export_users", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0
    )
    assert export.stdout is not None
    export.stdout.close()  # like `| head -1` once it has its line

    _, err = export.communicate(timeout=120)

    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert export.returncode == 141
