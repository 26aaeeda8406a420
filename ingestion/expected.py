"""Readings and ticks expected: the one definition behind coverage, /api/status/, the dashboard
and the console's coverage grid.

A user is expected to have one reading per meter period (INGEST_METER_SECONDS: meters publish
every 8 to 10 s, so polling every 6 s finds each reading once) over the time it is expected to be
logged: from when it was added, for a polled user no earlier than the poller's first tick, and
never while it is paused (a past suspension, a `Pause`, or the current one since `suspended_at`).
Poll ticks are expected on the INGEST_POLL_SECONDS grid, per shard, from the poller's first tick:
a fresh install is not short of ticks and readings from before it ran.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings

from ingestion.models import Tick
from users.models import ConnectionType, EagleUser, Pause

Span = tuple[datetime, datetime]


def polling_started_at() -> datetime | None:
    """When the poller's first tick was due; None if it never ran."""
    return Tick.objects.order_by("scheduled_at").values_list("scheduled_at", flat=True).first()


def readings_in(seconds: float) -> int:
    """Readings a meter publishes in `seconds`."""
    return math.floor(max(0.0, seconds) / settings.INGEST_METER_SECONDS)


def seconds_in(spans: Iterable[Span]) -> float:
    return sum((b - a).total_seconds() for a, b in spans)


def clip(spans: Iterable[Span], start: datetime, end: datetime) -> list[Span]:
    """The parts of `spans` inside [start, end)."""
    clipped = [(max(a, start), min(b, end)) for a, b in spans]
    return [(a, b) for a, b in clipped if a < b]


@dataclass(frozen=True, slots=True)
class Expectation:
    """What is known of one user for the definition: when it was added, polled or pushed, and its
    pauses (the current suspension included, open-ended)."""

    added_at: datetime
    polled: bool
    pauses: tuple[Span, ...] = ()

    def spans(self, start: datetime, end: datetime, polling_start: datetime | None) -> list[Span]:
        """The stretches of [start, end) in which this user's readings are expected."""
        first = max(start, self.added_at)
        if self.polled:
            first = max(first, polling_start or end)
        spans: list[Span] = [(first, end)] if first < end else []
        for pause_start, pause_end in sorted(self.pauses):
            spans = [
                piece
                for a, b in spans
                for piece in ((a, min(b, pause_start)), (max(a, pause_end), b))
                if piece[0] < piece[1]
            ]
        return spans


# The end of a suspension still going on.
NOT_RESUMED = datetime.max.replace(tzinfo=UTC)


def expectation(user: EagleUser) -> Expectation:
    """The user's Expectation: one query, for its past pauses."""
    pauses = [(p.started_at, p.ended_at) for p in user.pauses.all()]
    if not user.is_active and user.suspended_at is not None:
        pauses.append((user.suspended_at, NOT_RESUMED))
    return Expectation(
        added_at=user.created_at,
        polled=user.connection_type != ConnectionType.PUSH,
        pauses=tuple(pauses),
    )


def expected_spans(
    user: EagleUser | None,
    start: datetime,
    end: datetime,
    polling_start: datetime | None = None,
) -> list[Span]:
    """Where `user`'s readings are expected in [start, end). A deleted user (None), whose
    history is unknown, is expected throughout."""
    if user is None:
        return [(start, end)] if start < end else []
    return expectation(user).spans(start, end, polling_start or polling_started_at())


def expected_readings(
    user: EagleUser | None, start: datetime, end: datetime, polling_start: datetime | None = None
) -> int:
    return readings_in(seconds_in(expected_spans(user, start, end, polling_start)))


def fleet_expected_readings(start: datetime, end: datetime, polling_start: datetime | None) -> int:
    """The readings expected of every active polled user in [start, end), in three queries
    whatever the fleet's size: users added, and pauses ended, inside the window are read; every
    other user is expected over the whole window."""
    polled = EagleUser.objects.polled()
    first = max(start, polling_start or end)
    if first >= end:
        return 0
    added = dict(polled.filter(created_at__gt=first).values_list("pk", "created_at"))
    pauses: dict[int, list[Span]] = defaultdict(list)
    for user_id, paused_from, paused_to in Pause.objects.filter(
        user__in=polled, ended_at__gt=first, started_at__lt=end
    ).values_list("user_id", "started_at", "ended_at"):
        pauses[user_id].append((paused_from, paused_to))
    whole_window = polled.count() - len(added.keys() | pauses.keys())
    total = whole_window * readings_in((end - first).total_seconds())
    for user_id in added.keys() | pauses.keys():
        one = Expectation(added.get(user_id, first), polled=True, pauses=tuple(pauses[user_id]))
        total += readings_in(seconds_in(one.spans(start, end, polling_start)))
    return total


def expected_ticks(start: datetime, end: datetime, polling_start: datetime | None) -> int:
    """Poll ticks due from `start` (and the poller's first tick) whose slot is over by `end`,
    over every shard. Slots are the INGEST_POLL_SECONDS grid: multiples of it since the epoch."""
    if polling_start is None:
        return 0
    period = settings.INGEST_POLL_SECONDS
    first = max(start, polling_start).timestamp()
    slots = math.floor(end.timestamp() / period) - math.ceil(first / period)
    return max(0, slots) * settings.INGEST_SHARDS
