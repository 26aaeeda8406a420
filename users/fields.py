"""The names of a user's fields, the same in the API, import/export, the admin and the docs
(docs/api.md, "A user's fields"): the model's own (`email`, `eagle_password`, ...). The seed's
names for two of them stay accepted wherever a user is read in (API bodies, imported lines)."""

from collections.abc import Mapping
from typing import Any

SEED_NAMES = {"user_email": "email", "user_pw": "eagle_password"}


class FieldConflictError(ValueError):
    """A record giving one field under both its names, with two different values."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def with_seed_names_replaced(record: Mapping[str, Any]) -> dict[str, Any]:
    """`record` with the seed's field names turned into rainlog's."""
    renamed = dict(record.items())
    for seed_name, name in SEED_NAMES.items():
        if seed_name not in renamed:
            continue
        value = renamed.pop(seed_name)
        if name in renamed and renamed[name] != value:
            raise FieldConflictError(seed_name, f"conflicts with {name}: send one of them.")
        renamed[name] = value
    return renamed
