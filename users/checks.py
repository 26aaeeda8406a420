"""System checks: `manage.py check` (and every server start) names a bad encryption key at once,
instead of the first write of a password failing; `migrate` (and `check --database default`)
names users whose cloud_ids differ only in case and were not merged."""

from typing import Any

from cryptography.fernet import Fernet
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db import DatabaseError
from django.db.models import F
from django.db.models.functions import Lower


@register()
def check_field_encryption_keys(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    for position, key in enumerate(settings.FIELD_ENCRYPTION_KEYS, start=1):
        try:
            Fernet(key.encode())
        except ValueError:
            errors.append(
                Error(
                    f"Key {position} of FIELD_ENCRYPTION_KEYS is not a Fernet key "
                    "(32 url-safe base64-encoded bytes).",
                    hint="Generate one with `python -c 'from cryptography.fernet import Fernet; "
                    "print(Fernet.generate_key().decode())'`.",
                    id="users.E001",
                )
            )
    return errors


@register(Tags.database)
def check_cloud_id_case_variants(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """Users left with an upper-case cloud_id: case variants of a household that the data
    migration could not merge because more than one holds readings (ingestion/case_duplicates.py)."""
    if not databases:
        return []
    from users.models import EagleUser

    try:
        left = sorted(
            EagleUser.objects.annotate(lowered=Lower("cloud_id"))
            .exclude(cloud_id=F("lowered"))
            .values_list("cloud_id", flat=True)
        )
    except DatabaseError:
        # Not migrated yet: nothing to report.
        return []
    if not left:
        return []
    return [
        Warning(
            f"Users whose cloud_id differs only in case from another's hold readings and were not "
            f"merged: {', '.join(left[:20])}{' …' if len(left) > 20 else ''}.",
            hint="Each is suspended with the reason; merge its hour files into the lower-case "
            "user's by hand, then delete it.",
            id="users.W001",
        )
    ]
