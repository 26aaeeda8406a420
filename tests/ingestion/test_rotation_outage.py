"""S3 outages: files fail with the reason recorded, stay on disk, and ship once S3 is back."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
import time_machine
from botocore.config import Config
from moto.server import ThreadedMotoServer
from pytest_django.fixtures import Settings

from ingestion import hourfiles
from ingestion.archive import rotation
from ingestion.models import HourFile, HourFileState
from tests.hour_files import demand_readings, write

HOUR = datetime(2026, 3, 8, 9, tzinfo=UTC)
AFTER_CLOSE = HOUR + timedelta(hours=1, minutes=5)
BUCKET = "rainlog-outage"

pytestmark = pytest.mark.django_db


def point_archive_at(settings: Settings, endpoint: str) -> None:
    settings.STORAGES = {
        **settings.STORAGES,
        "archive": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": BUCKET,
                "endpoint_url": endpoint,
                "region_name": "us-east-1",
                # One try per request, so an outage shows at once instead of after retries.
                "client_config": Config(retries={"max_attempts": 1, "mode": "standard"}),
            },
        },
    }


@pytest.fixture
def own_s3() -> Iterator[tuple[ThreadedMotoServer, int]]:
    """A moto server of this test's own, which the test may stop and start again."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    yield server, port
    server.stop()


def stored_keys(port: int) -> list[str]:
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1")
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", []))


def test_an_unreachable_archive_fails_files_with_the_reason_and_keeps_them(
    settings: Settings,
) -> None:
    for cloud_id in ("0001", "0002"):
        write(demand_readings(cloud_id, HOUR, 5))
    point_archive_at(settings, "http://127.0.0.1:9")  # nothing listens there

    with time_machine.travel(AFTER_CLOSE, tick=False):
        report = rotation.rotate()

    assert report.failed == 2 and not report.ok
    for row in HourFile.objects.all():
        assert row.state == HourFileState.FAILED
        assert "Could not connect" in row.last_error
        assert row.attempts == 1
        assert row.next_attempt_at == AFTER_CLOSE + timedelta(seconds=60)
        assert hourfiles.local_path(row.cloud_id, HOUR).exists()


def test_failed_files_back_off_and_are_never_removed_however_often_they_fail(
    settings: Settings,
) -> None:
    settings.ROTATE_RETRY_MAX_SECONDS = 600
    write(demand_readings("0001", HOUR, 5))
    point_archive_at(settings, "http://127.0.0.1:9")
    moment = AFTER_CLOSE
    delays = []
    for _ in range(7):
        with time_machine.travel(moment, tick=False):
            rotation.rotate()
            # Not due again before its backoff: a run now changes nothing.
            row = HourFile.objects.get()
            assert rotation.rotate().failed == 0
        delays.append((row.next_attempt_at - moment).total_seconds())
        moment = row.next_attempt_at
    assert delays == [60, 120, 240, 480, 600, 600, 600]
    assert HourFile.objects.get().attempts == 7
    assert hourfiles.local_path("0001", HOUR).exists()


def test_an_outage_in_the_middle_of_a_run_is_recovered_by_a_later_run(
    settings: Settings, own_s3: Any
) -> None:
    server, port = own_s3
    settings.ROTATE_CONCURRENCY = 2
    originals = {}
    for n in range(12):
        cloud_id = f"{n:04x}"
        write(demand_readings(cloud_id, HOUR, 20))
        originals[hourfiles.archive_key(cloud_id, HOUR)] = hourfiles.local_path(
            cloud_id, HOUR
        ).read_bytes()
    point_archive_at(settings, f"http://127.0.0.1:{port}")
    uploads = []

    def stop_s3_after_three_uploads(step: rotation.Step, key: str) -> None:
        if step == rotation.Step.UPLOADED:
            uploads.append(key)
            if len(uploads) == 3:
                server.stop()

    with time_machine.travel(AFTER_CLOSE, tick=False):
        report = rotation.rotate(after_step=stop_s3_after_three_uploads)

    assert report.failed > 0 and report.shipped >= 3
    assert report.shipped + report.failed == 12
    for row in HourFile.objects.filter(state=HourFileState.FAILED):
        assert row.last_error and hourfiles.local_path(row.cloud_id, HOUR).exists()
    for row in HourFile.objects.filter(state=HourFileState.VERIFIED):
        assert not hourfiles.local_path(row.cloud_id, HOUR).exists()

    # S3 is back on the same address; the next run after the backoff ships the rest.
    revived = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    revived.start()
    try:
        with time_machine.travel(AFTER_CLOSE + timedelta(minutes=5), tick=False):
            assert rotation.rotate().ok
        assert stored_keys(port) == sorted(originals)
        client = boto3.client(
            "s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1"
        )
        for key, data in originals.items():
            assert client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == data
        assert set(HourFile.objects.values_list("state", flat=True)) == {HourFileState.VERIFIED}
    finally:
        revived.stop()
