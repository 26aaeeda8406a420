"""manage.py export_parquet: a range, its dry run, and what it prints."""

from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
import time_machine
from django.core.management import CommandError, call_command

from ingestion.archive import rotation
from ingestion.models import DatasetFile, DatasetHour
from tests.hour_files import demand_readings, write

HOUR = datetime(2026, 3, 8, 9, tzinfo=UTC)
LATER = HOUR + timedelta(hours=3, minutes=5)

pytestmark = pytest.mark.django_db


def shipped_hours() -> None:
    for n in range(3):
        write(demand_readings("00a1", HOUR + timedelta(hours=n), 10))
    with time_machine.travel(LATER, tick=False):
        assert rotation.rotate().ok


def run(*args: str) -> str:
    out = StringIO()
    with time_machine.travel(LATER, tick=False):
        call_command("export_parquet", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_a_dry_run_lists_the_hours_of_the_range_and_changes_nothing() -> None:
    shipped_hours()
    output = run("--since", "2026-03-08-10", "--until", "2026-03-08-12", "--dry-run")
    assert "2026-03-08-10 new: 1 verified hour files, 10 lines, 0 not verified" in output
    assert "2026-03-08-11 new" in output
    assert "2026-03-08-09" not in output
    assert "would export 2 hour(s)" in output
    assert not DatasetHour.objects.exists()


def test_it_exports_only_the_range_asked_for() -> None:
    shipped_hours()
    output = run("--since", "2026-03-08-10", "--until", "2026-03-08-12")
    assert "2 of 2 hours exported (20 rows" in output
    assert sorted(DatasetHour.objects.values_list("hour", flat=True)) == [
        HOUR + timedelta(hours=1),
        HOUR + timedelta(hours=2),
    ]
    # Each hour: its demand readings and their summary.
    assert DatasetFile.objects.count() == 4
    # The rest of the day: only the hour not exported yet.
    assert "1 of 1 hours exported (10 rows" in run("--since", "2026-03-08")
    assert "0 of 0 hours exported" in run()


def test_an_empty_range_is_refused() -> None:
    with pytest.raises(CommandError, match="--until must be after --since"):
        run("--since", "2026-03-08-10", "--until", "2026-03-08-10")
