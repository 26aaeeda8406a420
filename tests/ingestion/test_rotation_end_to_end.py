"""Readings written across an hour boundary while rotations run and die at random points: in the
end the bucket holds every reading exactly once (in the hour file or its late parts)."""

import random
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import time_machine
from pytest_django.fixtures import Settings

from ingestion.archive import rotation
from ingestion.hourfiles import HourFileWriter
from tests.hour_files import demand_readings

USERS = ("0001", "0002", "0003")
START = datetime(2026, 3, 8, 9, 58, tzinfo=UTC)  # readings run from here across 10:00
FIRST_ROTATION = datetime(2026, 3, 8, 10, 5, tzinfo=UTC)
ALL_CLOSED = datetime(2026, 3, 8, 11, 10, tzinfo=UTC)

pytestmark = pytest.mark.django_db


class Killed(BaseException):
    pass


def write_continuously(
    go: threading.Semaphore, done: threading.Event, written: list[tuple[str, int]]
) -> None:
    """Six-second readings from 09:58 on, for every user; some 9 o'clock stragglers too. Each
    batch waits for a permit, given out as rotations start, so writes overlap the rotations."""
    with HourFileWriter() as writer:
        for n in range(40):
            go.acquire()
            batch = []
            for cloud_id in USERS:
                batch += demand_readings(cloud_id, START + timedelta(seconds=6 * n), 1)
                if n % 7 == 3:  # a straggler for 9 o'clock, whose file may be sealed already
                    straggler = START + timedelta(seconds=1 + n % 20 * 6)
                    batch += demand_readings(cloud_id, straggler, 1)
            result = writer.append(batch)
            assert not result.unwritten
            writer.sync()
            written += [(r.cloud_id, r.meter_timestamp) for r in batch]
    done.set()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_reading_is_archived_exactly_once(
    settings: Settings, s3_archive: str, s3_client: Any, seed: Any
) -> None:
    settings.ROTATE_LEASE_SECONDS = 30
    chance = random.Random(seed)
    written: list[tuple[str, int]] = []
    go, done = threading.Semaphore(0), threading.Event()
    writer = threading.Thread(target=write_continuously, args=(go, done, written))

    kills: list[rotation.Step] = []

    def kill_at_random(step: rotation.Step, key: str) -> None:
        if chance.random() < 0.05:
            kills.append(step)
            raise Killed(f"killed after {step} of {key}")

    moment = FIRST_ROTATION
    with time_machine.travel(moment, tick=False) as clock:
        writer.start()
        while not done.is_set():
            go.release(4)
            try:
                rotation.rotate(after_step=kill_at_random)
            except Killed:
                pass
            # The next run comes once a dead run's leases have lapsed.
            moment += timedelta(seconds=31)
            clock.move_to(moment)
        writer.join()
        # Then runs that are not killed: the first after the leases lapse finishes everything.
        clock.move_to(ALL_CLOSED)
        first = rotation.rotate()
        second = rotation.rotate()
    assert first.ok and first.attempted
    assert second.ok and not second.attempted and not second.registered

    assert kills, "no run was killed: the test proves nothing"
    archived: Counter[tuple[str, int]] = Counter()
    keys = [entry["Key"] for entry in s3_client.list_objects_v2(Bucket=s3_archive)["Contents"]]
    assert any(".late-" in key for key in keys), "no late part: the seal raced no writer"
    for key in keys:
        body = s3_client.get_object(Bucket=s3_archive, Key=key)["Body"].read()
        for line in body.splitlines():
            record = orjson.loads(line)
            archived[(record["cloud_id"], record["meter_timestamp"])] += 1
    assert len(written) == len(set(written))
    assert set(archived) == set(written)
    assert set(archived.values()) == {1}
