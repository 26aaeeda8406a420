"""Removing everything rainlog holds for one cloud_id: local hour files, archived objects, manifest,
the latest readings in the shared cache.

Used when an operator deletes a user and asks for its data to go too. Every removal is logged, and
the report lists each file and key, so there is a record of what was removed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingestion import hourfiles, readings_store
from ingestion.archive.store import Archive, ArchiveError, open_archive
from ingestion.models import DatasetHour, HourFile
from ingestion.polling import latest
from users.models import EagleUser

logger = logging.getLogger(__name__)

# What the archive may raise when it cannot be reached or refuses a request.
STORAGE_ERRORS = (OSError, ArchiveError)
PURGING_REASON = "Being deleted together with its data."


@dataclass
class PurgeReport:
    cloud_id: str
    local_files: list[str] = field(default_factory=list)
    archive_keys: list[str] = field(default_factory=list)
    manifest_rows: int = 0
    # Hours of the Parquet dataset to be rewritten without these readings by its next export.
    parquet_hours: int = 0
    # Rows deleted from the SQL readings store's table.
    store_rows: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "cloud_id": self.cloud_id,
            "local_files": self.local_files,
            "archive_keys": self.archive_keys,
            "manifest_rows": self.manifest_rows,
            "parquet_hours": self.parquet_hours,
            "store_rows": self.store_rows,
        }

    def summary(self) -> str:
        return (
            f"{len(self.local_files)} local files, {len(self.archive_keys)} archived objects, "
            f"{self.manifest_rows} manifest rows, {self.parquet_hours} Parquet hours to rewrite, "
            f"{self.store_rows} rows of the readings table"
        )


class PurgeIncompleteError(Exception):
    """The archive or the disk refused a removal; `report` lists what was removed before that."""

    def __init__(self, report: PurgeReport, cause: Exception) -> None:
        super().__init__(f"purge of {report.cloud_id} stopped after {report.summary()}: {cause}")
        self.report = report
        self.cause = cause


def _belongs_to(path: Path, cloud_id: str) -> bool:
    name = path.name.removesuffix(hourfiles.SEALED_SUFFIX)
    try:
        return hourfiles.parse_file_name(name)[0] == cloud_id
    except ValueError:
        return False


def local_files_of(cloud_id: str) -> list[Path]:
    """The cloud_id's hour files, late parts and sealed markers on local disk.

    Found both through the manifest and by name under LOG_ROOT, so files the manifest does not
    know yet (the open hour) are found too. Only files whose name carries this cloud_id qualify.
    """
    cloud_id = hourfiles.checked_cloud_id(cloud_id)
    found: set[Path] = set(hourfiles.local_files_of(cloud_id))
    for local_path in HourFile.objects.filter(cloud_id=cloud_id).values_list(
        "local_path", flat=True
    ):
        if local_path:
            path = Path(local_path)
            found.update({path, hourfiles.sealed_marker(path)})
    return sorted(p for p in found if _belongs_to(p, cloud_id) and p.is_file())


def archive_keys_of(cloud_id: str, archive: Archive) -> list[str]:
    """The cloud_id's archived objects: every key under its prefix, plus manifest keys elsewhere
    (written under an earlier ARCHIVE_PREFIX) that still exist."""
    cloud_id = hourfiles.checked_cloud_id(cloud_id)
    keys = {key for key, _ in archive.keys(hourfiles.archive_prefix(cloud_id))}
    for key in HourFile.objects.filter(cloud_id=cloud_id).values_list("key", flat=True):
        if key and key not in keys and _belongs_to(Path(key), cloud_id) and archive.stat(key):
            keys.add(key)
    return sorted(keys)


def purge_user_data(cloud_id: str) -> PurgeReport:
    """Remove the cloud_id's local files, archived objects and manifest rows.

    Manifest rows go last, once the files and objects they describe are gone; if the disk or the
    archive fails midway, PurgeIncompleteError says what was removed; running it again finishes.
    """
    report = PurgeReport(cloud_id)
    archive = open_archive()
    try:
        for path in local_files_of(cloud_id):
            path.unlink(missing_ok=True)
            report.local_files.append(str(path))
            logger.info("purge %s: removed local file %s", cloud_id, path)
        for key in archive_keys_of(cloud_id, archive):
            archive.delete(key)
            report.archive_keys.append(key)
            logger.info("purge %s: removed archived object %s", cloud_id, key)
    except STORAGE_ERRORS as exc:
        logger.error("purge %s: stopped after %s: %s", cloud_id, report.summary(), exc)
        raise PurgeIncompleteError(report, exc) from exc
    rows = HourFile.objects.filter(cloud_id=cloud_id)
    # The Parquet dataset holds these readings too: its next export rewrites those hours.
    report.parquet_hours = DatasetHour.objects.mark_pending(
        set(rows.values_list("hour", flat=True))
    )
    report.store_rows = readings_store.forget(cloud_id)
    report.manifest_rows, _ = rows.delete()
    latest.forget([cloud_id])
    logger.info("purge %s: removed %s", cloud_id, report.summary())
    return report


def remove_user(user: EagleUser, purge: bool) -> PurgeReport | None:
    """Delete the user; with `purge`, its hour files, archived objects and manifest rows too.

    Without purge the data stays (manifest rows keep the cloud_id). With purge the user is
    suspended first, so the poller stops writing for it, and deleted only once its data is
    gone: a purge that fails (PurgeIncompleteError) leaves the user suspended, to be retried.
    """
    if not purge:
        user.delete()
        return None
    if user.is_active or user.suspended_reason != PURGING_REASON:
        user.suspend(PURGING_REASON)
    report = purge_user_data(user.cloud_id)
    user.delete()
    return report
