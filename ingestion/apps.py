from django.apps import AppConfig
from django.db.models.signals import post_migrate


class IngestionConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "ingestion"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from ingestion import checks  # noqa: F401  (registers the system checks)
        from ingestion.polling.latest import connect_user_signals
        from ingestion.polling.schedules import register_after_migrate
        from rainlog.stopping import worker_stopping

        post_migrate.connect(register_after_migrate, sender=self)
        connect_user_signals()
        # SIGTERM in a worker asks its polling window or rotation to finish cleanly.
        post_spawn.connect(worker_stopping.install, dispatch_uid="rainlog-worker-stopping")
