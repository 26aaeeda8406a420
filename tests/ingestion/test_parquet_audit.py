"""verify_archive checks the Parquet dataset against the hour files: each hour exported from
exactly its verified hour files, rows adding up to their lines, each file in the archive as
recorded, nothing else under PARQUET_PREFIX."""

import hashlib
from datetime import datetime, timedelta
from io import StringIO
from typing import Any

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError

from ingestion import parquet, parquet_export
from ingestion.archive import rotation, store
from ingestion.models import DatasetFile, DatasetFileContent, DatasetHour
from tests.fleet_dataset import AFTER_CLOSE, BOUNDARY, rotate_and_export
from tests.hour_files import demand_readings, write

pytestmark = pytest.mark.django_db


def verify(moment: datetime) -> tuple[str, CommandError | None]:
    out = StringIO()
    try:
        with time_machine.travel(moment, tick=False):
            call_command("verify_archive", stdout=out, stderr=StringIO())
    except CommandError as exc:
        return out.getvalue(), exc
    return out.getvalue(), None


def two_households_exported() -> None:
    write(demand_readings("00a1", BOUNDARY, 10) + demand_readings("0b02", BOUNDARY, 10))
    rotate_and_export(AFTER_CLOSE)


def test_an_exported_hour_passes(any_archive: Any) -> None:
    two_households_exported()
    output, error = verify(AFTER_CLOSE + timedelta(hours=3))
    assert error is None, output
    assert "1 Parquet hours (2 files) checked against the hour files: no problems" in output


def test_an_hour_shipped_long_ago_but_never_exported_is_reported(any_archive: Any) -> None:
    write(demand_readings("00a1", BOUNDARY, 10))
    with time_machine.travel(AFTER_CLOSE, tick=False):
        assert rotation.rotate().ok
    # Just shipped: the hourly export has not had its turn yet.
    assert verify(AFTER_CLOSE + timedelta(minutes=30))[1] is None

    output, error = verify(AFTER_CLOSE + timedelta(hours=3))
    assert error is not None
    assert "PARQUET-STALE rainforest-parquet hour 2026-09-21-10: not exported" in output


def test_a_late_part_not_exported_yet_makes_the_hour_stale(any_archive: Any) -> None:
    two_households_exported()
    write(demand_readings("00a1", BOUNDARY + timedelta(minutes=50), 2))
    with time_machine.travel(AFTER_CLOSE + timedelta(hours=1), tick=False):
        assert rotation.rotate().ok

    output, error = verify(AFTER_CLOSE + timedelta(hours=4))
    assert error is not None
    assert "version 1 was made from other hour files (2 files, 20 lines; now 3, 22)" in output

    with time_machine.travel(AFTER_CLOSE + timedelta(hours=4), tick=False):
        parquet_export.export()
    assert verify(AFTER_CLOSE + timedelta(hours=4))[1] is None


def test_a_changed_missing_or_stray_object_is_reported(any_archive: Any) -> None:
    two_households_exported()
    archive = store.open_archive()
    current = DatasetFile.objects.get(content=DatasetFileContent.READINGS)
    archive.delete(current.key)
    archive.create(current.key, b"PAR1 not really", 15, "0" * 64, "application/octet-stream")
    stray = current.key.replace("-v1-0", "-v7-0")
    archive.create(stray, b"x", 1, "0" * 64, "application/octet-stream")

    output, error = verify(AFTER_CLOSE + timedelta(hours=3))
    assert error is not None
    assert f"MISMATCHED {current.key}: 15 bytes" in output
    assert f"ORPHANED {stray}: under PARQUET_PREFIX, not in the database" in output

    archive.delete(current.key)
    assert f"MISSING {current.key}" in verify(AFTER_CLOSE + timedelta(hours=3))[0]


def test_rows_that_do_not_add_up_are_reported(any_archive: Any) -> None:
    two_households_exported()
    DatasetHour.objects.update(rows=19)
    DatasetFile.objects.update(rows=19)

    output, error = verify(AFTER_CLOSE + timedelta(hours=3))
    assert error is not None
    assert "PARQUET-ROWS rainforest-parquet hour 2026-09-21-10: 19 rows, 0 repeats" in output
    assert "its footer says 20 rows, not 19" in output


def test_a_demand_summary_missing_or_not_counting_the_readings_is_reported(
    any_archive: Any,
) -> None:
    two_households_exported()
    summary = DatasetFile.objects.get(content=DatasetFileContent.DEMAND_MINUTES)
    # A summary of three readings, recorded as this hour's with its own size and checksum.
    records = [reading.to_record() for reading in demand_readings("00a1", BOUNDARY, 3)]
    other = parquet.demand_minutes(dict(parquet.typed_tables(records))["demand"])
    body = parquet.parquet_bytes(other)
    digest = hashlib.sha256(body).hexdigest()
    archive = store.open_archive()
    archive.delete(summary.key)
    archive.create(summary.key, body, len(body), digest, parquet.CONTENT_TYPE)
    DatasetFile.objects.filter(pk=summary.pk).update(
        size=len(body), sha256=digest, rows=other.num_rows
    )

    output, error = verify(AFTER_CLOSE + timedelta(hours=3))
    assert error is not None
    assert (
        "PARQUET-SUMMARY rainforest-parquet hour 2026-09-21-10: its demand summary counts 3 "
        "readings, its files hold 20" in output
    )

    summary.delete()
    output, error = verify(AFTER_CLOSE + timedelta(hours=3))
    assert error is not None
    assert (
        "PARQUET-SUMMARY rainforest-parquet hour 2026-09-21-10: 20 demand readings and no "
        "summary of them" in output
    )
    assert f"ORPHANED {summary.key}: under PARQUET_SUMMARY_PREFIX, not in the database" in output
