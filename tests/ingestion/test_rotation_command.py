"""manage.py rotate_logs and the hourly task: thin callers of rotation.rotate."""

import os
import signal
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError
from pytest_django.fixtures import Settings

from ingestion import hourfiles, tasks
from ingestion.management.commands import rotate_logs as rotate_logs_module
from ingestion.models import HourFile, HourFileState
from tests.hour_files import demand_readings, write

HOUR = datetime(2026, 3, 8, 9, tzinfo=UTC)
AFTER_CLOSE = HOUR + timedelta(hours=1, minutes=5)

pytestmark = pytest.mark.django_db


def rotate_logs(*args: str) -> str:
    out = StringIO()
    with time_machine.travel(AFTER_CLOSE, tick=False):
        call_command("rotate_logs", *args, stdout=out, stderr=StringIO(), verbosity=0)
    return out.getvalue()


def test_it_ships_and_prints_a_summary(s3_archive: str) -> None:
    write(demand_readings("002738", HOUR, 4))
    output = rotate_logs()
    assert "Rotation: 1 shipped" in output
    assert HourFile.objects.get().state == HourFileState.VERIFIED


def test_a_dry_run_lists_the_files_and_changes_nothing(s3_archive: str, s3_client: Any) -> None:
    write(demand_readings("002738", HOUR, 4))
    local = hourfiles.local_path("002738", HOUR)

    output = rotate_logs("--dry-run")

    assert f"{hourfiles.archive_key('002738', HOUR)} (new, {local.stat().st_size} bytes)" in output
    assert "would ship 1 file(s)" in output
    assert not HourFile.objects.exists()
    assert not hourfiles.sealed_marker(local).exists()
    assert "Contents" not in s3_client.list_objects_v2(Bucket=s3_archive)


def test_hour_and_user_narrow_the_run(s3_archive: str) -> None:
    write(demand_readings("0001", HOUR, 2))
    write(demand_readings("0002", HOUR, 2))
    write(demand_readings("0002", HOUR - timedelta(hours=1), 2))

    rotate_logs("--hour", "2026-03-08-09", "--user", "0002")

    assert list(HourFile.objects.values_list("cloud_id", "hour")) == [("0002", HOUR)]


@pytest.mark.parametrize("hour", ["2026-03-08T09", "2026-03-08T09:00Z", "2026-03-08 10:00+01:00"])
def test_it_takes_the_hour_in_iso_8601_too(s3_archive: str, hour: str) -> None:
    write(demand_readings("0002", HOUR, 2))
    write(demand_readings("0002", HOUR - timedelta(hours=1), 2))

    rotate_logs("--hour", hour)

    assert list(HourFile.objects.values_list("hour", flat=True)) == [HOUR]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hour", "2026-03-08T09:30"], "--hour: '2026-03-08T09:30' is not the start of an hour"),
        (["--hour", "yesterday"], "--hour: 'yesterday' is not a time: give YYYY-MM-DD-HH or ISO"),
        (["--user", "not/hex"], "--user"),
    ],
)
def test_bad_options_are_refused_with_a_clear_error(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        rotate_logs(*args)


def test_it_exits_non_zero_when_a_file_fails(settings: Settings) -> None:
    write(demand_readings("002738", HOUR, 2))
    settings.STORAGES = {
        **settings.STORAGES,
        "archive": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {"bucket_name": "rainlog-down", "endpoint_url": "http://127.0.0.1:9"},
        },
    }
    with pytest.raises(CommandError, match="1 file\\(s\\) failed") as raised:
        rotate_logs()
    assert raised.value.returncode == 1
    assert hourfiles.local_path("002738", HOUR).exists()


def test_the_hourly_task_ships_and_returns_a_json_able_report(s3_archive: str) -> None:
    write(demand_readings("002738", HOUR, 2))
    with time_machine.travel(AFTER_CLOSE, tick=False):
        report = tasks.rotate_hourly()
    assert report["shipped"] == 1 and report["failed"] == 0 and report["errors"] == []


def test_the_hourly_task_stops_before_its_timeout_and_leaves_the_rest(
    settings: Settings, s3_archive: str
) -> None:
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 0}
    write(demand_readings("002738", HOUR, 2))
    with time_machine.travel(AFTER_CLOSE, tick=False):
        report = tasks.rotate_hourly()
    assert report["stopped"] and report["shipped"] == 0
    assert HourFile.objects.get().state == HourFileState.OPEN


def test_sigterm_lets_the_files_in_flight_finish_and_stops(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, s3_archive: str
) -> None:
    settings.ROTATE_CONCURRENCY = 1
    for n in range(12):
        write(demand_readings(f"{n:04x}", HOUR, 2))
    seen = []

    def terminate_after_the_first(self, shipment: Any) -> None:
        seen.append(shipment)
        if len(seen) == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(rotate_logs_module.ProgressBar, "shipped", terminate_after_the_first)

    output = rotate_logs()

    assert "stopped early" in output
    verified = HourFile.objects.filter(state=HourFileState.VERIFIED).count()
    assert 1 <= verified < 12
    # Nothing is left half done: every file is either verified and gone, or untouched on disk.
    for row in HourFile.objects.exclude(state=HourFileState.VERIFIED):
        assert row.state == HourFileState.OPEN and hourfiles.local_path(row.cloud_id, HOUR).exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
