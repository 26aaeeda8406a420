import hashlib
import hmac
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MaxLengthValidator
from django.db import IntegrityError, models, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from users.cloud_ids import CloudIdField, cloud_id_validator
from users.crypto import EncryptedTextField
from users.gateway_addresses import validate_gateway_address, validate_meter_mac

EAGLE_PASSWORD_MAX_LENGTH = 1024
DEFAULT_SUSPENDED_REASON = "Suspended by an operator."
PUSH_TOKEN_PREFIX = "rlp_"


def _push_token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ConnectionType(models.TextChoices):
    CLOUD = "cloud", "Rainforest cloud"
    EAGLE200 = "eagle200", "Local EAGLE-200"
    LEGACY = "legacy", "Legacy local EAGLE"
    PUSH = "push", "Push (uploader)"


LOCAL_CONNECTION_TYPES = (ConnectionType.EAGLE200, ConnectionType.LEGACY)


def _has_open_incident() -> Exists:
    # The ingestion app depends on this one, not the other way round: its Incident model is
    # reached through the reverse relation, never imported (hence Any: no static type for it).
    incident_model: Any = EagleUser._meta.get_field("incidents").related_model
    return Exists(incident_model.objects.open().filter(user=OuterRef("pk")))


class EagleUserQuerySet(models.QuerySet["EagleUser"]):
    def active(self) -> "EagleUserQuerySet":
        return self.filter(is_active=True)

    def polled(self) -> "EagleUserQuerySet":
        """Active users whose readings rainlog fetches itself (push users send theirs)."""
        return self.active().exclude(connection_type=ConnectionType.PUSH)

    def failing(self) -> "EagleUserQuerySet":
        """Users whose last fetches failed, or who have an open incident."""
        return self.filter(Q(fetch_state__consecutive_failures__gt=0) | _has_open_incident())

    def healthy(self) -> "EagleUserQuerySet":
        return self.exclude(Q(fetch_state__consecutive_failures__gt=0) | _has_open_incident())

    def with_open_incident_flag(self) -> "EagleUserQuerySet":
        """Annotate `has_open_incident`, so lists show it without a query per row."""
        return self.annotate(has_open_incident=_has_open_incident())

    def upsert(
        self, cloud_id: str, changes: Mapping[str, Any], create: bool = True
    ) -> tuple["EagleUser", bool, list[str]]:
        """Create the user with `changes`, or apply them to the existing one.

        Returns (user, created, names of the fields that changed). Nothing is written when nothing
        changes, so applying the same changes twice is a no-op. Raises ValidationError, and
        DoesNotExist when the user is missing and `create` is false.
        """
        for attempt in range(2):
            try:
                with transaction.atomic():
                    return self._upsert(cloud_id, changes, create)
            except IntegrityError:
                # Another request created the same cloud_id between our read and our insert:
                # the second attempt finds it and updates it instead.
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _upsert(
        self, cloud_id: str, changes: Mapping[str, Any], create: bool
    ) -> tuple["EagleUser", bool, list[str]]:
        user = self.select_for_update().filter(cloud_id=cloud_id).first()
        created = user is None
        if user is None:
            if not create:
                raise self.model.DoesNotExist(f"no user with cloud_id {cloud_id!r}")
            user = self.model(cloud_id=cloud_id)
        changed = user.apply_changes(changes)
        if created or changed:
            # Uniqueness of cloud_id is the database's to enforce (see the retry in upsert).
            user.full_clean(validate_unique=False)
        if created:
            user.save()
            user.ensure_fetch_state()
        elif changed:
            user.save(update_fields=[*changed, "updated_at"])
        return user, created, changed


class EagleUser(models.Model):
    """An EAGLE account holder whose household is logged. Not an operator (see django.contrib.auth)."""

    # Kept in lower case: a hexadecimal id names one gateway whatever its case.
    cloud_id = CloudIdField(unique=True, validators=[cloud_id_validator])
    email = models.EmailField(blank=True)
    # The Rainforest cloud password, or the install code for a local gateway. Encrypted at rest.
    eagle_password = EncryptedTextField(
        blank=True, validators=[MaxLengthValidator(EAGLE_PASSWORD_MAX_LENGTH)]
    )
    connection_type = models.CharField(
        max_length=16, choices=ConnectionType.choices, default=ConnectionType.CLOUD
    )
    gateway_address = models.CharField(
        max_length=255,
        blank=True,
        validators=[validate_gateway_address],
        help_text="host[:port] or http(s) URL of a local gateway",
    )
    meter_mac = models.CharField(
        max_length=32,
        blank=True,
        validators=[validate_meter_mac],
        help_text="MacId of the meter, if known (0x and up to 16 hexadecimal digits)",
    )
    is_active = models.BooleanField(default=True)
    suspended_reason = models.TextField(blank=True)
    suspended_at = models.DateTimeField(null=True, blank=True)
    # Push users authenticate their uploads with a token; only its SHA-256 is kept.
    push_token_hash = models.CharField(max_length=64, blank=True, editable=False)
    push_token_issued_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = EagleUserQuerySet.as_manager()

    # What operators and imports may change; the rest is kept by rainlog itself.
    EDITABLE_FIELDS = (
        "email",
        "eagle_password",
        "connection_type",
        "gateway_address",
        "meter_mac",
        "is_active",
        "suspended_reason",
    )

    class Meta:
        verbose_name = "EAGLE user"
        ordering = ["cloud_id"]

    def __str__(self) -> str:
        return self.cloud_id

    def save(self, *args: Any, **kwargs: Any) -> None:
        suspended_since = getattr(self, "_stored_suspension", None)
        super().save(*args, **kwargs)
        if suspended_since is not None and self.is_active:
            # Resumed: the suspension becomes a pause, a stretch of time with no readings expected.
            Pause.objects.create(user=self, started_at=suspended_since, ended_at=timezone.now())
        self._stored_suspension = self._suspension()

    @classmethod
    def from_db(cls, db: Any, field_names: Any, values: Any) -> "EagleUser":
        user = super().from_db(db, field_names, values)
        user._stored_suspension = user._suspension()
        return user

    def _suspension(self) -> datetime | None:
        """When the current suspension began; None while active (or with those fields deferred)."""
        loaded = self.__dict__
        return None if loaded.get("is_active", True) else loaded.get("suspended_at")

    def clean(self) -> None:
        self.normalize_state()
        errors: dict[str, str] = {}
        if self.connection_type == ConnectionType.CLOUD and not self.email:
            errors["email"] = "The Rainforest cloud needs the account's email address."
        if self.connection_type in LOCAL_CONNECTION_TYPES and not self.gateway_address:
            errors["gateway_address"] = "A local gateway needs its address."
        if self.connection_type != ConnectionType.PUSH and not self.eagle_password:
            errors["eagle_password"] = (
                "A password (the install code for a local gateway) is needed to fetch readings."
            )
        if errors:
            raise ValidationError(errors)

    def normalize_state(self) -> None:
        """Keep the suspension fields consistent with is_active."""
        if self.is_active:
            self.suspended_reason = ""
            self.suspended_at = None
        else:
            self.suspended_reason = self.suspended_reason or DEFAULT_SUSPENDED_REASON
            self.suspended_at = self.suspended_at or timezone.now()

    def apply_changes(self, changes: Mapping[str, Any]) -> list[str]:
        """Set editable fields, unsaved; returns the names of the fields whose value changed."""
        unknown = set(changes) - set(self.EDITABLE_FIELDS)
        if unknown:
            raise ValueError(f"not editable: {', '.join(sorted(unknown))}")
        tracked = [*self.EDITABLE_FIELDS, "suspended_at"]
        before = {name: getattr(self, name) for name in tracked}
        for name, value in changes.items():
            setattr(self, name, value)
        if "is_active" in changes and changes["is_active"] != before["is_active"]:
            # A new suspension starts now, with the reason given or a default one.
            self.suspended_at = None
            if "suspended_reason" not in changes:
                self.suspended_reason = ""
        self.normalize_state()
        return [name for name in tracked if getattr(self, name) != before[name]]

    def suspend(self, reason: str) -> None:
        self.is_active = False
        self.suspended_reason = reason
        self.suspended_at = timezone.now()
        self.save(update_fields=["is_active", "suspended_reason", "suspended_at", "updated_at"])

    def activate(self) -> None:
        self.is_active = True
        self.normalize_state()
        self.save(update_fields=["is_active", "suspended_reason", "suspended_at", "updated_at"])

    def issue_push_token(self) -> str:
        """A new push token, returned in plain text this once; any earlier token stops working."""
        token = PUSH_TOKEN_PREFIX + secrets.token_urlsafe(32)
        self.push_token_hash = _push_token_digest(token)
        self.push_token_issued_at = timezone.now()
        self.save(update_fields=["push_token_hash", "push_token_issued_at", "updated_at"])
        return token

    def revoke_push_token(self) -> bool:
        """Make the push token stop working; False if there was none."""
        if not self.push_token_hash:
            return False
        self.push_token_hash = ""
        self.push_token_issued_at = None
        self.save(update_fields=["push_token_hash", "push_token_issued_at", "updated_at"])
        return True

    def check_push_token(self, token: str) -> bool:
        # Tokens are random and long, so a fast hash is enough; the comparison is constant-time.
        return bool(self.push_token_hash) and hmac.compare_digest(
            self.push_token_hash, _push_token_digest(token)
        )

    def ensure_fetch_state(self) -> models.Model:
        """The user's fetch metadata row (an ingestion FetchState), created if missing (every
        user has one). Reached through the reverse relation: this app does not import ingestion."""
        # Any: the model is looked up, not imported, so its manager is not known statically.
        state_model: Any = self._meta.get_field("fetch_state").related_model
        state, _ = state_model.objects.get_or_create(user=self)
        return state


class Pause(models.Model):
    """A past suspension of a user: polling was stopped on purpose, so no readings were expected.

    Written when a suspended user is resumed; the current suspension is the user's suspended_at.
    """

    user = models.ForeignKey(EagleUser, on_delete=models.CASCADE, related_name="pauses")
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField()

    class Meta:
        ordering = ["user", "started_at"]
        indexes = [models.Index(fields=["ended_at"])]

    def __str__(self) -> str:
        return (
            f"{self.user} paused {self.started_at:%Y-%m-%d %H:%M} to {self.ended_at:%Y-%m-%d %H:%M}"
        )
