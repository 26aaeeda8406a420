"""One gateway, one user: folding cloud_ids that differ only in case into their lower-case form.

Before cloud_ids were kept in lower case, `00AA02` and `00aa02` could both be created (by the API,
an import or the admin), both polled, each with its own hour files. `fold_case_variants` (run once
by a data migration) gives every such household its lower-case id, without losing a reading:

- where at most one variant holds data (manifest rows or local hour files), that data takes the
  lower-case id: local files and sealed markers are renamed, manifest rows follow (an object
  already verified in the archive keeps its key, which the manifest records, so retrieval still
  finds it; files not archived yet will be shipped under the lower-case key). One user remains,
  the one whose gateway produced the data if there is one; the other variants held nothing and
  are deleted;
- where two or more variants hold data, nothing is merged: the variants other than the kept one
  are suspended with a reason naming the others, and the fold reports them, so an operator merges
  them by hand. Nothing is deleted or renamed for such a household.

It works on the models it is given, so the migration can pass its historical models.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Lower
from django.utils import timezone

from ingestion import hourfiles

NAME_PREFIX = hourfiles.NAME_PREFIX
VERIFIED = "verified"


@dataclass
class FoldReport:
    """What a fold did, one line a household."""

    renamed: list[str] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [*self.renamed, *(f"NOT MERGED: {line}" for line in self.unresolved)]


def _local_files(root: Path) -> dict[str, list[Path]]:
    """Hour files and sealed markers under LOG_ROOT, by the cloud_id in their name."""
    found: dict[str, list[Path]] = defaultdict(list)
    for directory in root.glob("*"):
        if not directory.is_dir():
            continue
        for path in directory.glob(f"{NAME_PREFIX}*"):
            try:
                cloud_id, _, _ = hourfiles.parse_file_name(
                    path.name.removesuffix(hourfiles.SEALED_SUFFIX)
                )
            except ValueError:
                continue
            found[cloud_id].append(path)
    return found


def fold_case_variants(
    user_model: Any, hour_file_model: Any, log: Callable[[str], None] = print
) -> FoldReport:
    """Give every household with an upper-case cloud_id its lower-case one (see the module)."""
    report = FoldReport()
    local = _local_files(Path(settings.LOG_ROOT))
    users: dict[str, list[Any]] = defaultdict(list)
    for user in user_model.objects.order_by("pk"):
        users[user.cloud_id.lower()].append(user)
    # Compared with F(), not a value: a lower-casing column would lower-case the value too.
    upper_rows: dict[str, list[int]] = defaultdict(list)
    for pk, cloud_id in (
        hour_file_model.objects.annotate(lowered=Lower("cloud_id"))
        .exclude(cloud_id=F("lowered"))
        .values_list("pk", "cloud_id")
    ):
        upper_rows[cloud_id].append(pk)
    upper_ids = {
        cloud_id
        for cloud_id in (*local, *upper_rows, *(u.cloud_id for g in users.values() for u in g))
        if cloud_id != cloud_id.lower()
    }
    for lower in sorted({cloud_id.lower() for cloud_id in upper_ids}):
        lower_holds = lower in local or hour_file_model.objects.filter(cloud_id=lower).exists()
        holders = sorted(
            [i for i in upper_ids if i.lower() == lower and (i in local or i in upper_rows)]
            + [lower] * lower_holds
        )
        with transaction.atomic():
            if len(holders) > 1:
                line = _suspend_variants(user_model, lower, users[lower], holders)
                report.unresolved.append(line)
            else:
                line = _rename(
                    user_model, hour_file_model, lower, users[lower], holders, local, upper_rows
                )
                report.renamed.append(line)
        log(line)
    for line in report.unresolved:
        log(f"NOT MERGED: {line}")
    return report


def _keeper(group: list[Any], lower: str, holder: str | None) -> Any | None:
    """The user that stays: the one whose id holds the data, else the lower-case one, else the
    oldest."""
    for wanted in (holder, lower):
        for user in group:
            if user.cloud_id == wanted:
                return user
    return group[0] if group else None


def _rename(
    user_model: Any,
    hour_file_model: Any,
    lower: str,
    group: list[Any],
    holders: list[str],
    local: dict[str, list[Path]],
    upper_rows: dict[str, list[int]],
) -> str:
    holder = holders[0] if holders else None
    keeper = _keeper(group, lower, holder)
    dropped = [user for user in group if user is not keeper]
    if dropped:
        user_model.objects.filter(pk__in=[user.pk for user in dropped]).delete()
    moved_files = moved_rows = 0
    if holder is not None and holder != lower:
        moved_files = _rename_files(local.get(holder, []), holder, lower)
        moved_rows = _rename_rows(hour_file_model, upper_rows.get(holder, []), holder, lower)
    if keeper is not None and keeper.cloud_id != lower:
        user_model.objects.filter(pk=keeper.pk).update(cloud_id=lower, updated_at=timezone.now())
    names = ", ".join(sorted(u.cloud_id for u in dropped))
    return (
        f"{lower}: user {keeper.cloud_id if keeper else '(none)'} kept as {lower}"
        + (f", data-less variants deleted ({names})" if dropped else "")
        + (f"; {moved_files} local files and {moved_rows} manifest rows of {holder} renamed")
        * bool(moved_files or moved_rows)
    )


def _rename_files(files: list[Path], old: str, new: str) -> int:
    for path in files:
        name = NAME_PREFIX + new + path.name.removeprefix(NAME_PREFIX + old)
        os.replace(path, path.with_name(name))
    return len(files)


def _rename_rows(hour_file_model: Any, pks: list[int], old: str, new: str) -> int:
    rows = list(hour_file_model.objects.filter(pk__in=pks))
    for row in rows:
        row.cloud_id = new
        if row.local_path:
            path = Path(row.local_path)
            row.local_path = str(
                path.with_name(NAME_PREFIX + new + path.name.removeprefix(NAME_PREFIX + old))
            )
        if row.state != VERIFIED:
            row.key = hourfiles.archive_key(new, row.hour, row.part, row.compressed)
    hour_file_model.objects.bulk_update(rows, ["cloud_id", "local_path", "key"])
    return len(rows)


def _suspend_variants(user_model: Any, lower: str, group: list[Any], holders: list[str]) -> str:
    keeper = _keeper(group, lower, None)
    others = [user for user in group if user is not keeper]
    reason = (
        f"Case variant of {lower}: {', '.join(holders)} all hold readings, so they were not "
        "merged. Merge them by hand and delete this one."
    )
    user_model.objects.filter(pk__in=[user.pk for user in others]).update(
        is_active=False, suspended_reason=reason, suspended_at=timezone.now()
    )
    kept = keeper.cloud_id if keeper else "(no user)"
    return f"{lower}: {', '.join(holders)} each hold readings; {kept} stays active" + (
        f", {', '.join(u.cloud_id for u in others)} suspended" if others else ""
    )
