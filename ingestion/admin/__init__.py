"""The admin for ingestion, one module per concern (registered on import)."""

from ingestion.admin import console, hour_files, incidents, readings_store, reports  # noqa: F401
