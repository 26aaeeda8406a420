"""`manage.py setup_schedules`: register rainlog's django-q2 schedules (idempotent)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from ingestion.polling.schedules import register_schedules


class Command(BaseCommand):
    help = (
        "Create or update the django-q2 schedules: one per-minute 'poll-shard-N' per shard "
        "(INGEST_SHARDS), the hourly 'rotate-hourly' and 'export-parquet-hourly' after it. Safe to run any number of times; "
        "migrate runs it too."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        changes = register_schedules()
        for name, change in changes:
            self.stdout.write(f"{name}: {change}")
        self.stdout.write(self.style.SUCCESS(f"{len(changes)} schedules checked."))
