from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from ingestion.records import FailureClass
from users.models import EagleUser

FAILURE_CLASS_CHOICES = [(c.value, c.label) for c in FailureClass]


class FetchState(models.Model):
    """Per-user fetch metadata, kept apart from EagleUser so operator edits never race the poller."""

    user = models.OneToOneField(
        EagleUser, on_delete=models.CASCADE, primary_key=True, related_name="fetch_state"
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

    def __str__(self) -> str:
        return f"fetch state of {self.user_id}"


class IncidentState(models.TextChoices):
    OPEN = "open", "Open"
    RESOLVED = "resolved", "Resolved"


class Incident(models.Model):
    """A run of failures of one class for one user: opened on the first, resolved when fetching works."""

    user = models.ForeignKey(EagleUser, on_delete=models.CASCADE, related_name="incidents")
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

    class Meta:
        ordering = ["-last_seen_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "failure_class"],
                condition=Q(state="open"),
                name="one_open_incident_per_user_and_class",
            )
        ]
        indexes = [models.Index(fields=["state", "failure_class"])]

    def __str__(self) -> str:
        return f"{self.get_failure_class_display()} for {self.user_id}"


class HourFileState(models.TextChoices):
    OPEN = "open", "Open"
    SEALED = "sealed", "Sealed"
    UPLOADING = "uploading", "Uploading"
    VERIFIED = "verified", "Verified"
    FAILED = "failed", "Failed"
    CONFLICT = "conflict", "Conflict"


class HourFile(models.Model):
    """The manifest: one row per hour file (or late part), from first write to verified archive."""

    cloud_id = models.CharField(max_length=32)
    user = models.ForeignKey(
        EagleUser, null=True, blank=True, on_delete=models.SET_NULL, related_name="hour_files"
    )
    hour = models.DateTimeField(help_text="start of the UTC hour")
    part = models.PositiveSmallIntegerField(
        default=0, help_text="0 for the hour, N for late part N"
    )
    local_path = models.CharField(max_length=500)
    key = models.CharField(max_length=500, help_text="archive key, fixed before the first upload")
    compressed = models.BooleanField(default=False)
    state = models.CharField(
        max_length=16, choices=HourFileState.choices, default=HourFileState.OPEN
    )
    size = models.BigIntegerField(null=True, blank=True, help_text="bytes of the archived object")
    sha256 = models.CharField(max_length=64, blank=True, help_text="of the archived object")
    line_count = models.IntegerField(null=True, blank=True)
    first_reading_at = models.DateTimeField(null=True, blank=True)
    last_reading_at = models.DateTimeField(null=True, blank=True)
    attempts = models.IntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    sealed_at = models.DateTimeField(null=True, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    local_deleted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

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
        ]

    def __str__(self) -> str:
        return self.key


class PollLease(models.Model):
    """Who polls a shard of the users now. Claimed and renewed with conditional UPDATEs."""

    shard = models.PositiveIntegerField(primary_key=True)
    holder = models.CharField(max_length=200, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    # A window task waiting to take over at the next tick boundary.
    successor = models.CharField(max_length=200, blank=True)
    last_tick_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"shard {self.shard} held by {self.holder or 'nobody'}"


class Tick(models.Model):
    """One 6-second poll of one shard: when it was due, when it ran, and what it did."""

    shard = models.PositiveIntegerField(default=0)
    holder = models.CharField(max_length=200, blank=True)
    scheduled_at = models.DateTimeField()
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    users_polled = models.IntegerField(default=0)
    readings_written = models.IntegerField(default=0)
    failures = models.IntegerField(default=0)
    late = models.BooleanField(default=False)

    class Meta:
        ordering = ["-scheduled_at"]
        indexes = [models.Index(fields=["scheduled_at"])]

    def __str__(self) -> str:
        return f"tick {self.scheduled_at:%H:%M:%S} shard {self.shard}"
