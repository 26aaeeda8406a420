from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from users.crypto import EncryptedTextField

CLOUD_ID_MAX_LENGTH = 32
cloud_id_validator = RegexValidator(
    regex=rf"^[0-9A-Fa-f]{{1,{CLOUD_ID_MAX_LENGTH}}}\Z",
    message=f"A cloud_id is 1 to {CLOUD_ID_MAX_LENGTH} hexadecimal digits (leading zeros are kept).",
    code="invalid_cloud_id",
)


class ConnectionType(models.TextChoices):
    CLOUD = "cloud", "Rainforest cloud"
    EAGLE200 = "eagle200", "Local EAGLE-200"
    LEGACY = "legacy", "Legacy local EAGLE"
    PUSH = "push", "Push (uploader)"


class EagleUserQuerySet(models.QuerySet["EagleUser"]):
    def active(self) -> "EagleUserQuerySet":
        return self.filter(is_active=True)

    def polled(self) -> "EagleUserQuerySet":
        """Active users whose readings rainlog fetches itself (push users send theirs)."""
        return self.active().exclude(connection_type=ConnectionType.PUSH)


class EagleUser(models.Model):
    """An EAGLE account holder whose household is logged. Not an operator (see django.contrib.auth)."""

    cloud_id = models.CharField(
        max_length=CLOUD_ID_MAX_LENGTH, unique=True, validators=[cloud_id_validator]
    )
    email = models.EmailField(blank=True)
    # The Rainforest cloud password, or the install code for a local gateway. Encrypted at rest.
    eagle_password = EncryptedTextField(blank=True)
    connection_type = models.CharField(
        max_length=16, choices=ConnectionType.choices, default=ConnectionType.CLOUD
    )
    gateway_address = models.CharField(
        max_length=255, blank=True, help_text="host[:port] or URL of a local gateway"
    )
    meter_mac = models.CharField(
        max_length=32, blank=True, help_text="MacId of the meter, if known"
    )
    is_active = models.BooleanField(default=True)
    suspended_reason = models.TextField(blank=True)
    suspended_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = EagleUserQuerySet.as_manager()

    class Meta:
        verbose_name = "EAGLE user"
        ordering = ["cloud_id"]

    def __str__(self) -> str:
        return self.cloud_id

    def suspend(self, reason: str) -> None:
        self.is_active = False
        self.suspended_reason = reason
        self.suspended_at = timezone.now()
        self.save(update_fields=["is_active", "suspended_reason", "suspended_at", "updated_at"])

    def activate(self) -> None:
        self.is_active = True
        self.suspended_reason = ""
        self.suspended_at = None
        self.save(update_fields=["is_active", "suspended_reason", "suspended_at", "updated_at"])
