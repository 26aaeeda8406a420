"""Scheduling: the schedules registered idempotently, the scheduler turning them into window
tasks, and real django-q2 clusters sharing the shards over Redis, handing windows over and
taking over a killed cluster's shard."""

import os
import secrets
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
import redis
import time_machine
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.sql import emit_post_migrate_signal
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.brokers.redis_broker import Redis
from django_q.conf import Conf
from django_q.models import OrmQ, Schedule, Success
from django_q.scheduler import scheduler
from django_q.tasks import async_task
from pytest_django.fixtures import Settings

from ingestion.eagle.simulator import Simulator
from ingestion.models import PollLease, Tick
from ingestion.polling.leases import rescue_orphaned_shards
from ingestion.polling.schedules import register_schedules
from tests.polling import (
    create_users,
    current_database_url,
    duplicates,
    logged_keys,
    wait_until,
)

NOW = datetime(2026, 3, 1, 12, 0, 20, tzinfo=UTC)


def schedules() -> dict[str, Schedule]:
    return {s.name: s for s in Schedule.objects.filter(name__in=wanted_names())}


def wanted_names() -> list[str]:
    return [f"poll-shard-{n}" for n in range(django_settings.INGEST_SHARDS)] + [
        "rotate-hourly",
        "export-parquet-hourly",
    ]


@pytest.mark.django_db
def test_it_registers_a_polling_schedule_per_shard_and_the_hourly_rotation(
    settings: Settings,
) -> None:
    settings.INGEST_SHARDS = 3
    Schedule.objects.all().delete()
    with time_machine.travel(NOW, tick=False):
        changes = register_schedules()
    mine = [change for change in changes if change[0] in wanted_names()]
    assert sorted(mine) == sorted((name, "created") for name in wanted_names())
    found = schedules()
    for shard in range(3):
        poll = found[f"poll-shard-{shard}"]
        assert (poll.func, poll.args, poll.schedule_type, poll.minutes, poll.repeats) == (
            "ingestion.tasks.poll_window",
            f"({shard},)",
            Schedule.MINUTES,
            1,
            -1,
        )
        assert poll.next_run == datetime(2026, 3, 1, 12, 1, tzinfo=UTC)
    rotate = found["rotate-hourly"]
    assert (rotate.func, rotate.schedule_type) == ("ingestion.tasks.rotate_hourly", Schedule.HOURLY)
    assert rotate.next_run > datetime(2026, 3, 1, 13, 0, tzinfo=UTC)
    export = found["export-parquet-hourly"]
    assert (export.func, export.schedule_type) == (
        "ingestion.tasks.export_parquet_hourly",
        Schedule.HOURLY,
    )
    assert export.next_run > rotate.next_run


@pytest.mark.django_db
def test_registering_again_changes_nothing_but_follows_the_shard_count(
    settings: Settings,
) -> None:
    settings.INGEST_SHARDS = 3
    Schedule.objects.all().delete()
    register_schedules()
    first_runs = {name: s.next_run for name, s in schedules().items()}
    # A copy made by hand would run every task twice.
    Schedule.objects.create(name="poll-shard-1", func="ingestion.tasks.poll_window", args="(1,)")
    with time_machine.travel(timezone.now() + timedelta(minutes=5)):
        register_schedules()
    assert Schedule.objects.filter(name__startswith="poll-shard-").count() == 3
    assert {name: s.next_run for name, s in schedules().items()} == first_runs
    settings.INGEST_SHARDS = 1
    changes = register_schedules()
    assert ("poll-shard-2", "removed") in changes
    assert sorted(
        Schedule.objects.filter(name__startswith="poll-shard-").values_list("name", flat=True)
    ) == ["poll-shard-0"]


@pytest.mark.django_db
def test_migrate_leaves_the_schedules_in_place_and_the_command_reports_them() -> None:
    Schedule.objects.all().delete()
    emit_post_migrate_signal(verbosity=0, interactive=False, db="default")
    assert set(schedules()) == set(wanted_names())
    out = StringIO()
    call_command("setup_schedules", stdout=out)
    assert "poll-shard-0: updated" in out.getvalue()
    assert Schedule.objects.filter(name="poll-shard-0").count() == 1


# The scheduler closes the connection it finds (as in a cluster): no test transaction around it.
@pytest.mark.django_db(transaction=True)
def test_the_scheduler_turns_each_polling_schedule_into_a_window_task(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.INGEST_SHARDS = 2
    # Queue the tasks in the database broker instead of running them inline (the test setting).
    monkeypatch.setattr(Conf, "SYNC", False)
    Schedule.objects.all().delete()
    register_schedules()
    due = timezone.now() - timedelta(seconds=1)
    Schedule.objects.update(next_run=due)
    scheduler(broker=get_broker())
    tasks = [queued.task for queued in OrmQ.objects.all()]
    windows = sorted(
        task["args"] for task in tasks if task["func"] == "ingestion.tasks.poll_window"
    )
    assert windows == [(0,), (1,)]
    assert schedules()["poll-shard-0"].next_run == due + timedelta(minutes=1)


@pytest.mark.django_db
def test_a_window_sends_a_task_for_a_shard_whose_holder_died(settings: Settings) -> None:
    settings.INGEST_SHARDS = 3
    settings.INGEST_LEASE_SECONDS = 30
    settings.INGEST_POLL_SECONDS = 6
    sent: list[int] = []

    def rescue_at(seconds: int) -> list[int]:
        traveller.move_to(NOW + timedelta(seconds=seconds))
        return rescue_orphaned_shards([0], sent.append)

    with time_machine.travel(NOW, tick=False) as traveller:
        PollLease.objects.ensure(range(3))
        for shard in range(3):
            PollLease.objects.claim(shard, f"window@host:{shard + 1}:x", NOW, 30)
        traveller.move_to(NOW + timedelta(seconds=20))
        PollLease.objects.renew(0, "window@host:1:x", timezone.now(), 30, NOW)
        PollLease.objects.wait_as_successor(2, "window@host:9:y", timezone.now())
        # Shard 1's holder died at once; shard 2's too, with a successor named that never comes.
        assert rescue_at(40) == []  # expired, but a live successor would claim it about now
        assert rescue_at(45) == [1]
        assert rescue_at(46) == []  # sent already: one rescuer
        assert rescue_at(65) == [2]
        assert PollLease.objects.get(shard=2).successor == ""
        assert rescue_at(90) == [1]  # still nobody: sent again
    assert sent == [1, 2, 1]


# --- Real clusters ------------------------------------------------------------------------------

REDIS_URL = "redis://127.0.0.1:6379/0"


def cluster_of(holder: str) -> int:
    """The process group (one per cluster started) of the live worker named in a holder."""
    pid = int(holder.split("@", 1)[1].split(":")[1])
    return os.getpgid(pid)


def note_clusters(known: dict[str, int]) -> None:
    """Which cluster each holder seen so far runs in (while its process lives)."""
    for holder in Tick.objects.values_list("holder", flat=True).distinct():
        if holder not in known:
            try:
                known[holder] = cluster_of(holder)
            except ProcessLookupError:
                continue


def holders(shard: int) -> set[str]:
    return set(
        Tick.objects.filter(shard=shard, users_polled__gt=0).values_list("holder", flat=True)
    )


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_clusters_share_the_shards_hand_windows_over_and_take_over_a_killed_one(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.ConnectionError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    settings.INGEST_SHARDS = 2
    name = f"rainlog-test-{secrets.token_hex(4)}"
    with Simulator(users=12, seed=9) as sim:
        create_users(sim)
        Schedule.objects.all().delete()
        register_schedules()
        Schedule.objects.filter(name__startswith="rotate").delete()
        # Due now: the first scheduler pass of either cluster sends the next windows.
        Schedule.objects.update(next_run=timezone.now())
        env = {
            **os.environ,
            "DATABASE_URL": current_database_url(),
            "REDIS_URL": REDIS_URL,
            "Q_CLUSTER_NAME": name,
            "Q_SYNC": "0",
            "Q_WORKERS": "4",
            "INGEST_SHARDS": "2",
            "INGEST_POLL_SECONDS": "1",
            "INGEST_REQUEST_TIMEOUT": "0.5",
            "INGEST_LEASE_SECONDS": "5",
            "LOG_ROOT": str(settings.LOG_ROOT),
            "EAGLE_CLOUD_URL": sim.cloud_url,
        }
        manage = [sys.executable, str(Path(django_settings.BASE_DIR) / "manage.py"), "qcluster"]
        clusters: list[subprocess.Popen[bytes]] = []
        broker = Redis(list_key=name)
        # Tasks are signed with the cluster's name: sign ours as the clusters' scheduler would.
        monkeypatch.setattr(Conf, "PREFIX", name)
        seen: dict[str, int] = {}

        def send_windows() -> None:
            for shard in (0, 1):
                async_task("ingestion.tasks.poll_window", shard, broker=broker, sync=False)

        try:
            for label in ("a", "b"):
                log = open(tmp_path / f"cluster-{label}.log", "wb")  # noqa: SIM115
                clusters.append(
                    subprocess.Popen(
                        manage,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            send_windows()
            wait_until(
                lambda: all(
                    Tick.objects.filter(shard=s, users_polled__gt=0).exists() for s in (0, 1)
                ),
                45,
                "both shards polled",
            )
            # The scheduler's tasks take over at a tick boundary.
            wait_until(lambda: all(len(holders(s)) >= 2 for s in (0, 1)), 60, "windows handed over")
            note_clusters(seen)
            victim = cluster_of(PollLease.objects.get(shard=0).holder)
            survivor = next(c.pid for c in clusters if c.pid != victim)
            killed_at = timezone.now()
            os.killpg(victim, signal.SIGKILL)
            if cluster_of(PollLease.objects.get(shard=1).holder) == victim:
                # No window of the survivor is there to notice: the next scheduled ones come.
                send_windows()

            def taken_over() -> bool:
                holder = PollLease.objects.get(shard=0).holder
                try:
                    if not holder or cluster_of(holder) != survivor:
                        return False
                except ProcessLookupError:  # still the dead holder's name
                    return False
                return Tick.objects.filter(
                    shard=0, holder=holder, users_polled__gt=0, started_at__gt=killed_at
                ).exists()

            wait_until(taken_over, 50, "shard 0 taken over by the surviving cluster")
            note_clusters(seen)
            first_after = (
                Tick.objects.filter(shard=0, started_at__gt=killed_at, users_polled__gt=0)
                .order_by("scheduled_at")
                .first()
            )
        finally:
            for cluster in clusters:
                if cluster.poll() is None:
                    os.killpg(cluster.pid, signal.SIGKILL)
                cluster.wait(timeout=10)
            broker.delete_queue()
    assert first_after is not None
    assert (first_after.started_at - killed_at).total_seconds() < 60
    for shard in (0, 1):
        slots = list(
            Tick.objects.filter(shard=shard)
            .order_by("scheduled_at")
            .values_list("scheduled_at", flat=True)
        )
        # One tick per slot (never two pollers at once), every slot accounted for (the dead
        # holder's unpolled slots are recorded as late by its successor).
        assert len(slots) == len(set(slots))
        assert all((b - a).total_seconds() == 1 for a, b in zip(slots, slots[1:], strict=False))
    # Both clusters polled, and no reading was logged twice.
    assert set(seen.values()) == {cluster.pid for cluster in clusters}
    assert duplicates(logged_keys()) == []
    results = Success.objects.filter(func="ingestion.tasks.poll_window")
    assert any("handed over" in str(task.result) for task in results)
