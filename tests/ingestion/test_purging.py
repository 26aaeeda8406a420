"""Deleting a user with its data: local hour files, archived objects and manifest rows go; other
users' data and the data of a user deleted without purge stay."""

from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from pytest_django.fixtures import Settings

from ingestion import hourfiles
from ingestion.models import HourFile, HourFileState
from ingestion.purging import PURGING_REASON, PurgeIncompleteError, remove_user
from tests.factories import EagleUserFactory
from users.models import EagleUser

pytestmark = pytest.mark.django_db

SHIPPED_HOUR = datetime(2026, 3, 8, 9, tzinfo=UTC)
OPEN_HOUR = datetime(2026, 3, 8, 10, tzinfo=UTC)


def write_local(cloud_id: str, hour: datetime, part: int = 0, sealed: bool = False) -> Path:
    path = hourfiles.local_path(cloud_id, hour, part)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"record_type": "demand"}\n')
    if sealed:
        hourfiles.sealed_marker(path).touch()
    return path


def archive(cloud_id: str, hour: datetime, part: int = 0) -> str:
    key = hourfiles.archive_key(cloud_id, hour, part)
    storages["archive"].save(key, ContentFile(b'{"record_type": "demand"}\n'))
    return key


def data_of(cloud_id: str, user: EagleUser | None = None) -> dict:
    """Hours 09 (shipped, local copy gone, marker kept), 09 late part 1 (sealed, local and
    archived), 10 (open, no manifest row yet)."""
    shipped_marker = write_local(cloud_id, SHIPPED_HOUR, sealed=True)
    shipped_marker.unlink()
    late = write_local(cloud_id, SHIPPED_HOUR, part=1, sealed=True)
    open_file = write_local(cloud_id, OPEN_HOUR)
    keys = [archive(cloud_id, SHIPPED_HOUR), archive(cloud_id, SHIPPED_HOUR, part=1)]
    for part, state in ((0, HourFileState.VERIFIED), (1, HourFileState.VERIFIED)):
        HourFile.objects.create(
            cloud_id=cloud_id,
            user=user,
            hour=SHIPPED_HOUR,
            part=part,
            local_path=str(hourfiles.local_path(cloud_id, SHIPPED_HOUR, part)),
            key=hourfiles.archive_key(cloud_id, SHIPPED_HOUR, part),
            state=state,
        )
    return {
        "local": sorted(
            str(p)
            for p in (
                hourfiles.sealed_marker(shipped_marker),
                late,
                hourfiles.sealed_marker(late),
                open_file,
            )
        ),
        "keys": sorted(keys),
    }


def existing_keys(prefix: str) -> list[str]:
    storage = storages["archive"]
    found = []
    directories = [prefix]
    while directories:
        directory = directories.pop()
        try:
            subdirs, files = storage.listdir(directory)
        except FileNotFoundError:
            continue
        found += [f"{directory}/{name}" for name in files]
        directories += [f"{directory}/{name}" for name in subdirs]
    return sorted(found)


def test_purge_removes_the_users_files_objects_and_manifest_rows(s3_archive: str) -> None:
    user = EagleUserFactory(cloud_id="002738")
    removed = data_of("002738", user)
    kept = data_of("0027380", EagleUserFactory(cloud_id="0027380"))  # a longer id, same start

    report = remove_user(user, purge=True)

    assert report is not None
    assert sorted(report.local_files) == removed["local"]
    assert report.archive_keys == removed["keys"]
    assert report.manifest_rows == 2
    assert not EagleUser.objects.filter(cloud_id="002738").exists()
    assert not HourFile.objects.filter(cloud_id="002738").exists()
    assert existing_keys(f"{settings.ARCHIVE_PREFIX}/002738") == []
    assert not list(Path(settings.LOG_ROOT).glob("*/iseif-rainforest-002738-*"))
    # The other user's data is untouched.
    assert existing_keys(f"{settings.ARCHIVE_PREFIX}/0027380") == kept["keys"]
    assert all(Path(p).exists() for p in kept["local"])
    assert HourFile.objects.filter(cloud_id="0027380").count() == 2


def test_delete_without_purge_keeps_every_file_object_and_manifest_row() -> None:
    user = EagleUserFactory(cloud_id="002738")
    kept = data_of("002738", user)

    assert remove_user(user, purge=False) is None

    assert not EagleUser.objects.filter(cloud_id="002738").exists()
    assert all(Path(p).exists() for p in kept["local"])
    assert existing_keys(f"{settings.ARCHIVE_PREFIX}/002738") == kept["keys"]
    rows = HourFile.objects.filter(cloud_id="002738")
    assert rows.count() == 2 and not rows.filter(user__isnull=False).exists()


def test_purge_finds_archived_objects_under_an_earlier_prefix(settings: Settings) -> None:
    user = EagleUserFactory(cloud_id="002738")
    settings.ARCHIVE_PREFIX = "old-logs"
    old_key = archive("002738", SHIPPED_HOUR)
    HourFile.objects.create(
        cloud_id="002738",
        user=user,
        hour=SHIPPED_HOUR,
        local_path="",
        key=old_key,
        state=HourFileState.VERIFIED,
    )
    settings.ARCHIVE_PREFIX = "rainforest-logs"

    report = remove_user(user, purge=True)

    assert report is not None and report.archive_keys == [old_key]
    assert not storages["archive"].exists(old_key)


def test_a_purge_the_archive_refuses_keeps_the_user_suspended_and_can_be_retried(
    settings: Settings,
    s3_archive: str,
) -> None:
    user = EagleUserFactory(cloud_id="002738")
    data_of("002738", user)
    working = settings.STORAGES["archive"]
    settings.STORAGES = {
        **settings.STORAGES,
        "archive": {
            "BACKEND": "storages.backends.s3.S3Storage",
            # A loopback port nothing listens on: the archive is unreachable.
            "OPTIONS": {
                "bucket_name": s3_archive,
                "endpoint_url": "http://127.0.0.1:9",
                "region_name": "us-east-1",
            },
        },
    }

    with pytest.raises(PurgeIncompleteError) as raised:
        remove_user(user, purge=True)

    assert len(raised.value.report.local_files) == 4
    user.refresh_from_db()
    assert (user.is_active, user.suspended_reason) == (False, PURGING_REASON)
    assert HourFile.objects.filter(cloud_id="002738").count() == 2

    settings.STORAGES = {**settings.STORAGES, "archive": working}
    report = remove_user(user, purge=True)
    assert report is not None and len(report.archive_keys) == 2 and report.manifest_rows == 2
    assert not EagleUser.objects.filter(cloud_id="002738").exists()
