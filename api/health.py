"""/healthz: is each dependency reachable? JSON with 200 when all are, 503 otherwise.

Anyone may ask (load balancers, uptime checks): they get each check's status and its numbers.
Signed-in staff also get the details: error texts, the most overdue users' cloud ids, each
poller's load and what to do about it.

A check raises to report an error, and may return details to show beside its status; a
"status" among those details replaces "ok" (the archive's freshness reports its lag that way).
"warning" (a poller over capacity: every user is still polled, less often) answers 200 with the
overall status "warning"; any "error" answers 503.
"""

import logging
from collections.abc import Callable

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from django_q.brokers import get_broker

from api.permissions import is_operator
from ingestion.archive import audit, store
from ingestion.polling import capacity
from ingestion.records import iso_utc

logger = logging.getLogger(__name__)


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def check_broker() -> None:
    if not get_broker().ping():
        raise ConnectionError("broker did not answer")


def check_storage() -> None:
    # A key that is never written: a HEAD on S3, a stat on the local file system.
    store.open_archive().stat("healthz-probe")


# The most overdue users listed under archive_freshness; /metrics has them all.
FRESHNESS_USERS_SHOWN = 10


def check_archive_freshness() -> dict[str, object]:
    """The age of the oldest hour not yet verified in the archive, overall and for the most
    overdue users; an error only past ARCHIVE_FRESHNESS_ALERT_SECONDS."""
    lag = audit.freshness(timezone.now(), users=FRESHNESS_USERS_SHOWN)
    details: dict[str, object] = {
        "oldest_unshipped_hour": iso_utc(lag.oldest_unshipped_hour)
        if lag.oldest_unshipped_hour
        else None,
        "age_seconds": round(lag.age_seconds),
        "alert_after_seconds": lag.alert_after_seconds,
        "users": [
            {
                "cloud_id": user.cloud_id,
                "oldest_unshipped_hour": iso_utc(user.oldest_unshipped_hour),
                "age_seconds": round(user.age_seconds),
            }
            for user in lag.users
        ],
    }
    if lag.stale:
        details["status"] = "error"
        details["error"] = (
            f"the oldest unshipped hour began {round(lag.age_seconds)} s ago, "
            f"over the {lag.alert_after_seconds} s allowed"
        )
    return details


def check_poller_capacity() -> dict[str, object]:
    """The users the pollers carry (due per tick) against how many they could (measured), and
    the polls skipped in their latest ticks; a warning when any poller is over capacity."""
    loads = capacity.poller_loads(timezone.now())
    measured = [load.capacity for load in loads if load.capacity is not None]
    details: dict[str, object] = {
        "pollers": len(loads),
        "users_due": sum(load.users_due for load in loads),
        "users_skipped": sum(load.users_skipped for load in loads),
        "by_poller": [
            {
                "holder": load.holder,
                "shards": list(load.shards),
                "users_due": load.users_due,
                "capacity": load.capacity,
                "users_skipped": load.users_skipped,
                "advice": load.advice,
            }
            for load in loads
        ],
    }
    if measured:
        details["capacity"] = sum(measured)
    over = [load for load in loads if load.over_capacity]
    if over:
        details["status"] = "warning"
        details["advice"] = " ".join(load.advice for load in over)
    return details


CHECKS: dict[str, Callable[[], dict[str, object] | None]] = {
    "database": check_database,
    "broker": check_broker,
    "storage": check_storage,
    "archive_freshness": check_archive_freshness,
    "poller_capacity": check_poller_capacity,
}


def run_checks() -> dict[str, dict[str, object]]:
    results: dict[str, dict[str, object]] = {}
    for name, check in CHECKS.items():
        try:
            details = check() or {}
        except Exception as exc:  # noqa: BLE001
            # Whatever a dependency raises is the answer a health check exists to report.
            logger.warning("health check %s failed: %s", name, exc)
            results[name] = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
        else:
            results[name] = {"status": "ok", **details}
    return results


def without_details(checks: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    """Each check's status and numbers only: no cloud ids, host names or error texts."""
    return {
        name: {
            key: value
            for key, value in result.items()
            if key == "status" or (isinstance(value, int | float) and not isinstance(value, bool))
        }
        for name, result in checks.items()
    }


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    checks = run_checks()
    statuses = {result["status"] for result in checks.values()}
    healthy = statuses <= {"ok", "warning"}
    if not is_operator(request.user):
        checks = without_details(checks)
    overall = "error" if not healthy else "warning" if "warning" in statuses else "ok"
    return JsonResponse({"status": overall, "checks": checks}, status=200 if healthy else 503)
