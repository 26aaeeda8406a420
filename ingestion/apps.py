from django.apps import AppConfig
from django.db.models.signals import post_migrate


class IngestionConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "ingestion"

    def ready(self) -> None:
        from ingestion import checks  # noqa: F401  (registers the system checks)
        from ingestion.polling.schedules import register_after_migrate

        post_migrate.connect(register_after_migrate, sender=self)
