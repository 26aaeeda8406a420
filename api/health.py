"""/healthz: is each dependency reachable? JSON with 200 when all are, 503 otherwise."""

import logging
from collections.abc import Callable

from django.core.files.storage import storages
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django_q.brokers import get_broker

logger = logging.getLogger(__name__)


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def check_broker() -> None:
    if not get_broker().ping():
        raise ConnectionError("broker did not answer")


def check_storage() -> None:
    # exists() on a key that is never written: a HEAD on S3, a stat on the local file system.
    storages["archive"].exists("healthz-probe")


CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "broker": check_broker,
    "storage": check_storage,
}


def run_checks() -> dict[str, dict[str, str]]:
    results = {}
    for name, check in CHECKS.items():
        try:
            check()
        except Exception as exc:  # noqa: BLE001
            # Whatever a dependency raises is the answer a health check exists to report.
            logger.warning("health check %s failed: %s", name, exc)
            results[name] = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
        else:
            results[name] = {"status": "ok"}
    return results


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    checks = run_checks()
    healthy = all(result["status"] == "ok" for result in checks.values())
    return JsonResponse(
        {"status": "ok" if healthy else "error", "checks": checks}, status=200 if healthy else 503
    )
