"""System checks of the ingestion settings: `manage.py check` and every server start say at once
when a setting cannot take effect."""

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Warning, register
from django.db import connection


@register()
def check_readings_store(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    if settings.READINGS_STORE == "postgres" and connection.vendor != "postgresql":
        return [
            Warning(
                f"READINGS_STORE=postgres needs PostgreSQL and the database is {connection.vendor}:"
                " the readings store stays off and the API reads hour files.",
                hint="Point DATABASE_URL at PostgreSQL, or leave READINGS_STORE empty.",
                id="ingestion.W001",
            )
        ]
    return []
