"""The admin for ingestion, one module per concern (registered on import)."""

from ingestion.admin import hour_files, incidents  # noqa: F401
