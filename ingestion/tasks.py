"""django-q2 task functions: thin, idempotent callers of the ingestion domain functions.

Schedules are registered by a command, never at import; each function takes JSON-able arguments.
"""

import time

from django_q.tasks import async_task

from ingestion import incident_reports, parquet_export, readings_store
from ingestion.archive import rotation
from ingestion.polling import engine
from ingestion.polling.schedules import task_timeout
from rainlog.stopping import worker_stopping


def rotate_hourly() -> dict[str, object]:
    """Ship every closed hour file (scheduled hourly as "rotate-hourly"). Stops claiming new
    files well before the task's timeout and, if files are left, goes on in a new task."""
    deadline = time.monotonic() + 0.8 * task_timeout()
    with worker_stopping.task() as stop:
        report = rotation.rotate(should_stop=lambda: stop.is_set() or time.monotonic() > deadline)
    if report.stopped and report.attempted and not stop.is_set():
        async_task("ingestion.tasks.rotate_hourly")
    return report.as_dict()


def export_parquet_hourly() -> dict[str, object]:
    """Write the hours whose hour files changed since the last run to the Parquet dataset
    (scheduled hourly as "export-parquet-hourly", after the rotation). Stops well before the
    task's timeout and, if hours are left, goes on in a new task."""
    deadline = time.monotonic() + 0.8 * task_timeout()
    report = parquet_export.export(should_stop=lambda: time.monotonic() > deadline)
    if report.stopped:
        async_task("ingestion.tasks.export_parquet_hourly")
    return report.as_dict()


def poll_window(shard: int) -> str:
    """Poll one shard for a window (scheduled every minute per shard as "poll-shard-N"): wait for
    the shard's lease, run the ticks until the next window's task takes over, hand over. On
    SIGTERM it stops after the current tick and hands the shard over at once."""
    with worker_stopping.task() as stop:
        return engine.run_window(shard, stop)


def deliver_incident_reports() -> dict[str, object]:
    """Report incidents opened or resolved to ERROR_REPORT_URL and retry undelivered reports
    (scheduled every minute as "deliver-incident-reports"); does nothing while reporting is off.
    A pass ends within incident_reports.PASS_BUDGET_SECONDS, long before the task's timeout."""
    return incident_reports.run_report_pass().as_dict()


def load_readings() -> dict[str, object]:
    """Keep the readings table's partitions and load sealed hours into it (scheduled every
    READINGS_LOAD_INTERVAL minutes as "load-readings" while READINGS_STORE=postgres). Stops
    starting new loads well before the task's timeout; the next run goes on."""
    deadline = time.monotonic() + 0.8 * task_timeout()
    return readings_store.run_pass(should_stop=lambda: time.monotonic() > deadline).as_dict()
