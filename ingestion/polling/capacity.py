"""How many users a poller can carry: its measured throughput, the admission of each tick's
fetches, and what an operator is told when the fleet outgrows it.

A poller process fetches as fast as one core lets it send requests and parse replies (or as
fast as INGEST_CONCURRENCY requests of the gateways' latency allow): each tick measures its
replies per second.
A moving estimate of it says how many fetches fit in the part of a tick in which requests may
start (`dispatch_budget`); a tick admits that many, so the requests it sends are answered within
the tick (one still unanswered is awaited into the next: no reply is thrown away). When the
admitted ones are all sent with time to spare, as many more are admitted as fit in the time left,
less those still awaiting their replies: an estimate that is low costs no skipped polls.

A poller starts from the capacity its shards' latest tick recorded (the previous process's
measurement); one that has none (a new shard) admits every due user in its first tick and sends
until its dispatch deadline, measuring itself at full stretch. When more users are due than fit,
the users who waited longest go first: the ones left out in one tick are polled in the next, so
each user is polled at least every second tick as long as the poller carries at most twice what
it can fetch. Each left-out poll is counted (Tick.users_skipped, FetchState.skipped_polls), and a
shard left short for INGEST_INCIDENT_AFTER_FAILURES ticks in a row gets an over-capacity
incident, resolved after as many ticks in a row without a skipped poll.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from ingestion.models import Tick

# Weight of the newest measurement in the moving estimate of fetches per second.
SMOOTHING = 0.3
# Shorter fetch phases measure one request's latency more than the rate.
MIN_MEASURED_SECONDS = 0.05

ADVICE = (
    "Add poller capacity: more shards (INGEST_SHARDS) with one poller process each "
    "(`manage.py poll --shard N`, or qcluster workers for the window tasks), spread over more "
    "machines once their cores are busy."
)


@dataclass(slots=True)
class Throughput:
    """Fetches a poller completes per second: a moving estimate, None until measured."""

    per_second: float | None = None

    def observe(self, run: FetchRun) -> None:
        """Learn from a tick's fetches. A tick that sent all it admitted measured a lower bound
        (the poller might have done more): it can only raise the estimate. A tick whose dispatch
        deadline held requests back measured the poller at full stretch."""
        if run.replies <= 0 or run.last_reply_at - run.started_at < MIN_MEASURED_SECONDS:
            return
        measured = run.replies / (run.last_reply_at - run.started_at)
        if self.per_second is None:
            self.per_second = measured
        elif run.saturated:
            self.per_second += SMOOTHING * (measured - self.per_second)
        else:
            self.per_second = max(self.per_second, measured)

    def restore(self, capacity: int, seconds: float) -> None:
        """Start from a capacity measured before (fetches within `seconds`), as a restarted
        poller does: its first tick sends what it planned rather than everything it can
        until the dispatch deadline."""
        if capacity > 0 and seconds > 0:
            self.per_second = capacity / seconds

    def fetches_within(self, seconds: float) -> int | None:
        """How many fetches can be sent and answered in `seconds`; None when not measured."""
        if self.per_second is None:
            return None
        return max(0, math.floor(self.per_second * seconds))


@dataclass(slots=True)
class FetchRun:
    """One tick's fetch phase, as the throughput measurement needs it (event loop seconds).

    Replies per second from the first request to the last reply: one request's latency more
    than the sending and the replies themselves took, so a poller admitting what it measured
    settles a latency short of its full rate, never drifting lower."""

    started_at: float
    sent: int = 0
    replies: int = 0
    last_reply_at: float = 0.0
    # The dispatch deadline held due requests back.
    saturated: bool = False


def last_capacity(shards: Collection[int]) -> int | None:
    """The capacity the latest tick of these shards recorded, None if none was measured."""
    return (
        Tick.objects.filter(shard__in=shards, capacity__isnull=False)
        .order_by("-scheduled_at")
        .values_list("capacity", flat=True)
        .first()
    )


def over_capacity_message(
    shard: int, holder: str, due: int, capacity: int | None, skipped: int
) -> str:
    """The over-capacity incident's text: the load and measured capacity of the poller that
    holds the shard (all its shards), the shard's skipped polls, and what to do."""
    could = f"about {capacity:,}" if capacity is not None else "an unmeasured number of"
    text = (
        f"Shard {shard}: its poller {holder} had {due:,} users due in a tick and completes "
        f"{could} fetches per tick; {skipped:,} of the shard's polls were skipped in the last "
        "tick. "
    )
    if capacity is not None and 2 * capacity < due:
        text += "Some users now wait more than one tick between polls. "
    else:
        text += "Every user is still polled at least every second tick. "
    return text + ADVICE


# --- What the operator sees ----------------------------------------------------------------------

# A poller carrying more than this share of what it can fetch is near capacity.
NEAR_CAPACITY = 0.9


@dataclass(frozen=True, slots=True)
class PollerLoad:
    """One poller process as its shards' latest ticks show it: the users it carries (due per
    tick), how many it could carry (measured fetches per tick), and the polls it skipped."""

    holder: str
    shards: tuple[int, ...]
    scheduled_at: datetime
    users_due: int
    users_skipped: int
    capacity: int | None

    @property
    def over_capacity(self) -> bool:
        return self.users_skipped > 0

    @property
    def level(self) -> str:
        """ "ok", "warning" (near capacity) or "problem" (over it: polls are skipped)."""
        if self.over_capacity:
            return "problem"
        if self.capacity is not None and self.users_due > NEAR_CAPACITY * self.capacity:
            return "warning"
        return "ok"

    @property
    def advice(self) -> str:
        """What to do, or "" when nothing needs doing."""
        could = f"about {self.capacity:,}" if self.capacity is not None else "an unmeasured number"
        if self.over_capacity:
            return (
                f"Over capacity: {self.users_due:,} users due per tick, {could} can be fetched "
                f"in time; {self.users_skipped:,} polls skipped in the last tick. {ADVICE}"
            )
        if self.level == "warning":
            return (
                f"Near capacity: {self.users_due:,} users due per tick, {could} can be fetched "
                f"in time. {ADVICE}"
            )
        return ""


def poller_loads(now: datetime | None = None) -> list[PollerLoad]:
    """The pollers of the shards' latest ticks (of the last three slots), in shard order: one
    query over the few Tick rows of those slots."""
    now = now or timezone.now()
    since = now - timedelta(seconds=3 * settings.INGEST_POLL_SECONDS)
    latest: dict[int, Tick] = {}
    for tick in Tick.objects.filter(scheduled_at__gte=since).order_by("shard", "-scheduled_at"):
        latest.setdefault(tick.shard, tick)
    by_holder: dict[str, list[Tick]] = {}
    for tick in latest.values():
        by_holder.setdefault(tick.holder, []).append(tick)
    loads = [
        PollerLoad(
            holder=holder,
            shards=tuple(tick.shard for tick in ticks),
            scheduled_at=max(tick.scheduled_at for tick in ticks),
            users_due=sum(tick.users_due for tick in ticks),
            users_skipped=sum(tick.users_skipped for tick in ticks),
            capacity=max((t.capacity for t in ticks if t.capacity is not None), default=None),
        )
        for holder, ticks in by_holder.items()
    ]
    return sorted(loads, key=lambda load: load.shards)
