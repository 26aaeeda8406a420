"""The django-q2 schedules rainlog needs, registered idempotently by name.

- "poll-shard-N", one per shard, every minute: `ingestion.tasks.poll_window(N)`. Each task polls
  its shard until the next minute's task takes over (see poller.run_window and leases.py);
- "rotate-hourly", every hour shortly after the hour closes: `ingestion.tasks.rotate_hourly()`.
- "export-parquet-hourly", every hour after the rotation: `ingestion.tasks.export_parquet_hourly()`
  writes the hours just shipped (and any changed by late parts) to the Parquet dataset.
- "deliver-incident-reports", every minute: `ingestion.tasks.deliver_incident_reports()` (a no-op
  while ERROR_REPORT_URL is unset).
- "load-readings", every READINGS_LOAD_INTERVAL minutes while the SQL readings store is on:
  `ingestion.tasks.load_readings()` (removed again when it is turned off).

`register_schedules()` runs from `manage.py setup_schedules` and after every `migrate` (the app's
post_migrate handler), never at import. It creates what is missing, brings existing schedules in
line with the settings without moving their next run, and removes polling schedules of shards
that no longer exist (INGEST_SHARDS was lowered) and the load schedule of a store turned off.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from django.conf import settings
from django.db import connections
from django.db.models import Q
from django.utils import timezone
from django_q.models import Schedule

from ingestion import readings_store

POLL_SCHEDULE_PREFIX = "poll-shard-"
ROTATE_SCHEDULE = "rotate-hourly"
REPORT_SCHEDULE = "deliver-incident-reports"
LOAD_SCHEDULE = "load-readings"
PARQUET_SCHEDULE = "export-parquet-hourly"
# The export starts this long after the rotation, which ships a typical hour well within it.
PARQUET_AFTER_ROTATION = timedelta(minutes=10)


def task_timeout() -> int:
    """Seconds a django-q2 task may run before the cluster kills it (Q_CLUSTER["timeout"])."""
    # cast: the settings dict mixes value types, so its values are typed object.
    return cast(int, settings.Q_CLUSTER["timeout"])


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    name: str
    func: str
    args: str
    schedule_type: str
    minutes: int | None
    first_run: datetime

    def fields(self) -> dict[str, Any]:
        return {
            "func": self.func,
            "args": self.args,
            "kwargs": "",
            "schedule_type": self.schedule_type,
            "minutes": self.minutes,
            "repeats": -1,
            "cluster": None,
        }


def wanted_schedules(now: datetime | None = None) -> list[ScheduleSpec]:
    now = now or timezone.now()
    next_minute = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    next_hour = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    specs = [
        ScheduleSpec(
            name=f"{POLL_SCHEDULE_PREFIX}{shard}",
            func="ingestion.tasks.poll_window",
            args=repr((shard,)),
            schedule_type=Schedule.MINUTES,
            minutes=1,
            first_run=next_minute,
        )
        for shard in range(settings.INGEST_SHARDS)
    ]
    # Files of an hour are shippable once it is over plus the grace period.
    rotation = next_hour + timedelta(seconds=settings.ROTATE_GRACE_SECONDS + 30)
    specs.append(
        ScheduleSpec(
            name=ROTATE_SCHEDULE,
            func="ingestion.tasks.rotate_hourly",
            args="",
            schedule_type=Schedule.HOURLY,
            minutes=None,
            first_run=rotation,
        )
    )
    specs.append(
        ScheduleSpec(
            name=PARQUET_SCHEDULE,
            func="ingestion.tasks.export_parquet_hourly",
            args="",
            schedule_type=Schedule.HOURLY,
            minutes=None,
            first_run=rotation + PARQUET_AFTER_ROTATION,
        )
    )
    specs.append(
        ScheduleSpec(
            name=REPORT_SCHEDULE,
            func="ingestion.tasks.deliver_incident_reports",
            args="",
            schedule_type=Schedule.MINUTES,
            minutes=1,
            first_run=next_minute,
        )
    )
    if readings_store.enabled():
        specs.append(
            ScheduleSpec(
                name=LOAD_SCHEDULE,
                func="ingestion.tasks.load_readings",
                args="",
                schedule_type=Schedule.MINUTES,
                minutes=settings.READINGS_LOAD_INTERVAL,
                first_run=next_minute,
            )
        )
    return specs


def register_schedules(using: str = "default") -> list[tuple[str, str]]:
    """Create or update every wanted schedule; returns (name, "created"/"updated"/"removed")."""
    manager = Schedule.objects.using(using)
    changes = []
    specs = wanted_schedules()
    for spec in specs:
        fields = spec.fields()
        # Schedule.name is not unique: a copy made by hand would run the task twice.
        copies = list(manager.filter(name=spec.name).order_by("pk").values_list("pk", flat=True))
        if len(copies) > 1:
            manager.filter(pk__in=copies[1:]).delete()
        _, created = manager.update_or_create(
            name=spec.name,
            defaults=fields,
            create_defaults={**fields, "next_run": spec.first_run},
        )
        changes.append((spec.name, "created" if created else "updated"))
    names = {spec.name for spec in specs}
    obsolete = manager.filter(
        Q(name__startswith=POLL_SCHEDULE_PREFIX) | Q(name=LOAD_SCHEDULE)
    ).exclude(name__in=names)
    changes.extend((name, "removed") for name in obsolete.values_list("name", flat=True))
    obsolete.delete()
    return changes


def register_after_migrate(using: str = "default", verbosity: int = 1, **kwargs: Any) -> None:
    """post_migrate handler: schedules exist as soon as the database does."""
    if Schedule._meta.db_table not in connections[using].introspection.table_names():
        return
    for name, change in register_schedules(using):
        if verbosity >= 2:
            print(f"  schedule {name}: {change}")
