"""The admin for ingestion, one module per concern (registered on import)."""

from ingestion.admin import (  # noqa: F401
    console,
    hour_files,
    incidents,
    parquet_hours,
    readings_store,
    reports,
)
