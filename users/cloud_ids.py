"""The cloud_id: the hexadecimal id of a household's EAGLE gateway, and the name of its user, its
hour files and its archive keys.

A hexadecimal id names one gateway whatever its case, so rainlog keeps and compares cloud_ids in
lower case: every door (API paths and bodies, imports, pushes, the admin, commands) accepts any
case, and `CloudIdField` lower-cases what it stores and what it is compared with, so
`EagleUser.objects.filter(cloud_id="00AA02")` finds the user `00aa02`. Leading zeros are kept.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.validators import RegexValidator
from django.db import models

CLOUD_ID_MAX_LENGTH = 32
# What a door accepts (any case), for URL routes and forms; no anchors.
CLOUD_ID_CHARACTERS = rf"[0-9A-Fa-f]{{1,{CLOUD_ID_MAX_LENGTH}}}"
# A cloud_id as rainlog keeps it, in records and file names (JSON Schema syntax).
NORMALISED_CLOUD_ID_PATTERN = rf"^[0-9a-f]{{1,{CLOUD_ID_MAX_LENGTH}}}$"
CLOUD_ID_MESSAGE = (
    f"A cloud_id is 1 to {CLOUD_ID_MAX_LENGTH} hexadecimal digits (leading zeros are kept)."
)

_CLOUD_ID = re.compile(rf"^{CLOUD_ID_CHARACTERS}\Z")

cloud_id_validator = RegexValidator(
    regex=rf"^{CLOUD_ID_CHARACTERS}\Z", message=CLOUD_ID_MESSAGE, code="invalid_cloud_id"
)


def normalise_cloud_id(cloud_id: str) -> str:
    """The cloud_id as rainlog keeps it (lower case); ValueError if it is not one. It becomes part
    of file paths and archive keys, so nothing else gets through."""
    if not isinstance(cloud_id, str) or not _CLOUD_ID.match(cloud_id):
        raise ValueError(f"invalid cloud_id {str(cloud_id)[:40]!r}: {CLOUD_ID_MESSAGE}")
    return cloud_id.lower()


def lower_if_text(value: Any) -> Any:
    """A value on its way to a cloud_id column: text in lower case, anything else unchanged (so
    that validation still sees and names it)."""
    return value.lower() if isinstance(value, str) else value


class CloudIdField(models.CharField):
    """A cloud_id column: stored in lower case and compared in lower case, whatever case a caller
    hands it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", CLOUD_ID_MAX_LENGTH)
        super().__init__(*args, **kwargs)

    def to_python(self, value: Any) -> Any:
        return lower_if_text(super().to_python(value))

    def get_prep_value(self, value: Any) -> Any:
        return lower_if_text(super().get_prep_value(value))

    def pre_save(self, model_instance: models.Model, add: bool) -> Any:
        value = lower_if_text(getattr(model_instance, self.attname))
        setattr(model_instance, self.attname, value)
        return value
