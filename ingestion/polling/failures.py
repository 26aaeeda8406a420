"""What a failure leads to, for polled and pushing gateways alike: which failures back off and for
how long, after how many failures in a row an incident opens, which incidents a push opens and
resolves, and when a live fetch is refused."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings

from ingestion.models import FetchState
from ingestion.records import FailureClass, iso_utc
from users.models import EagleUser

# Failures that another try in 6 seconds would not fix: back off from the gateway or account.
BACKOFF_CLASSES = frozenset(
    {
        FailureClass.GATEWAY_UNREACHABLE,
        FailureClass.TIMEOUT,
        FailureClass.HTTP_ERROR,
        FailureClass.BAD_CREDENTIALS,
        FailureClass.UNKNOWN_CLOUD_ID,
        FailureClass.METER_NOT_JOINED,
    }
)
# Failures an operator has to act on: an incident from the first one.
ACTIONABLE_CLASSES = frozenset(
    {FailureClass.BAD_CREDENTIALS, FailureClass.UNKNOWN_CLOUD_ID, FailureClass.METER_NOT_JOINED}
)


# A push is a deliberate upload: one refused is already worth an incident. An accepted push
# resolves the incidents a push can open.
PUSH_FAILURE_CLASSES = (FailureClass.MALFORMED_REPLY, FailureClass.SUSPICIOUS_READING)
PUSH_RESOLUTION = "Pushes are accepted again."


def incident_threshold(failure_class: FailureClass) -> int:
    """Failures of a class in a row, for one polled user, that open an incident."""
    return 1 if failure_class in ACTIONABLE_CLASSES else settings.INGEST_INCIDENT_AFTER_FAILURES


def backoff_delay(failures: int) -> float:
    """Seconds until the next attempt after `failures` consecutive failures: the next tick after
    the first, then twice as long each time, up to INGEST_MAX_BACKOFF_SECONDS."""
    period = settings.INGEST_POLL_SECONDS
    return min(float(settings.INGEST_MAX_BACKOFF_SECONDS), period * 2 ** min(failures - 1, 30))


def live_fetch_refusal(user: EagleUser, now: datetime) -> str:
    """Why a live fetch of `user`'s gateway must not be made now ("" when it may): not while the
    user is suspended, nor while polling backs off from its gateway or account. Each fetch sends
    the stored credentials; a burst of them can get the household's account locked."""
    if not user.is_active:
        return f"{user.cloud_id} is suspended ({user.suspended_reason}): it is not fetched."
    next_attempt = (
        FetchState.objects.filter(pk=user.pk).values_list("next_attempt_at", flat=True).first()
    )
    if next_attempt is not None and next_attempt > now:
        return (
            f"{user.cloud_id}'s last fetches failed: its gateway is left alone until "
            f"{iso_utc(next_attempt)}."
        )
    return ""


@dataclass(slots=True, eq=False)
class FailureRun:
    """Consecutive failures of one class for one user: the makings of an incident."""

    first_seen: datetime
    count: int = 0
    # The record types that failed; a success of one of them ends the run. None: any success.
    record_types: set[str] | None = field(default_factory=set)
    incident_open: bool = False
