"""Two rotations running at once never ship the same file at the same time, nor twice."""

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.db import connection
from pytest_django.fixtures import Settings

from ingestion import hourfiles
from ingestion.archive import rotation
from ingestion.models import HourFile, HourFileState
from tests.hour_files import demand_readings, write

HOUR = datetime(2026, 3, 8, 9, tzinfo=UTC)
AFTER_CLOSE = HOUR + timedelta(hours=1, minutes=5)


@pytest.mark.django_db(transaction=True)
def test_concurrent_rotations_claim_each_file_once(
    settings: Settings, s3_archive: str, s3_client: Any
) -> None:
    settings.ROTATE_CONCURRENCY = 3
    users = [f"{n:04x}" for n in range(40)]
    for cloud_id in users:
        write(demand_readings(cloud_id, HOUR, 10))
    guard = threading.Lock()
    in_flight: set[str] = set()
    claims: list[str] = []
    overlaps: list[str] = []

    def track(step: rotation.Step, key: str) -> None:
        with guard:
            if step == rotation.Step.CLAIMED:
                claims.append(key)
                if key in in_flight:
                    overlaps.append(key)
                in_flight.add(key)
            elif step == rotation.Step.RECORDED:
                in_flight.discard(key)

    reports: list[rotation.RotationReport] = []
    start = threading.Barrier(2)

    def run() -> None:
        try:
            start.wait()
            reports.append(rotation.rotate(after_step=track))
        finally:
            connection.close()

    with time_machine.travel(AFTER_CLOSE, tick=False):
        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert len(reports) == 2 and all(report.ok for report in reports)
    assert overlaps == []
    assert sorted(claims) == sorted(hourfiles.archive_key(c, HOUR) for c in users)
    assert sum(report.shipped for report in reports) == len(users)
    listed = s3_client.list_objects_v2(Bucket=s3_archive)["Contents"]
    assert len(listed) == len(users)
    assert set(HourFile.objects.values_list("state", flat=True)) == {HourFileState.VERIFIED}
