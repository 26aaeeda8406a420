"""Trying a user's credentials against its EAGLE, for operators (check_user, the admin action)."""

from __future__ import annotations

from dataclasses import dataclass

from ingestion.eagle.client import fetch_now
from ingestion.records import FetchFailure, iso_utc
from ingestion.redaction import redact
from users.models import ConnectionType, EagleUser


@dataclass(frozen=True)
class CredentialCheck:
    cloud_id: str
    ok: bool
    # A FailureClass value when the check failed, "" otherwise.
    failure_class: str
    summary: str

    def describe(self) -> str:
        verdict = "OK" if self.ok else self.failure_class or "not checked"
        return f"{self.cloud_id}: {verdict}: {self.summary}"


def check_credentials(user: EagleUser) -> CredentialCheck:
    """Fetch one reading now and classify the outcome. Network I/O: never call inside atomic()."""
    if user.connection_type == ConnectionType.PUSH:
        return CredentialCheck(
            user.cloud_id, False, "", "a push gateway sends its readings; there is nothing to poll"
        )
    result = fetch_now(user)
    if isinstance(result, FetchFailure):
        message = redact(result.message, [user.eagle_password])
        return CredentialCheck(user.cloud_id, False, str(result.failure_class), message)
    values = ", ".join(f"{name} {value}" for name, value in result.values.items())
    return CredentialCheck(
        user.cloud_id,
        True,
        "",
        f"credentials accepted; {result.record_type} read at {iso_utc(result.meter_time)}"
        + (f": {values}" if values else ""),
    )
