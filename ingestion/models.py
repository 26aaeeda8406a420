from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, models, transaction
from django.db.models import Q
from django.utils import timezone

from ingestion import hourfiles
from ingestion.records import FailureClass, Reading
from users.cloud_ids import CloudIdField

FAILURE_CLASS_CHOICES = [(c.value, c.label) for c in FailureClass]
FETCH_FAILURE_CLASSES = [c.value for c in FailureClass if c.is_fetch_failure]


def _json_rows(rows: Iterable[object]) -> str:
    """Dataclass rows as one JSON array: a single parameter for jsonb_to_recordset()."""
    return orjson.dumps(list(rows)).decode()


@dataclass(slots=True)
class FetchOutcome:
    """What one tick learned about one user, applied to its FetchState in bulk.

    `attempted_at` is None when the user was not fetched this tick and only readings kept from an
    earlier tick (disk full then) were written.
    """

    user_id: int
    attempted_at: datetime | None = None
    succeeded: bool = False
    readings_written: int = 0
    # Meter timestamps (unix seconds) of the demand readings written this tick.
    first_timestamp: int | None = None
    last_timestamp: int | None = None
    # Extra record type -> meter timestamp of the newest reading of it written this tick.
    extra_timestamps: dict[str, int] = field(default_factory=dict)
    error_class: str = ""
    error: str = ""
    consecutive_failures: int = 0
    next_attempt_at: datetime | None = None

    def apply_to(self, state: "FetchState") -> None:
        """The same change as FetchStateQuerySet.apply_outcomes' SQL, on a loaded row."""
        state.total_events_logged += self.readings_written
        if self.first_timestamp is not None and state.first_timestamp is None:
            state.first_timestamp = self.first_timestamp
        if self.last_timestamp is not None:
            state.last_timestamp = max(state.last_timestamp or 0, self.last_timestamp)
        state.extra_timestamps = {**state.extra_timestamps, **self.extra_timestamps}
        if self.attempted_at is None:
            return
        state.last_attempt_at = self.attempted_at
        if self.succeeded:
            state.last_success_at = self.attempted_at
        if self.error_class:
            state.last_error = self.error
            state.last_error_class = self.error_class
            state.last_error_at = self.attempted_at
        state.consecutive_failures = self.consecutive_failures
        state.next_attempt_at = self.next_attempt_at


OUTCOME_FIELDS = [
    "total_events_logged",
    "first_timestamp",
    "last_timestamp",
    "extra_timestamps",
    "last_attempt_at",
    "last_success_at",
    "last_error",
    "last_error_class",
    "last_error_at",
    "consecutive_failures",
    "next_attempt_at",
]

_APPLY_OUTCOMES_SQL = """
UPDATE {table} AS f SET
    total_events_logged = f.total_events_logged + v.readings_written,
    first_timestamp = COALESCE(f.first_timestamp, v.first_timestamp),
    last_timestamp = GREATEST(f.last_timestamp, v.last_timestamp),
    extra_timestamps = f.extra_timestamps || v.extra_timestamps,
    last_attempt_at = COALESCE(v.attempted_at, f.last_attempt_at),
    last_success_at = CASE WHEN v.succeeded THEN v.attempted_at ELSE f.last_success_at END,
    last_error = CASE WHEN v.error_class <> '' THEN v.error ELSE f.last_error END,
    last_error_class = CASE WHEN v.error_class <> '' THEN v.error_class ELSE f.last_error_class END,
    last_error_at = CASE WHEN v.error_class <> '' THEN v.attempted_at ELSE f.last_error_at END,
    consecutive_failures = CASE WHEN v.attempted_at IS NULL THEN f.consecutive_failures
                                ELSE v.consecutive_failures END,
    next_attempt_at = CASE WHEN v.attempted_at IS NULL THEN f.next_attempt_at
                           ELSE v.next_attempt_at END
FROM jsonb_to_recordset(%s::jsonb) AS v(
    user_id bigint, attempted_at timestamptz, succeeded boolean, readings_written integer,
    first_timestamp double precision, last_timestamp double precision, extra_timestamps jsonb,
    error_class text, error text, consecutive_failures integer, next_attempt_at timestamptz
)
WHERE f.user_id = v.user_id
"""


_RECORD_SKIPPED_SQL = """
UPDATE {table} SET skipped_polls = skipped_polls + 1, last_skipped_at = %s
WHERE user_id = ANY(%s::bigint[])
"""


class FetchStateQuerySet(models.QuerySet["FetchState"]):
    def ensure_for(self, user_ids: Collection[int]) -> None:
        """Create the missing rows (the poller updates rows, it never inserts them per tick)."""
        if user_ids:
            self.bulk_create([FetchState(user_id=pk) for pk in user_ids], ignore_conflicts=True)

    def apply_outcomes(self, outcomes: Collection[FetchOutcome]) -> None:
        """Apply a tick's outcomes: one statement on PostgreSQL whatever their number.

        Counters are incremented in SQL, so the row is never read back; other databases (the
        embedded SQLite default) load the rows and write them back with bulk_update.
        """
        if not outcomes:
            return
        if connection.vendor == "postgresql":
            sql = _APPLY_OUTCOMES_SQL.format(table=FetchState._meta.db_table)
            with connection.cursor() as cursor:
                cursor.execute(sql, [_json_rows(outcomes)])
            return
        by_user = {outcome.user_id: outcome for outcome in outcomes}
        with transaction.atomic():
            states = list(self.select_for_update().filter(pk__in=by_user))
            for state in states:
                by_user[state.pk].apply_to(state)
            self.bulk_update(states, OUTCOME_FIELDS, batch_size=500)

    def record_skipped(self, user_ids: Collection[int], now: datetime) -> None:
        """Count one skipped poll for each of these users: one statement whatever their number
        (on PostgreSQL with the ids as one array: Django prepares each value of an IN list, which
        over capacity cost the poller more than a fetch)."""
        if not user_ids:
            return
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    _RECORD_SKIPPED_SQL.format(table=FetchState._meta.db_table),
                    [now, list(user_ids)],
                )
            return
        self.filter(pk__in=list(user_ids)).update(
            skipped_polls=models.F("skipped_polls") + 1, last_skipped_at=now
        )


class FetchState(models.Model):
    """Per-user fetch metadata, kept apart from EagleUser so operator edits never race the poller."""

    user = models.OneToOneField(
        "users.EagleUser", on_delete=models.CASCADE, primary_key=True, related_name="fetch_state"
    )
    total_events_logged = models.BigIntegerField(default=0)
    # Unix seconds of the first and last meter readings logged (the seed's fields).
    first_timestamp = models.FloatField(null=True, blank=True)
    last_timestamp = models.FloatField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_error_class = models.CharField(max_length=32, choices=FAILURE_CLASS_CHOICES, blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.IntegerField(default=0)
    # Backoff: the poller skips this user until then (unreachable gateways, bad credentials).
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    extra_record_types = models.JSONField(
        default=list,
        blank=True,
        help_text="Record types fetched every INGEST_EXTRA_POLL_SECONDS besides demand, "
        'e.g. ["summation", "price"].',
    )
    # Extra record type -> unix seconds of its last meter reading logged (demand: last_timestamp).
    extra_timestamps = models.JSONField(default=dict, blank=True)
    # Ticks in which the user was due but not polled, its poller being over capacity.
    skipped_polls = models.BigIntegerField(default=0)
    last_skipped_at = models.DateTimeField(null=True, blank=True)

    objects = FetchStateQuerySet.as_manager()

    def __str__(self) -> str:
        return f"fetch state of {self.user.cloud_id}"

    def clean(self) -> None:
        from ingestion.eagle.record_types import DEMAND, RECORD_TYPES

        types = self.extra_record_types
        if not isinstance(types, list) or not all(isinstance(name, str) for name in types):
            raise ValidationError({"extra_record_types": "A list of record type names."})
        extras = sorted(set(RECORD_TYPES) - {DEMAND})
        unknown = [name for name in types if name not in extras]
        if unknown:
            message = f"Unknown: {', '.join(unknown)}. Choose from: {', '.join(extras)}."
            raise ValidationError({"extra_record_types": message})


class HeldReadingQuerySet(models.QuerySet["HeldReading"]):
    def hold(self, readings: Iterable[tuple[int, Reading]]) -> None:
        """Keep these (user id, reading) pairs until they are written; a pair already held is
        left as it is."""
        self.bulk_create(
            [
                HeldReading(
                    user_id=user_id,
                    record_type=reading.record_type,
                    meter_timestamp=reading.meter_timestamp,
                    line=reading.to_line().decode(),
                )
                for user_id, reading in readings
            ],
            batch_size=5000,
            ignore_conflicts=True,
        )

    def release(self, user_ids: Collection[int]) -> None:
        """Forget the readings held for these users: all of them are in their hour files."""
        if user_ids:
            self.filter(user_id__in=list(user_ids)).delete()

    def of_users(self, user_ids: Collection[int]) -> Iterator[tuple[int, Reading]]:
        """The readings held for these users, oldest first per user and record type."""
        rows = (
            self.filter(user_id__in=list(user_ids))
            .order_by("user_id", "record_type", "meter_timestamp")
            .values_list("user_id", "line")
        )
        for user_id, line in rows.iterator(chunk_size=5000):
            yield user_id, Reading.from_record(orjson.loads(line))


class HeldReading(models.Model):
    """A reading a poller fetched but could not write (its log disk full), kept here until it is
    in its hour file: a poller stopped meanwhile loses nothing, as the next holder of the user's
    shard writes it first. The line is the record exactly as it will be written."""

    user = models.ForeignKey(
        "users.EagleUser", on_delete=models.CASCADE, related_name="held_readings"
    )
    record_type = models.CharField(max_length=32)
    meter_timestamp = models.BigIntegerField()
    line = models.TextField()
    held_at = models.DateTimeField(default=timezone.now)

    objects = HeldReadingQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "record_type", "meter_timestamp"], name="held_reading_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.record_type} reading {self.meter_timestamp} held for user {self.user_id}"


class IncidentState(models.TextChoices):
    OPEN = "open", "Open"
    RESOLVED = "resolved", "Resolved"


@dataclass(slots=True)
class IncidentSighting:
    """Failures of one class for one user seen in one tick: opens its incident or refreshes it."""

    user_id: int
    failure_class: str
    # The first failure of the run: the opening time of an incident that is new.
    opened_at: datetime
    seen_at: datetime
    occurrences: int
    message: str
    raw_reply: str = ""


_RECORD_SIGHTINGS_SQL = """
INSERT INTO {table} AS i (
    user_id, failure_class, state, opened_at, last_seen_at, occurrences, message, raw_reply,
    resolution
)
SELECT v.user_id, v.failure_class, 'open', v.opened_at, v.seen_at, v.occurrences, v.message,
       v.raw_reply, ''
FROM jsonb_to_recordset(%s::jsonb) AS v(
    user_id bigint, failure_class text, opened_at timestamptz, seen_at timestamptz,
    occurrences integer, message text, raw_reply text
)
ON CONFLICT (user_id, failure_class) WHERE state = 'open' DO UPDATE SET
    last_seen_at = EXCLUDED.last_seen_at,
    occurrences = i.occurrences + EXCLUDED.occurrences,
    message = EXCLUDED.message,
    raw_reply = EXCLUDED.raw_reply
"""

_RESOLVE_PAIRS_SQL = """
UPDATE {table} AS i SET state = 'resolved', resolved_at = %s, resolution = %s
FROM jsonb_to_recordset(%s::jsonb) AS v(user_id bigint, failure_class text)
WHERE i.state = 'open' AND i.user_id = v.user_id AND i.failure_class = v.failure_class
"""

AUTO_RESOLUTION = "Fetching works again."


class IncidentQuerySet(models.QuerySet["Incident"]):
    def open(self) -> "IncidentQuerySet":
        return self.filter(state=IncidentState.OPEN)

    def open_pairs(self, user_ids: Collection[int]) -> set[tuple[int, str]]:
        """(user id, failure class) of the open fetch incidents of these users (those a working
        fetch resolves)."""
        rows = (
            self.open()
            .filter(user_id__in=user_ids, failure_class__in=FETCH_FAILURE_CLASSES)
            .values_list("user_id", "failure_class")
        )
        return set(rows)

    def record_sightings(self, sightings: Iterable[IncidentSighting]) -> None:
        """Open or refresh one incident per (user, class): one statement on PostgreSQL.

        The partial unique constraint (one open incident per user and class) decides between
        opening and refreshing, so concurrent writers never open two.
        """
        merged: dict[tuple[int, str], IncidentSighting] = {}
        for sighting in sightings:
            key = (sighting.user_id, sighting.failure_class)
            earlier = merged.get(key)
            if earlier is not None:
                sighting.opened_at = min(sighting.opened_at, earlier.opened_at)
                sighting.occurrences += earlier.occurrences
            merged[key] = sighting
        if not merged:
            return
        if connection.vendor == "postgresql":
            sql = _RECORD_SIGHTINGS_SQL.format(table=Incident._meta.db_table)
            with connection.cursor() as cursor:
                cursor.execute(sql, [_json_rows(merged.values())])
            return
        for sighting in merged.values():
            with transaction.atomic():
                refreshed = (
                    self.open()
                    .filter(user_id=sighting.user_id, failure_class=sighting.failure_class)
                    .update(
                        last_seen_at=sighting.seen_at,
                        occurrences=models.F("occurrences") + sighting.occurrences,
                        message=sighting.message,
                        raw_reply=sighting.raw_reply,
                    )
                )
                if not refreshed:
                    self.create(
                        user_id=sighting.user_id,
                        failure_class=sighting.failure_class,
                        opened_at=sighting.opened_at,
                        last_seen_at=sighting.seen_at,
                        occurrences=sighting.occurrences,
                        message=sighting.message,
                        raw_reply=sighting.raw_reply,
                    )

    def resolve_pairs(
        self, pairs: Collection[tuple[int, str]], now: datetime, resolution: str = AUTO_RESOLUTION
    ) -> None:
        """Resolve the open incidents of these (user id, failure class) pairs, in one statement."""
        if not pairs:
            return
        if connection.vendor == "postgresql":
            rows = [{"user_id": user_id, "failure_class": cls} for user_id, cls in pairs]
            with connection.cursor() as cursor:
                cursor.execute(
                    _RESOLVE_PAIRS_SQL.format(table=Incident._meta.db_table),
                    [now, resolution, orjson.dumps(rows).decode()],
                )
            return
        for user_id, failure_class in pairs:
            self.open().filter(user_id=user_id, failure_class=failure_class).update(
                state=IncidentState.RESOLVED, resolved_at=now, resolution=resolution
            )

    def record_over_capacity(self, shard: int, seen_at: datetime, message: str) -> None:
        """Open or refresh the over-capacity incident of a shard (only its lease holder calls)."""
        with transaction.atomic():
            refreshed = (
                self.open()
                .filter(shard=shard, failure_class=FailureClass.OVER_CAPACITY)
                .update(
                    last_seen_at=seen_at, occurrences=models.F("occurrences") + 1, message=message
                )
            )
            if not refreshed:
                self.create(
                    shard=shard,
                    failure_class=FailureClass.OVER_CAPACITY,
                    opened_at=seen_at,
                    last_seen_at=seen_at,
                    message=message,
                )

    def resolve_over_capacity(self, shard: int, now: datetime, resolution: str) -> int:
        return (
            self.open()
            .filter(shard=shard, failure_class=FailureClass.OVER_CAPACITY)
            .update(state=IncidentState.RESOLVED, resolved_at=now, resolution=resolution)
        )

    def resolve(self, by: models.Model | None, resolution: str, now: datetime | None = None) -> int:
        """Resolve the open incidents of this queryset by hand; returns how many."""
        return self.open().update(
            state=IncidentState.RESOLVED,
            resolved_at=now or timezone.now(),
            resolved_by=by,
            resolution=resolution,
        )


class Incident(models.Model):
    """A run of failures of one class for one user: opened on the first, resolved when fetching works.

    An over-capacity incident concerns a shard of the users (its poller cannot poll them all
    within a tick) and has a shard instead of a user.
    """

    user = models.ForeignKey(
        "users.EagleUser",
        on_delete=models.CASCADE,
        related_name="incidents",
        null=True,
        blank=True,
    )
    shard = models.PositiveIntegerField(null=True, blank=True)
    failure_class = models.CharField(max_length=32, choices=FAILURE_CLASS_CHOICES)
    state = models.CharField(
        max_length=16, choices=IncidentState.choices, default=IncidentState.OPEN
    )
    opened_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    occurrences = models.IntegerField(default=1)
    message = models.TextField(blank=True)
    # The last reply that caused it, with credentials removed.
    raw_reply = models.TextField(blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    resolution = models.TextField(blank=True)

    objects = IncidentQuerySet.as_manager()

    class Meta:
        ordering = ["-last_seen_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "failure_class"],
                condition=Q(state="open"),
                name="one_open_incident_per_user_and_class",
            ),
            models.UniqueConstraint(
                fields=["shard", "failure_class"],
                condition=Q(state="open", shard__isnull=False),
                name="one_open_incident_per_shard_and_class",
            ),
            models.CheckConstraint(
                condition=Q(user__isnull=False, shard__isnull=True)
                | Q(user__isnull=True, shard__isnull=False),
                name="incident_concerns_a_user_or_a_shard",
            ),
        ]
        indexes = [models.Index(fields=["state", "failure_class"])]

    def __str__(self) -> str:
        return f"{self.get_failure_class_display()} for {self.subject}"

    @property
    def subject(self) -> str:
        """What the incident concerns: a user's cloud id, or a shard."""
        return self.user.cloud_id if self.user is not None else f"shard {self.shard}"


class HourFileState(models.TextChoices):
    OPEN = "open", "Open"
    SEALED = "sealed", "Sealed"
    UPLOADING = "uploading", "Uploading"
    VERIFIED = "verified", "Verified"
    FAILED = "failed", "Failed"
    CONFLICT = "conflict", "Conflict"
    # Gone from the local disk and not in the archive: its readings are missing (an incident).
    MISSING = "missing", "Missing"


# HourFile.objects.settle on PostgreSQL: the outcomes of many attempts in one statement, each
# applied only while the row still carries the lease of the attempt.
_SETTLE_SQL = """
UPDATE {table} AS h SET claimed_until = NULL, updated_at = %s, {assignments}
FROM jsonb_to_recordset(%s::jsonb) AS v(id bigint, lease timestamptz{columns})
WHERE h.id = v.id AND h.claimed_until = v.lease
RETURNING h.id
"""
# HourFile.objects.claim on PostgreSQL: lock the due rows no other run is locking, and lease
# them. The worker seals each file first thing; sealed_at keeps the first time.
_CLAIM_SQL = """
UPDATE {table} SET state = %s, claimed_until = %s, attempts = attempts + 1,
    sealed_at = COALESCE(sealed_at, %s), updated_at = %s
WHERE id IN ({due} FOR UPDATE SKIP LOCKED)
RETURNING id
"""
# Files a rotation may pick up; a conflict waits for an operator (HourFile.retry).
SHIPPABLE_STATES = (
    HourFileState.OPEN,
    HourFileState.SEALED,
    HourFileState.UPLOADING,
    HourFileState.FAILED,
)
MISSING_FILE_ADVICE = (
    "If the file can be found, put it back at that path and choose 'Retry shipping' on the hour "
    "file in the admin; if not, resolve this incident: those readings are lost."
)
# Files an operator may send back to the rotation (HourFile.retry).
RETRYABLE_STATES = (HourFileState.FAILED, HourFileState.CONFLICT, HourFileState.MISSING)
# Files the rotation is done with, shipped or not.
SETTLED_STATES = (HourFileState.VERIFIED, HourFileState.MISSING)
# The first retry of a failed upload waits this long, each further one twice as long (capped).
SHIP_FIRST_RETRY_SECONDS = 60


def hour_age_seconds(hour: datetime, now: datetime) -> float:
    """How old an hour is: seconds since it began, as the freshness figures count it."""
    return max(0.0, (now - hour).total_seconds())


@dataclass(frozen=True, slots=True)
class NewHourFile:
    """An hour file a writer has just created, whose manifest row is still to be made."""

    cloud_id: str
    hour: datetime
    part: int
    local_path: str
    user_id: int | None


# The columns of a new hour file's row that differ from file to file; every other column takes
# its default (HourFile.new_row's values).
_NEW_FILE_COLUMNS = {
    "cloud_id": "text",
    "user_id": "bigint",
    "hour": "timestamptz",
    "part": "smallint",
    "local_path": "text",
    "key": "text",
}


class HourFileQuerySet(models.QuerySet["HourFile"]):
    def register_new(self, files: Collection[NewHourFile], now: datetime) -> None:
        """Make the manifest rows (state open) of new hour files, leaving those that exist.

        One INSERT … SELECT FROM jsonb_to_recordset ON CONFLICT DO NOTHING on PostgreSQL,
        whatever their number: at the top of an hour a poller registers a file for every user,
        and a model instance per file cost more than the tick's writes. Other databases (the
        embedded SQLite default) bulk_create the rows of HourFile.new_row.
        """
        if not files:
            return
        if connection.vendor != "postgresql":
            rows = [
                HourFile.new_row(f.cloud_id, f.hour, f.part, Path(f.local_path), f.user_id, now)
                for f in files
            ]
            self.bulk_create(rows, ignore_conflicts=True)
            return
        compressed = settings.ARCHIVE_COMPRESS == "gzip"
        varying = [
            {
                "cloud_id": f.cloud_id,
                "user_id": f.user_id,
                "hour": f.hour,
                "part": f.part,
                "local_path": f.local_path,
                "key": hourfiles.archive_key(f.cloud_id, f.hour, f.part, compressed),
            }
            for f in files
        ]
        template = HourFile.new_row("0", now, 0, Path(), None, now)
        fixed = [
            model_field
            for model_field in HourFile._meta.concrete_fields
            if not model_field.primary_key and model_field.attname not in _NEW_FILE_COLUMNS
        ]
        quote = connection.ops.quote_name
        columns = [quote(name) for name in _NEW_FILE_COLUMNS] + [
            quote(model_field.column) for model_field in fixed
        ]
        values = [f"v.{quote(name)}" for name in _NEW_FILE_COLUMNS] + ["%s"] * len(fixed)
        record = ", ".join(f"{quote(name)} {kind}" for name, kind in _NEW_FILE_COLUMNS.items())
        sql = (
            f"INSERT INTO {quote(HourFile._meta.db_table)} ({', '.join(columns)}) "
            f"SELECT {', '.join(values)} FROM jsonb_to_recordset(%s::jsonb) AS v({record}) "
            "ON CONFLICT DO NOTHING"
        )
        params = [
            model_field.get_db_prep_save(model_field.pre_save(template, add=True), connection)
            for model_field in fixed
        ]
        with connection.cursor() as cursor:
            cursor.execute(sql, [*params, _json_rows(varying)])

    def in_pages(self, *fields: str, size: int = 500) -> Iterator[tuple[Any, ...]]:
        """(pk, *fields) of the rows by primary key, a page at a time, so memory stays bounded
        and each page is fresh."""
        last = 0
        while True:
            page = list(self.filter(pk__gt=last).order_by("pk").values_list("pk", *fields)[:size])
            if not page:
                return
            yield from page
            last = page[-1][0]

    def unshipped(self) -> "HourFileQuerySet":
        """Files still to be shipped: neither verified nor known to be missing (an incident says
        so; counting them would keep the freshness alarm red for good)."""
        return self.exclude(state__in=SETTLED_STATES)

    def due(self, now: datetime) -> "HourFileQuerySet":
        """Files of closed hours (over plus the grace period) that a rotation may claim now."""
        closed_before = now - timedelta(hours=1, seconds=settings.ROTATE_GRACE_SECONDS)
        return self.filter(
            models.Q(next_attempt_at__isnull=True) | models.Q(next_attempt_at__lte=now),
            models.Q(claimed_until__isnull=True) | models.Q(claimed_until__lte=now),
            state__in=SHIPPABLE_STATES,
            hour__lte=closed_before,
        )

    def awaiting_local_delete(self) -> "HourFileQuerySet":
        """Verified files whose local copy may still be on disk (a run stopped before removing it,
        or a late reading recreated the file after its markers were cleaned up)."""
        return self.filter(state=HourFileState.VERIFIED, local_deleted_at__isnull=True)

    def claim(self, pks: list[int], now: datetime) -> tuple[datetime, list[int]]:
        """Lease those of `pks` still due for ROTATE_LEASE_SECONDS; rows another run is claiming
        at this very moment are skipped, not waited for. Returns (end of lease, pks claimed).

        On PostgreSQL one statement: the due rows are locked (SKIP LOCKED) and updated at once.
        """
        until = now + timedelta(seconds=settings.ROTATE_LEASE_SECONDS)
        due = self.due(now).filter(pk__in=pks).order_by()
        if connection.vendor == "postgresql":
            due_sql, due_params = due.values("pk").query.sql_with_params()
            with connection.cursor() as cursor:
                cursor.execute(
                    _CLAIM_SQL.format(table=HourFile._meta.db_table, due=due_sql),
                    [HourFileState.UPLOADING, until, now, now, *due_params],
                )
                return until, [pk for (pk,) in cursor.fetchall()]
        with transaction.atomic():
            candidates = list(due.select_for_update(skip_locked=True).values_list("pk", flat=True))
            self.filter(pk__in=candidates).update(
                state=HourFileState.UPLOADING,
                claimed_until=until,
                attempts=models.F("attempts") + 1,
                sealed_at=models.functions.Coalesce("sealed_at", models.Value(now)),
                updated_at=now,
            )
        return until, candidates

    def settle(
        self, outcomes: list[tuple[int, datetime, dict[str, object]]], now: datetime
    ) -> set[int]:
        """Record the outcomes of claimed attempts, (pk, lease, fields) each; a row whose lease is
        no longer the one given (it lapsed and another run took the file over) is left to its
        new holder. Each row's update is atomic on its own. Returns the pks recorded.

        On PostgreSQL one statement per set of fields, whatever the number of rows; other
        databases (the embedded SQLite default) update row by row.
        """
        groups: dict[tuple[str, ...], list[tuple[int, datetime, dict[str, object]]]] = {}
        for outcome in outcomes:
            groups.setdefault(tuple(sorted(outcome[2])), []).append(outcome)
        held: set[int] = set()
        for names, group in groups.items():
            if connection.vendor == "postgresql":
                held.update(self._settle_in_one_statement(names, group, now))
                continue
            for pk, lease, fields in group:
                if self.filter(pk=pk, claimed_until=lease).update(
                    claimed_until=None, updated_at=now, **fields
                ):
                    held.add(pk)
        return held

    def _settle_in_one_statement(
        self,
        names: tuple[str, ...],
        group: list[tuple[int, datetime, dict[str, object]]],
        now: datetime,
    ) -> list[int]:
        concrete = [HourFile._meta.get_field(name) for name in names]
        columns = [f.column for f in concrete if isinstance(f, models.Field)]
        types = [f.db_type(connection) for f in concrete if isinstance(f, models.Field)]
        sql = _SETTLE_SQL.format(
            table=HourFile._meta.db_table,
            assignments=", ".join(f"{column} = v.{column}" for column in columns),
            columns="".join(f", {c} {t}" for c, t in zip(columns, types, strict=True)),
        )
        rows = [{"id": pk, "lease": lease, **fields} for pk, lease, fields in group]
        with connection.cursor() as cursor:
            cursor.execute(sql, [now, orjson.dumps(rows).decode()])
            return [pk for (pk,) in cursor.fetchall()]

    def forget_empty(self, pk: int, lease: datetime) -> bool:
        """Drop the row of a file that turned out empty: there was nothing to ship."""
        deleted, _ = self.filter(pk=pk, claimed_until=lease).delete()
        return deleted == 1

    def mark_deleted_locally(self, pks: list[int], now: datetime) -> int:
        """Record that these verified files are gone from disk; the number newly marked."""
        return self.filter(
            pk__in=pks, state=HourFileState.VERIFIED, local_deleted_at__isnull=True
        ).update(local_deleted_at=now, updated_at=now)

    def oldest_unshipped(self, cloud_id: str | None = None) -> datetime | None:
        """The start of the oldest hour with a file not yet verified in the archive."""
        rows = self.unshipped()
        if cloud_id is not None:
            rows = rows.filter(cloud_id=cloud_id)
        return rows.aggregate(oldest=models.Min("hour"))["oldest"]

    def oldest_unshipped_by_user(self, limit: int | None = None) -> list[tuple[str, datetime]]:
        """(cloud_id, start of its oldest unshipped hour), the most overdue users first."""
        rows = (
            self.unshipped()
            .values("cloud_id")
            .annotate(oldest=models.Min("hour"))
            .order_by("oldest", "cloud_id")
            .values_list("cloud_id", "oldest")
        )
        return list(rows[:limit] if limit is not None else rows)

    def report_missing(self, pks: Collection[int], now: datetime) -> None:
        """Open (or refresh) one incident per user for these missing files, naming each hour
        and what is gone, and how an operator settles it."""
        by_user: dict[int, list[str]] = {}
        rows = self.filter(pk__in=pks, user__isnull=False).order_by("hour", "part")
        for user_id, hour, part, local_path, key in rows.values_list(
            "user_id", "hour", "part", "local_path", "key"
        ):
            by_user.setdefault(user_id, []).append(
                f"hour {hour:%Y-%m-%d %H}:00 UTC part {part}: {local_path} is gone from the "
                f"local disk and the archive has no object at {key}"
            )
        Incident.objects.record_sightings(
            IncidentSighting(
                user_id=user_id,
                failure_class=FailureClass.HOUR_FILE_MISSING.value,
                opened_at=now,
                seen_at=now,
                occurrences=len(lines),
                message="; ".join(lines) + ". " + MISSING_FILE_ADVICE,
            )
            for user_id, lines in by_user.items()
        )

    def count_by_state(self, states: list[str]) -> dict[str, int]:
        """Rows in each of `states` (0 for none). Counting verified rows reads the whole table."""
        rows = self.unshipped() if not set(states) & set(SETTLED_STATES) else self
        counts = dict(
            rows.filter(state__in=states)
            .order_by()
            .values("state")
            .annotate(n=models.Count("pk"))
            .values_list("state", "n")
        )
        return {state: counts.get(state, 0) for state in states}


class HourFile(models.Model):
    """The manifest: one row per hour file (or late part), from first write to verified archive.

    `key` is fixed when the row is made, before any upload, and every retry reuses it. `size` and
    `sha256` describe the archived object as stored (gzip bytes when `compressed`); `data_size` and
    `data_sha256` describe the JSON lines inside it, as they were on local disk.
    """

    cloud_id = CloudIdField()
    user = models.ForeignKey(
        "users.EagleUser",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="hour_files",
    )
    hour = models.DateTimeField(help_text="start of the UTC hour")
    part = models.PositiveSmallIntegerField(
        default=0, help_text="0 for the hour, N for late part N"
    )
    local_path = models.CharField(max_length=500)
    key = models.CharField(max_length=500, help_text="archive key, fixed before the first upload")
    compressed = models.BooleanField(default=False, help_text="gzip object (.jl.gz)")
    content_type = models.CharField(max_length=64, blank=True, help_text="of the archived object")
    state = models.CharField(
        max_length=16, choices=HourFileState.choices, default=HourFileState.OPEN
    )
    size = models.BigIntegerField(null=True, blank=True, help_text="bytes of the archived object")
    sha256 = models.CharField(max_length=64, blank=True, help_text="of the archived object")
    data_size = models.BigIntegerField(
        null=True, blank=True, help_text="bytes of the JSON lines (before compression)"
    )
    data_sha256 = models.CharField(
        max_length=64, blank=True, help_text="of the JSON lines (before compression)"
    )
    line_count = models.IntegerField(null=True, blank=True, help_text="readable records")
    malformed_lines = models.IntegerField(
        default=0, help_text="lines that are not a JSON record (kept in the archived file)"
    )
    first_reading_at = models.DateTimeField(null=True, blank=True)
    last_reading_at = models.DateTimeField(null=True, blank=True)
    newest_timestamps = models.JSONField(
        default=dict,
        blank=True,
        help_text="the newest meter timestamp of each record type in the file: what a restarted "
        "poller has logged, once the file has left the disk",
    )
    attempts = models.IntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    sealed_at = models.DateTimeField(null=True, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    local_deleted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = HourFileQuerySet.as_manager()

    class Meta:
        ordering = ["-hour", "cloud_id", "part"]
        constraints = [
            models.UniqueConstraint(
                fields=["cloud_id", "hour", "part"], name="one_file_per_hour_part"
            )
        ]
        indexes = [
            # The rotation queue: files still to be shipped.
            models.Index(
                fields=["hour"],
                name="hourfile_unshipped",
                condition=~Q(state="verified"),
            ),
            models.Index(fields=["cloud_id", "hour"]),
            # verify_archive: which listed objects the manifest knows.
            models.Index(fields=["key"]),
            # The rotation's clean-up: verified files whose local copy may remain.
            models.Index(
                fields=["hour"],
                name="hourfile_undeleted",
                condition=Q(state="verified", local_deleted_at__isnull=True),
            ),
            # The Parquet export: hours whose files were verified since its last look.
            models.Index(fields=["verified_at"], name="hourfile_verified_at"),
        ]

    def __str__(self) -> str:
        return self.key

    @classmethod
    def new_row(
        cls,
        cloud_id: str,
        hour: datetime,
        part: int,
        local_path: Path,
        user_id: int | None,
        now: datetime,
    ) -> "HourFile":
        """The manifest row of an hour file seen for the first time (unsaved). Its archive key
        and whether it is stored compressed are fixed here, before any upload, so every retry
        ships to the same key; this is the one place that reads ARCHIVE_COMPRESS, and changing
        it never changes the key of a file already registered."""
        compressed = settings.ARCHIVE_COMPRESS == "gzip"
        return cls(
            cloud_id=cloud_id,
            user_id=user_id,
            hour=hour,
            part=part,
            local_path=str(local_path),
            key=hourfiles.archive_key(cloud_id, hour, part, compressed),
            compressed=compressed,
            state=HourFileState.OPEN,
            created_at=now,
        )

    @staticmethod
    def retry_delay(attempts: int) -> timedelta:
        """How long to wait after `attempts` failed attempts: exponential, capped."""
        seconds = SHIP_FIRST_RETRY_SECONDS * 2 ** min(max(attempts - 1, 0), 20)
        return timedelta(seconds=min(seconds, settings.ROTATE_RETRY_MAX_SECONDS))

    @staticmethod
    def verified_fields(now: datetime, stats: dict[str, object]) -> dict[str, object]:
        """A shipped file: archived and checked. Its local copy may go now."""
        return {
            "state": HourFileState.VERIFIED,
            "verified_at": now,
            "next_attempt_at": None,
            "last_error": "",
            **stats,
        }

    @staticmethod
    def conflict_fields(error: str, stats: dict[str, object]) -> dict[str, object]:
        """A different object is at the key: kept as it is, and so is the local file."""
        return {"state": HourFileState.CONFLICT, "last_error": error, **stats}

    @staticmethod
    def failed_fields(now: datetime, error: str, attempts: int) -> dict[str, object]:
        """A failed attempt: the file stays on disk and is tried again after a backoff."""
        return {
            "state": HourFileState.FAILED,
            "last_error": error,
            "next_attempt_at": now + HourFile.retry_delay(attempts),
        }

    @staticmethod
    def missing_fields(error: str) -> dict[str, object]:
        """Gone from disk and not in the archive: nothing left to ship (HourFile.retry if the
        file is put back)."""
        return {"state": HourFileState.MISSING, "last_error": error, "next_attempt_at": None}

    def retry(self) -> bool:
        """Make a failed, conflicting or missing file due again now (an operator resolved the
        cause, or put the file back)."""
        now = timezone.now()
        updated = HourFile.objects.filter(pk=self.pk, state__in=RETRYABLE_STATES).update(
            state=HourFileState.SEALED, next_attempt_at=None, claimed_until=None, updated_at=now
        )
        if updated:
            self.refresh_from_db()
        return updated == 1


@dataclass(frozen=True, slots=True)
class HourSources:
    """What the archive holds of one fleet-hour: its verified hour files, their readable and
    malformed lines, the newest verification, and how many of its files are not verified yet."""

    verified_files: int
    lines: int
    newest_verified_at: datetime | None
    unshipped_files: int
    malformed_lines: int = 0


def hour_sources(hours: Collection[datetime]) -> dict[datetime, HourSources]:
    """HourSources of each of `hours` that has any hour file, in one grouped query."""
    verified = Q(state=HourFileState.VERIFIED)
    rows = (
        HourFile.objects.filter(hour__in=list(hours))
        .order_by()
        .values("hour")
        .annotate(
            verified_files=models.Count("pk", filter=verified),
            lines=models.Sum("line_count", filter=verified, default=0),
            newest_verified_at=models.Max("verified_at", filter=verified),
            unshipped_files=models.Count("pk", filter=~verified),
            malformed_lines=models.Sum("malformed_lines", filter=verified, default=0),
        )
    )
    return {
        row["hour"]: HourSources(
            row["verified_files"],
            row["lines"],
            row["newest_verified_at"],
            row["unshipped_files"],
            row["malformed_lines"],
        )
        for row in rows
    }


class DatasetHourState(models.TextChoices):
    PENDING = "pending", "Pending"  # never exported, or its hour files changed since
    EXPORTING = "exporting", "Exporting"
    EXPORTED = "exported", "Exported"
    FAILED = "failed", "Failed"


# The first retry of a failed export waits this long, each further one twice as long (capped).
EXPORT_FIRST_RETRY_SECONDS = 60


class DatasetHourQuerySet(models.QuerySet["DatasetHour"]):
    def mark_changed(self, sources: dict[datetime, HourSources]) -> int:
        """Make due every hour of `sources` whose Parquet is missing or was built from other hour
        files (a late part, a purge); returns how many. Rows being exported are left alone: the
        export compares its sources again when it publishes."""
        known = {row.hour: row for row in self.filter(hour__in=list(sources))}
        now = timezone.now()
        new = [
            DatasetHour(hour=hour, created_at=now, updated_at=now)
            for hour, found in sources.items()
            if hour not in known and found.verified_files
        ]
        self.bulk_create(new, ignore_conflicts=True)
        changed = [
            row.pk
            for hour, row in known.items()
            if row.state == DatasetHourState.EXPORTED and not row.built_from(sources[hour])
        ]
        self.filter(pk__in=changed, state=DatasetHourState.EXPORTED).update(
            state=DatasetHourState.PENDING, next_attempt_at=None, updated_at=now
        )
        return len(new) + len(changed)

    def mark_pending(self, hours: Collection[datetime]) -> int:
        """Make these hours due for a new version whatever their hour files say (their files
        are about to be removed, as by a purge); returns how many."""
        return self.filter(
            hour__in=list(hours), state__in=(DatasetHourState.EXPORTED, DatasetHourState.FAILED)
        ).update(state=DatasetHourState.PENDING, next_attempt_at=None, updated_at=timezone.now())

    def due(self, now: datetime) -> "DatasetHourQuerySet":
        """Hours an export may claim now: pending, failed past their backoff, or held by an
        export whose lease lapsed."""
        return self.filter(
            Q(state=DatasetHourState.PENDING)
            | Q(state=DatasetHourState.FAILED, next_attempt_at__lte=now)
            | Q(state=DatasetHourState.EXPORTING, claimed_until__lte=now)
        )

    def claim(self, pk: int, now: datetime) -> "DatasetHour | None":
        """Lease one due hour for ROTATE_LEASE_SECONDS with a conditional UPDATE, giving its
        attempt a version number never used before; None if another export has it."""
        until = now + timedelta(seconds=settings.ROTATE_LEASE_SECONDS)
        claimed = (
            self.due(now)
            .filter(pk=pk)
            .update(
                state=DatasetHourState.EXPORTING,
                claimed_until=until,
                attempts=models.F("attempts") + 1,
                attempt_version=models.F("attempt_version") + 1,
                updated_at=now,
            )
        )
        return self.get(pk=pk) if claimed else None


class DatasetHour(models.Model):
    """One UTC hour of the Parquet dataset (the readings of every household in that hour).

    `version` is the published one (0: none yet); each export attempt writes its files under a
    new `attempt_version`, so an attempt never meets the objects of another. The `source_*`
    fields say which hour files the published version was built from: when they no longer match
    the manifest, the hour is exported again as a whole.
    """

    hour = models.DateTimeField(unique=True, help_text="start of the UTC hour")
    state = models.CharField(
        max_length=16, choices=DatasetHourState.choices, default=DatasetHourState.PENDING
    )
    version = models.PositiveIntegerField(default=0, help_text="published version; 0 for none")
    attempt_version = models.PositiveIntegerField(
        default=0, help_text="version of the latest attempt (each attempt takes a new one)"
    )
    rows = models.BigIntegerField(null=True, blank=True, help_text="readings in the Parquet files")
    households = models.IntegerField(null=True, blank=True)
    source_files = models.IntegerField(default=0, help_text="verified hour files read")
    source_lines = models.BigIntegerField(default=0, help_text="their readable lines")
    source_verified_at = models.DateTimeField(
        null=True, blank=True, help_text="the newest verification among them"
    )
    duplicates = models.IntegerField(default=0, help_text="lines repeating a reading kept")
    skipped = models.IntegerField(
        default=0, help_text="lines that are no reading of a known record type"
    )
    attempts = models.IntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    exported_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = DatasetHourQuerySet.as_manager()

    class Meta:
        ordering = ["-hour"]
        verbose_name = "Parquet hour"
        indexes = [
            # The export queue.
            models.Index(fields=["hour"], name="datasethour_due", condition=~Q(state="exported"))
        ]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H}:00 v{self.version}"

    def built_from(self, sources: HourSources) -> bool:
        """Whether the published version was built from exactly these hour files."""
        return (
            self.version > 0
            and self.source_files == sources.verified_files
            and self.source_lines == sources.lines
            and self.source_verified_at == sources.newest_verified_at
        )

    @staticmethod
    def retry_delay(attempts: int) -> timedelta:
        seconds = EXPORT_FIRST_RETRY_SECONDS * 2 ** min(max(attempts - 1, 0), 20)
        return timedelta(seconds=min(seconds, settings.ROTATE_RETRY_MAX_SECONDS))


class DatasetFileState(models.TextChoices):
    PLANNED = "planned", "Planned"  # key fixed before writing; written or not
    CURRENT = "current", "Current"  # part of the published version, verified
    OBSOLETE = "obsolete", "Obsolete"  # of a replaced version or a dead attempt: to delete


class DatasetFileContent(models.TextChoices):
    READINGS = "readings", "Readings"  # one row per reading, under PARQUET_PREFIX
    # One row per household and minute of its demand readings, under PARQUET_SUMMARY_PREFIX.
    DEMAND_MINUTES = "demand_minutes", "Demand per household-minute"


class DatasetFile(models.Model):
    """One Parquet object of the dataset, recorded before it is written and until it is gone."""

    dataset_hour = models.ForeignKey(DatasetHour, on_delete=models.CASCADE, related_name="files")
    version = models.PositiveIntegerField()
    record_type = models.CharField(max_length=32)
    content = models.CharField(
        max_length=16, choices=DatasetFileContent.choices, default=DatasetFileContent.READINGS
    )
    key = models.CharField(max_length=500, unique=True)
    state = models.CharField(
        max_length=16, choices=DatasetFileState.choices, default=DatasetFileState.PLANNED
    )
    rows = models.BigIntegerField()
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["dataset_hour", "record_type", "key"]
        indexes = [models.Index(fields=["state", "record_type"])]

    def __str__(self) -> str:
        return self.key


class DatasetScan(models.Model):
    """Where the scheduled export's search for changed hours starts: hour files verified since
    `verified_since` (one row)."""

    verified_since = models.DateTimeField()

    def __str__(self) -> str:
        return f"hour files verified since {self.verified_since:%Y-%m-%d %H:%M:%S}"


class PollLeaseQuerySet(models.QuerySet["PollLease"]):
    """The lease protocol (see ingestion/polling/leases.py): every change is a conditional UPDATE whose
    row count says whether it happened, so two processes never both believe they hold a shard."""

    def ensure(self, shards: Iterable[int]) -> None:
        self.bulk_create([PollLease(shard=shard) for shard in shards], ignore_conflicts=True)

    def claim(
        self, shard: int, holder: str, now: datetime, seconds: float, dead: str | None = None
    ) -> bool:
        """Take the shard if nobody holds it, its holder's lease expired, or it is ours; or from
        `dead`, a holder known to have died (its session lock is free), if it still holds it."""
        claimable = (
            Q(holder="") | Q(holder=holder) | Q(expires_at__isnull=True) | Q(expires_at__lt=now)
        )
        if dead:
            claimable |= Q(holder=dead)
        return (
            self.filter(claimable, shard=shard).update(
                holder=holder,
                expires_at=now + timedelta(seconds=seconds),
                # Renewing our own lease keeps a live successor waiting. Taking a lease from
                # someone else drops the successor named there: it queued up behind a holder
                # that is gone and may be gone itself; a live one queues up again.
                successor=models.Case(
                    models.When(
                        Q(holder=holder) & ~Q(successor=holder), then=models.F("successor")
                    ),
                    default=models.Value(""),
                ),
                updated_at=now,
            )
            == 1
        )

    def renew(
        self, shard: int, holder: str, now: datetime, seconds: float, last_tick_at: datetime
    ) -> bool:
        """Extend our lease after a tick; False if it is no longer ours."""
        return (
            self.filter(shard=shard, holder=holder).update(
                expires_at=now + timedelta(seconds=seconds),
                last_tick_at=last_tick_at,
                updated_at=now,
            )
            == 1
        )

    def hand_over(
        self, shard: int, holder: str, now: datetime, seconds: float, last_tick_at: datetime
    ) -> bool:
        """Give our shard to the waiting successor, if there is one; True if it was given."""
        return (
            self.filter(shard=shard, holder=holder)
            .exclude(successor="")
            .update(
                holder=models.F("successor"),
                successor="",
                expires_at=now + timedelta(seconds=seconds),
                last_tick_at=last_tick_at,
                updated_at=now,
            )
            == 1
        )

    def wait_as_successor(self, shard: int, holder: str, now: datetime) -> bool:
        """Queue up for the shard; a later caller replaces an earlier one (the newest waits)."""
        return (
            self.filter(shard=shard).exclude(holder=holder).update(successor=holder, updated_at=now)
            == 1
        )

    def withdraw(self, shard: int, holder: str, now: datetime) -> None:
        self.filter(shard=shard, successor=holder).update(successor="", updated_at=now)

    def orphaned(self, now: datetime, idle_seconds: float, shards: int) -> "PollLeaseQuerySet":
        """Shards nobody has held or claimed for `idle_seconds`: their holder died or left without
        a successor, and any successor named has not come for them either (it died too)."""
        return self.filter(
            Q(holder="") | Q(expires_at__isnull=True) | Q(expires_at__lt=now),
            updated_at__lt=now - timedelta(seconds=idle_seconds),
            shard__lt=shards,
        )

    def mark_rescued(self, shard: int, now: datetime, idle_seconds: float, shards: int) -> bool:
        """Note that a window task is sent for an orphaned shard: only one rescuer wins, and none
        sends another for `idle_seconds`."""
        orphaned = self.orphaned(now, idle_seconds, shards).filter(shard=shard)
        return orphaned.update(successor="", updated_at=now) == 1

    def release(self, shard: int, holder: str, now: datetime, seconds: float) -> bool:
        """Stop holding the shard: to the waiting successor if any, else to nobody."""
        return (
            self.filter(shard=shard, holder=holder).update(
                holder=models.F("successor"),
                successor="",
                expires_at=models.Case(
                    models.When(successor="", then=models.Value(None)),
                    default=models.Value(now + timedelta(seconds=seconds)),
                    output_field=models.DateTimeField(),
                ),
                updated_at=now,
            )
            == 1
        )


class PollLease(models.Model):
    """Who polls a shard of the users now. Claimed and renewed with conditional UPDATEs."""

    shard = models.PositiveIntegerField(primary_key=True)
    holder = models.CharField(max_length=200, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    # A window task waiting to take over at the next tick boundary.
    successor = models.CharField(max_length=200, blank=True)
    last_tick_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = PollLeaseQuerySet.as_manager()

    def __str__(self) -> str:
        return f"shard {self.shard} held by {self.holder or 'nobody'}"

    def is_held(self, now: datetime) -> bool:
        """Whether a live holder has it (an expired lease is free to claim)."""
        return bool(self.holder) and self.expires_at is not None and self.expires_at >= now

    def last_tick(self) -> datetime | None:
        """The slot of the shard's last tick: the lease's `last_tick_at`, or a later tick row. A
        holder writes its tick, then renews the lease with it: one killed in between leaves a tick
        the lease does not know, which its successor must not run again."""
        recorded = (
            Tick.objects.filter(shard=self.shard)
            .order_by("-scheduled_at")
            .values_list("scheduled_at", flat=True)
            .first()
        )
        return max((t for t in (self.last_tick_at, recorded) if t is not None), default=None)


class Tick(models.Model):
    """One 6-second poll of one shard: when it was due, when it ran, and what it did."""

    shard = models.PositiveIntegerField(default=0)
    holder = models.CharField(max_length=200, blank=True)
    scheduled_at = models.DateTimeField()
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    users_due = models.IntegerField(default=0, help_text="users whose fetch was due")
    users_polled = models.IntegerField(default=0, help_text="users fetched before the deadline")
    readings_written = models.IntegerField(default=0)
    failures = models.IntegerField(default=0)
    users_skipped = models.IntegerField(
        default=0, help_text="users due but not polled: more than the poller could fetch in time"
    )
    capacity = models.IntegerField(
        null=True,
        blank=True,
        help_text="fetches per tick the poller (all its shards) completes, measured; "
        "empty until measured",
    )
    # Finished after the next tick was due, or could not fetch every due user in time.
    late = models.BooleanField(default=False)

    class Meta:
        ordering = ["-scheduled_at"]
        indexes = [models.Index(fields=["scheduled_at"])]

    def __str__(self) -> str:
        return f"tick {self.scheduled_at:%H:%M:%S} shard {self.shard}"


class ReportEvent(models.TextChoices):
    OPENED = "opened", "Opened"
    RESOLVED = "resolved", "Resolved"


class ReportState(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed (gave up)"


# The first retry of an undelivered report waits this long; each further one twice as long.
REPORT_FIRST_RETRY_SECONDS = 30
REPORT_DELIVERY_FIELDS = [
    "state",
    "attempts",
    "last_attempt_at",
    "delivered_at",
    "next_attempt_at",
    "response_status",
    "last_error",
]


class IncidentReportQuerySet(models.QuerySet["IncidentReport"]):
    def due(self, now: datetime) -> "IncidentReportQuerySet":
        return self.filter(state=ReportState.PENDING, next_attempt_at__lte=now)

    def claim_next(self, now: datetime, lease: timedelta) -> "IncidentReport | None":
        """The oldest due report, claimed for `lease` by moving its next attempt past the lease
        (a worker that dies while sending leaves it due again), or None when none is due."""
        while True:
            candidate = self.due(now).order_by("event_at", "pk").first()
            if candidate is None:
                return None
            claimed = IncidentReport.objects.filter(
                pk=candidate.pk,
                state=ReportState.PENDING,
                next_attempt_at=candidate.next_attempt_at,
            ).update(next_attempt_at=now + lease)
            if claimed == 1:
                candidate.next_attempt_at = now + lease
                return candidate
            # Another worker claimed or settled it first: take the next one.


class IncidentReport(models.Model):
    """One incident event (opened or resolved) to POST to ERROR_REPORT_URL, and its delivery.

    Delivery is at least once: the receiver can recognise a repeat by the payload's report_key.
    """

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="reports")
    event = models.CharField(max_length=16, choices=ReportEvent.choices)
    event_at = models.DateTimeField(help_text="when the incident was opened or resolved")
    # What is sent, fixed when the report is made so that every attempt says the same thing.
    payload = models.JSONField()
    state = models.CharField(
        max_length=16, choices=ReportState.choices, default=ReportState.PENDING
    )
    attempts = models.IntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    response_status = models.IntegerField(
        null=True, blank=True, help_text="HTTP status of the last attempt"
    )
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = IncidentReportQuerySet.as_manager()

    class Meta:
        ordering = ["-event_at", "-pk"]
        constraints = [
            models.UniqueConstraint(fields=["incident", "event"], name="one_report_per_event")
        ]
        indexes = [
            # The delivery queue (incident_reports.deliver_due_reports).
            models.Index(
                fields=["next_attempt_at"],
                name="incidentreport_due",
                condition=Q(state="pending"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_event_display()} report of incident {self.incident_id}"

    @staticmethod
    def retry_delay(attempts: int) -> timedelta:
        """How long to wait after `attempts` failed attempts: exponential, capped."""
        seconds = REPORT_FIRST_RETRY_SECONDS * 2 ** min(attempts - 1, 20)
        return timedelta(seconds=min(seconds, settings.ERROR_REPORT_MAX_BACKOFF_SECONDS))

    def record_delivery(self, status: int, now: datetime) -> None:
        self.state = ReportState.DELIVERED
        self.attempts += 1
        self.last_attempt_at = self.delivered_at = now
        self.next_attempt_at = None
        self.response_status = status
        self.last_error = ""
        self.save(update_fields=REPORT_DELIVERY_FIELDS)

    def record_failure(self, error: str, status: int | None, now: datetime) -> None:
        """A failed attempt: retried after a backoff, or given up after ERROR_REPORT_MAX_ATTEMPTS."""
        self.attempts += 1
        self.last_attempt_at = now
        self.response_status = status
        self.last_error = error
        if self.attempts >= settings.ERROR_REPORT_MAX_ATTEMPTS:
            self.state = ReportState.FAILED
            self.next_attempt_at = None
        else:
            self.next_attempt_at = now + self.retry_delay(self.attempts)
        self.save(update_fields=REPORT_DELIVERY_FIELDS)

    def retry_now(self) -> None:
        """Make an undelivered report due at once, with a fresh allowance of attempts."""
        if self.state == ReportState.DELIVERED:
            return
        self.state = ReportState.PENDING
        self.attempts = 0
        self.next_attempt_at = timezone.now()
        self.save(update_fields=["state", "attempts", "next_attempt_at"])


class ReadingsLoad(models.Model):
    """One load of sealed hour files of one hour into the SQL readings store (readings_store.py):
    committed in the same transaction as the rows it added, or, when the load failed, on its own
    afterwards with the error."""

    hour = models.DateTimeField(help_text="start of the UTC hour loaded")
    started_at = models.DateTimeField(default=timezone.now)
    duration_seconds = models.FloatField(default=0.0)
    files = models.IntegerField(default=0, help_text="hour files loaded")
    files_failed = models.IntegerField(default=0, help_text="hour files that could not be read")
    rows_read = models.BigIntegerField(default=0, help_text="typed readings streamed")
    rows_inserted = models.BigIntegerField(default=0, help_text="of them new in the table")
    malformed_lines = models.IntegerField(
        default=0, help_text="lines that are not a typed record (they stay in the hour files)"
    )
    raw_kept = models.BooleanField(default=True, help_text="raw objects stored (READINGS_KEEP_RAW)")
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            models.Index(fields=["hour"]),
            # The admin's failures filter and the lag figure.
            models.Index(
                fields=["-started_at"], name="readingsload_failed", condition=~Q(error="")
            ),
        ]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H}:00 loaded {self.started_at:%Y-%m-%d %H:%M:%S}"

    @property
    def failed(self) -> bool:
        return bool(self.error)


class LoadedHourFile(models.Model):
    """An hour file whose readings are in the SQL readings store, recorded with them: files without
    one are what the next load pass loads; the API reads an hour from the table only when every
    file of it has one."""

    hour_file = models.OneToOneField(
        HourFile, primary_key=True, on_delete=models.CASCADE, related_name="store_load"
    )
    load = models.ForeignKey(ReadingsLoad, on_delete=models.CASCADE, related_name="loaded_files")

    def __str__(self) -> str:
        return f"{self.hour_file_id} in load {self.load_id}"
