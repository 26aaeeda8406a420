"""The figures of the operators' console: the fleet at a glance and one user's hours.

Every function here runs a fixed number of queries, whatever the number of users, so the admin's
index stays fast for a fleet of 10,000 households:

- users by state: one grouped query over EagleUser with the fetch state joined;
- readings, ticks, open incidents, the oldest unshipped hour: one aggregate query each;
- the pollers' load against their measured capacity: the Tick rows of the last three slots;
- readings per minute over 24 h: one query grouping Tick rows by minute (1,440 rows at most);
- fleet demand: measured from the Parquet dataset for the hours exported to it (one DuckDB query
  over the fleet's demand columns, every household counted); the hours after them (the last one
  or two, not exported yet) are estimated from the hour files of a small, fixed sample of logging
  households (the same households every time, so the curve does not jump) scaled to the number of
  logging users. Reading every household's hour files instead would mean 240,000 files a day for
  10,000 users.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.db.models import (
    Case,
    CharField,
    Count,
    Exists,
    F,
    Max,
    Min,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import MD5, TruncMinute
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.models import Schedule, Task
from redis.exceptions import RedisError

from ingestion import expected, parquet_query, retrieval
from ingestion.archive.store import ArchiveError
from ingestion.hourfiles import HOUR, hour_floor
from ingestion.models import (
    SETTLED_STATES,
    DatasetHour,
    DatasetHourState,
    HourFile,
    Incident,
    IncidentState,
    Tick,
    hour_age_seconds,
)
from ingestion.polling import schedules
from ingestion.polling.capacity import PollerLoad, poller_loads
from ingestion.records import FailureClass
from users.models import ConnectionType, EagleUser

logger = logging.getLogger(__name__)

# Users by state. A failing user is counted under the class of its current failure.
LOGGING = "logging"
WAITING = "waiting"
SUSPENDED = "suspended"
UNCLASSIFIED = "unclassified"

# Coverage of one hour of one user, as drawn in the strip.
COMPLETE = "complete"
PARTIAL = "partial"
MISSING = "missing"
UNSHIPPED = "unshipped"
NOT_LOGGED = "not_logged"
COVERAGE_LABELS = {
    COMPLETE: "complete",
    PARTIAL: "partial",
    MISSING: "missing",
    UNSHIPPED: "not yet shipped",
    NOT_LOGGED: "not expected (before the user was added or polling began, or paused)",
}
# An archived hour holding at least this share of the readings expected in it (ingestion.expected)
# is complete; fewer is partial.
COMPLETE_SHARE = 0.9


@dataclass(frozen=True, slots=True)
class Figure:
    """A labelled number on the dashboard; `key` is the state or failure class it counts."""

    key: str
    label: str
    count: int


@dataclass(frozen=True, slots=True)
class FleetSummary:
    now: datetime
    users_total: int
    users_polled: int
    users_logging: int
    users_waiting: int
    users_suspended: int
    users_failing: list[Figure]
    readings_last_hour: int
    readings_expected: int
    ticks_recorded: int
    ticks_late: int
    ticks_expected: int
    oldest_unshipped: HourFile | None
    open_incidents: list[Figure]
    pollers: list[PollerLoad] = field(default_factory=list)

    @property
    def users_failing_total(self) -> int:
        return sum(c.count for c in self.users_failing)

    @property
    def open_incidents_total(self) -> int:
        return sum(c.count for c in self.open_incidents)

    @property
    def readings_share(self) -> float | None:
        return self.readings_last_hour / self.readings_expected if self.readings_expected else None

    @property
    def ticks_on_time(self) -> int:
        return self.ticks_recorded - self.ticks_late

    @property
    def ticks_missing(self) -> int:
        return max(0, self.ticks_expected - self.ticks_recorded)

    @property
    def oldest_unshipped_age(self) -> timedelta | None:
        """Since the oldest unshipped hour began, as every freshness figure counts it."""
        if self.oldest_unshipped is None:
            return None
        return timedelta(seconds=hour_age_seconds(self.oldest_unshipped.hour, self.now))

    # Levels ("ok", "warning", "problem") for the dashboard's cards.

    @property
    def users_level(self) -> str:
        if not self.users_failing_total:
            return "ok"
        return "problem" if self.users_failing_total * 10 > self.users_polled else "warning"

    @property
    def readings_level(self) -> str:
        share = self.readings_share
        if share is None or share >= 0.95:
            return "ok"
        return "warning" if share >= 0.8 else "problem"

    @property
    def ticks_level(self) -> str:
        if not self.ticks_expected or self.ticks_on_time >= 0.999 * self.ticks_expected:
            return "ok"
        return "warning" if self.ticks_on_time >= 0.95 * self.ticks_expected else "problem"

    @property
    def pollers_level(self) -> str:
        """The worst of the pollers' levels: over capacity is a problem, near it a warning."""
        levels = {poller.level for poller in self.pollers}
        return next((level for level in ("problem", "warning") if level in levels), "ok")

    @property
    def pollers_users_due(self) -> int:
        return sum(poller.users_due for poller in self.pollers)

    @property
    def pollers_capacity(self) -> int | None:
        measured = [poller.capacity for poller in self.pollers if poller.capacity is not None]
        return sum(measured) if measured else None

    @property
    def archive_level(self) -> str:
        """Problem when stale as the health endpoint and the metrics say it."""
        age = self.oldest_unshipped_age
        # The hour being written, and the one that just ended waiting for its turn to ship.
        if age is None or age <= 2 * HOUR:
            return "ok"
        stale = age.total_seconds() > settings.ARCHIVE_FRESHNESS_ALERT_SECONDS
        return "problem" if stale else "warning"

    @property
    def incidents_level(self) -> str:
        return "ok" if not self.open_incidents_total else "warning"

    def failing_rows(self) -> list[tuple[str, str, int, int]]:
        """(failure class, label, users failing with it now, open incidents of it), most first."""
        users = {c.key: c.count for c in self.users_failing}
        incidents = {c.key: c.count for c in self.open_incidents}
        keys = sorted(set(users) | set(incidents), key=lambda k: (-users.get(k, 0), k))
        return [(k, failure_label(k), users.get(k, 0), incidents.get(k, 0)) for k in keys]


def failure_label(value: str) -> str:
    try:
        return FailureClass(value).label
    except ValueError:
        return "Unclassified failure"


def _user_state() -> Case:
    """The state of a user as one SQL expression: suspended, a failure class, waiting or logging."""
    open_incidents = Incident.objects.filter(user=OuterRef("pk"), state=IncidentState.OPEN)
    return Case(
        When(is_active=False, then=Value(SUSPENDED)),
        When(
            fetch_state__consecutive_failures__gt=0,
            then=Case(
                When(fetch_state__last_error_class="", then=Value(UNCLASSIFIED)),
                default=F("fetch_state__last_error_class"),
            ),
        ),
        When(
            Exists(open_incidents),
            then=Subquery(open_incidents.order_by("-last_seen_at").values("failure_class")[:1]),
        ),
        When(fetch_state__last_success_at__isnull=True, then=Value(WAITING)),
        default=Value(LOGGING),
        output_field=CharField(),
    )


STATE_LABELS = {
    LOGGING: "Logging",
    WAITING: "Waiting for a first reading",
    SUSPENDED: "Suspended",
}


@dataclass(frozen=True, slots=True)
class UserState:
    key: str
    label: str
    level: str  # ok, warning or problem


def user_state(user: EagleUser) -> UserState:
    """The state one user is counted under on the dashboard, said in words."""
    key = (
        EagleUser.objects.filter(pk=user.pk)
        .annotate(state=_user_state())
        .values_list("state", flat=True)
        .get()
    )
    if key == SUSPENDED:
        return UserState(key, f"Suspended: {user.suspended_reason}", "warning")
    if key in STATE_LABELS:
        return UserState(key, STATE_LABELS[key], "ok" if key == LOGGING else "warning")
    return UserState(key, f"Failing: {failure_label(key)}", "problem")


def users_by_state() -> tuple[dict[str, int], int]:
    """({state: users}, users polled): states are logging, waiting, suspended or a failure class."""
    rows = (
        EagleUser.objects.annotate(state=_user_state())
        .values("state")
        .annotate(
            users=Count("pk"),
            polled=Count("pk", filter=Q(is_active=True) & ~Q(connection_type=ConnectionType.PUSH)),
        )
        .order_by()
    )
    counts: dict[str, int] = {}
    polled = 0
    for row in rows:
        counts[row["state"]] = row["users"]
        polled += row["polled"]
    return counts, polled


def oldest_unshipped(cloud_id: str | None = None) -> HourFile | None:
    """The oldest hour file not yet verified in the archive, overall or for one user."""
    unshipped = HourFile.objects.unshipped()
    if cloud_id is not None:
        unshipped = unshipped.filter(cloud_id=cloud_id)
    return unshipped.order_by("hour", "part", "cloud_id").first()


def fleet_summary(now: datetime | None = None) -> FleetSummary:
    """The dashboard's figures, in a fixed number of queries.

    Readings and ticks are those of the last hour, expected as `ingestion.expected` defines
    them; ticks once their slot is over (the tick due a moment ago may still be running).
    """
    now = now or timezone.now()
    states, polled = users_by_state()
    polling_start = expected.polling_started_at()
    over = Q(scheduled_at__lte=now - timedelta(seconds=settings.INGEST_POLL_SECONDS))
    ticks = Tick.objects.filter(scheduled_at__gte=now - HOUR, scheduled_at__lt=now).aggregate(
        readings=Sum("readings_written", default=0),
        recorded=Count("pk", filter=over),
        late=Count("pk", filter=over & Q(late=True)),
    )
    incidents = (
        Incident.objects.filter(state=IncidentState.OPEN)
        .values("failure_class")
        .annotate(n=Count("pk"))
        .order_by("-n", "failure_class")
    )
    failing = sorted(
        (
            Figure(state, failure_label(state), n)
            for state, n in states.items()
            if state not in (LOGGING, WAITING, SUSPENDED)
        ),
        key=lambda c: (-c.count, c.key),
    )
    return FleetSummary(
        now=now,
        users_total=sum(states.values()),
        users_polled=polled,
        users_logging=states.get(LOGGING, 0),
        users_waiting=states.get(WAITING, 0),
        users_suspended=states.get(SUSPENDED, 0),
        users_failing=failing,
        readings_last_hour=ticks["readings"],
        readings_expected=expected.fleet_expected_readings(now - HOUR, now, polling_start),
        ticks_recorded=ticks["recorded"],
        ticks_late=ticks["late"],
        ticks_expected=expected.expected_ticks(now - HOUR, now, polling_start),
        oldest_unshipped=oldest_unshipped(),
        open_incidents=[
            Figure(row["failure_class"], failure_label(row["failure_class"]), row["n"])
            for row in incidents
        ],
        pollers=poller_loads(now),
    )


@dataclass(frozen=True, slots=True)
class Window:
    """A time window the console's charts offer, and the buckets its series are summed in."""

    length: timedelta
    tick_bucket: timedelta  # readings and late ticks
    demand_bucket: timedelta  # fleet demand averages


WINDOWS = {
    "1h": Window(HOUR, timedelta(minutes=1), timedelta(minutes=1)),
    "6h": Window(6 * HOUR, timedelta(minutes=1), timedelta(minutes=5)),
    "24h": Window(24 * HOUR, timedelta(minutes=1), timedelta(minutes=15)),
    "7d": Window(timedelta(days=7), timedelta(minutes=10), HOUR),
}
DEFAULT_WINDOW = "24h"


@dataclass(slots=True)
class TickSeries:
    """Readings written and late ticks per bucket; None where no tick ran at all (the poller was
    not running: a gap in the chart, not a zero)."""

    start: datetime
    bucket_seconds: int
    times: list[int] = field(default_factory=list)  # unix seconds of each bucket's start
    readings: list[int | None] = field(default_factory=list)
    late_ticks: list[int | None] = field(default_factory=list)


def tick_series(
    now: datetime | None = None, window: Window = WINDOWS[DEFAULT_WINDOW]
) -> TickSeries:
    """Readings written and late ticks per bucket over `window`, from the Tick rows (one query
    grouping them by minute: 10,080 rows at most for 7 days)."""
    now = now or timezone.now()
    step = int(window.tick_bucket.total_seconds())
    end = datetime.fromtimestamp(now.timestamp() // step * step, UTC)
    start = end - window.length
    rows = (
        Tick.objects.filter(scheduled_at__gte=start, scheduled_at__lt=end)
        .annotate(minute=TruncMinute("scheduled_at"))
        .values("minute")
        .annotate(readings=Sum("readings_written"), late=Count("pk", filter=Q(late=True)))
        .order_by("minute")
    )
    series = TickSeries(start=start, bucket_seconds=step)
    buckets = int(window.length.total_seconds()) // step
    series.times = [int(start.timestamp()) + k * step for k in range(buckets)]
    series.readings = [None] * buckets
    series.late_ticks = [None] * buckets
    for row in rows:
        k = int((row["minute"] - start).total_seconds()) // step
        series.readings[k] = (series.readings[k] or 0) + row["readings"]
        series.late_ticks[k] = (series.late_ticks[k] or 0) + row["late"]
    return series


def demand_sample(size: int) -> list[EagleUser]:
    """A fixed sample of logging, polled households: the same ones on every call (by MD5 order)."""
    return list(
        EagleUser.objects.polled()
        .healthy()
        .filter(fetch_state__last_success_at__isnull=False)
        .order_by(MD5("cloud_id"))[:size]
    )


@dataclass(slots=True)
class DemandSeries:
    """Fleet demand per bucket: measured (the sum of every household's mean demand, from the
    Parquet dataset) or estimated (the sample's mean household demand times the fleet size)."""

    bucket_seconds: int
    households_sampled: int
    households_logging: int
    times: list[int] = field(default_factory=list)  # unix seconds of each bucket's start
    fleet_kw: list[float | None] = field(default_factory=list)
    measured: list[bool] = field(default_factory=list)  # from the dataset, not the sample


def fleet_demand(
    now: datetime | None = None,
    window: Window = WINDOWS[DEFAULT_WINDOW],
    sample_size: int | None = None,
) -> DemandSeries:
    """Fleet-wide demand over `window`: measured from the Parquet dataset where every hour a
    bucket spans is exported, estimated from a sample of households after that.

    An estimated bucket is the mean of the sampled households' average demand (each household
    weighs the same) times the number of logging households; None where no sampled household
    has a reading. A household whose archive cannot be read is left out of the sample, with a
    warning; an unreadable dataset leaves every bucket to the sample.
    """
    now = now or timezone.now()
    bucket = window.demand_bucket
    step = bucket.total_seconds()
    end = datetime.fromtimestamp((now.timestamp() // step + 1) * step, UTC)
    start = end - window.length
    starts = [start + index * bucket for index in range(int((end - start) / bucket))]
    measured = _measured_fleet_demand(start, end, bucket)
    # The sample is read only from the first bucket the dataset does not cover.
    estimate_from = next((moment for moment in starts if moment not in measured), end)
    sample = demand_sample(sample_size or settings.CONSOLE_DEMAND_SAMPLE)
    states, _ = users_by_state()
    logging_households = states.get(LOGGING, 0)
    averages: dict[datetime, list[float]] = {moment: [] for moment in starts}
    if estimate_from < end:
        for user in sample:
            try:
                buckets = retrieval.aggregate_demand(user.cloud_id, estimate_from, end, bucket)
            except retrieval.ArchiveReadError as exc:
                logger.warning("fleet demand: %s left out of the sample: %s", user.cloud_id, exc)
                continue
            for demand in buckets:
                if demand.avg_kw is not None and demand.start in averages:
                    averages[demand.start].append(demand.avg_kw)
    series = DemandSeries(int(step), len(sample), logging_households)
    for moment in starts:
        series.times.append(int(moment.timestamp()))
        series.measured.append(moment in measured)
        if moment in measured:
            series.fleet_kw.append(round(measured[moment], 3))
            continue
        values = averages[moment]
        series.fleet_kw.append(
            round(sum(values) / len(values) * logging_households, 3) if values else None
        )
    return series


def _measured_fleet_demand(
    start: datetime, end: datetime, bucket: timedelta
) -> dict[datetime, float]:
    """Fleet demand (kW) of each bucket of [start, end) whose hours are all in the dataset."""
    exported = set(
        DatasetHour.objects.filter(
            hour__gte=hour_floor(start), hour__lt=end, state=DatasetHourState.EXPORTED
        ).values_list("hour", flat=True)
    )
    if not exported:
        return {}
    try:
        buckets = parquet_query.fleet_demand(start, end, bucket)
    except (parquet_query.QueryError, ArchiveError, OSError) as exc:
        logger.warning("fleet demand: the Parquet dataset cannot be read: %s", exc)
        return {}
    measured = {}
    for found in buckets:
        first, last = (
            hour_floor(found.start),
            hour_floor(found.start + bucket - timedelta(seconds=1)),
        )
        if first in exported and last in exported:
            measured[found.start] = found.total_kw
    return measured


# --- One user -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CoverageCell:
    hour: datetime
    state: str
    lines: int | None

    @property
    def label(self) -> str:
        return COVERAGE_LABELS[self.state]


def coverage_strip(
    user: EagleUser, now: datetime | None = None, days: int = 7
) -> list[CoverageCell]:
    """One cell per UTC hour of the last `days` (oldest first, ending with the current hour).

    From the manifest alone, in two queries, so the page never reads a week of files: an hour in
    which no reading is expected (ingestion.expected: before the user was added or polling began,
    or while it was paused) is not expected; one with no file is missing; one with a part not yet
    verified in the archive is unshipped; a shipped hour is complete when its lines reach
    COMPLETE_SHARE of the readings expected in it and its readings start and end within a gap's
    length of the expected time's edges, partial otherwise. (A short gap inside a shipped hour
    shows in the coverage API, not here.)
    """
    now = now or timezone.now()
    last = hour_floor(now)
    first = last - timedelta(hours=days * 24 - 1)
    rows = (
        HourFile.objects.filter(cloud_id=user.cloud_id, hour__gte=first, hour__lte=last)
        .values("hour")
        .annotate(
            lines=Sum("line_count"),
            unshipped=Count("pk", filter=~Q(state__in=SETTLED_STATES)),
            first_reading=Min("first_reading_at"),
            last_reading=Max("last_reading_at"),
        )
        .order_by()
    )
    by_hour = {row["hour"]: row for row in rows}
    edge = timedelta(seconds=retrieval.DEFAULT_GAP_SECONDS)
    spans = expected.expected_spans(user, first, now)
    cells = []
    hour = first
    while hour <= last:
        row = by_hour.get(hour)
        in_hour = expected.clip(spans, hour, hour + HOUR)
        if row is None:
            state = MISSING if in_hour else NOT_LOGGED
        elif row["unshipped"]:
            state = UNSHIPPED
        elif (
            (row["lines"] or 0)
            >= COMPLETE_SHARE * expected.readings_in(expected.seconds_in(in_hour))
            and row["first_reading"] is not None
            and (not in_hour or row["first_reading"] <= in_hour[0][0] + edge)
            and (not in_hour or row["last_reading"] >= in_hour[-1][1] - edge)
        ):
            state = COMPLETE
        else:
            state = PARTIAL
        cells.append(CoverageCell(hour, state, row["lines"] if row else None))
        hour += HOUR
    return cells


def coverage_days(cells: Iterable[CoverageCell]) -> list[tuple[date, list[CoverageCell | None]]]:
    """The strip cut into UTC days of 24 slots each, None for hours outside the strip."""
    days: dict[date, list[CoverageCell | None]] = {}
    for cell in cells:
        hour = cell.hour.astimezone(UTC)
        days.setdefault(hour.date(), [None] * 24)[hour.hour] = cell
    return list(days.items())


def coverage_totals(cells: Iterable[CoverageCell]) -> dict[str, int]:
    totals = dict.fromkeys(COVERAGE_LABELS, 0)
    for cell in cells:
        totals[cell.state] += 1
    return totals


def day_start(day: date) -> datetime:
    """Midnight UTC at the start of `day`."""
    return datetime.combine(day, datetime.min.time(), tzinfo=UTC)


def user_demand(
    user: EagleUser, start: datetime, end: datetime
) -> list[tuple[float, float | None]]:
    """(unix seconds, kW) of the user's demand readings in [start, end), in time order, with a
    (moment, None) point inside each stretch longer than a gap without readings: a chart breaks
    its line there instead of bridging the missing time."""
    gap = retrieval.DEFAULT_GAP_SECONDS
    points: list[tuple[float, float | None]] = []
    previous = None
    for moment, kw in retrieval.demand_readings(user.cloud_id, start, end):
        if previous is not None and moment - previous > gap:
            points.append((previous + gap / 2, None))
        points.append((moment, kw))
        previous = moment
    return points


def recent_incidents(user: EagleUser, limit: int = 10) -> list[Incident]:
    return list(user.incidents.order_by("state", "-last_seen_at")[:limit])


def recent_hour_files(user: EagleUser, limit: int = 12) -> list[HourFile]:
    return list(HourFile.objects.filter(cloud_id=user.cloud_id).order_by("-hour", "part")[:limit])


# --- Jobs (django-q2) ---------------------------------------------------------------------------


def schedule_role(schedule: Schedule) -> str:
    """What one of rainlog's recurring jobs is for (ingestion.polling.schedules names them); "" otherwise."""
    name = schedule.name or ""
    if name.startswith(schedules.POLL_SCHEDULE_PREFIX):
        shard = name.removeprefix(schedules.POLL_SCHEDULE_PREFIX)
        return f"Polling, shard {shard}: runs the 6-second ticks of each minute"
    return {
        schedules.ROTATE_SCHEDULE: "Rotation: seals closed hours and ships them to the archive",
        schedules.REPORT_SCHEDULE: "Incident reports: sends them to the error endpoint",
        schedules.PARQUET_SCHEDULE: "Parquet export: writes shipped hours to the dataset",
    }.get(name, "")


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    schedule: Schedule
    role: str
    last_success: bool | None


@dataclass(frozen=True, slots=True)
class JobSummary:
    schedules: list[ScheduleRow]
    queued: int | None  # None when the broker cannot be asked
    successes: int
    failures: int
    since: datetime


def job_summary(now: datetime | None = None, hours: int = 24) -> JobSummary:
    """The recurring jobs with their roles, the queue length, and task outcomes over `hours`."""
    now = now or timezone.now()
    since = now - timedelta(hours=hours)
    schedules = Schedule.objects.annotate(
        last_success=Subquery(Task.objects.filter(id=OuterRef("task")).values("success")[:1])
    ).order_by("name", "pk")
    outcomes = Task.objects.filter(stopped__gte=since).aggregate(
        successes=Count("pk", filter=Q(success=True)),
        failures=Count("pk", filter=Q(success=False)),
    )
    try:
        queued: int | None = get_broker().queue_size()
    except RedisError:
        queued = None
    return JobSummary(
        schedules=[ScheduleRow(s, schedule_role(s), s.last_success) for s in schedules],
        queued=queued,
        successes=outcomes["successes"],
        failures=outcomes["failures"],
        since=since,
    )
