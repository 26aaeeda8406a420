"""The latest reading of a user: from Redis, the cache every process shares, where REDIS_URL is
set; else from the tail of its newest local hour file.

Web processes read it here without loading the polling engine (uvloop, leases, the tick loop).

The poller hands every batch it writes to `remember_written`, which puts the newest reading of each
user and record type in Redis (one pipelined round trip per batch), with the hour file it went to.
`cached_record` serves it only while that file is still on local disk, so it is what the files
would give: once the rotation ships and removes the file, or a purge deletes it, the files are read
again. Without Redis (the database cache of the embedded defaults could not take a write per user
every few seconds), and whenever Redis cannot be reached, everything comes from the files; polling
never fails on Redis, and waits at most REDIS_TIMEOUT_SECONDS for it every RETRY_SECONDS.

A deleted user's cloud_id is marked in Redis (until a user takes that cloud_id again), so a
reading the poller writes in the moment before it notices the deletion is never served. Pushed
readings drop the entry: they come from the files, since a push may resend older readings.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import redis
from django.conf import settings
from django.db.models.signals import post_delete, post_save
from redis import RedisError

from ingestion import hourfiles
from ingestion.eagle.record_types import DEMAND, RECORD_TYPES
from ingestion.hourfiles import TAIL_BYTES, AppendResult, read_tail_records
from ingestion.records import Reading, parse_line

logger = logging.getLogger(__name__)

# The last few lines of a file nearly always hold the newest demand reading.
LATEST_TAIL_BYTES = 4 * 1024
# A cached reading lives this long after it was written. The poller rewrites a polled user's entry
# with each new reading; an entry it stopped rewriting (a user suspended or backing off, a meter
# stalled) is dropped soon after, so a write missed during a Redis outage is not served for long.
CACHE_SECONDS = 300
# After a failed call, Redis is left alone this long: a Redis that is down or unreachable
# costs the poller and the web processes one timeout per this period, not one per call.
RETRY_SECONDS = 30.0

T = TypeVar("T")


def latest_record(
    cloud_id: str, record_type: str = DEMAND, root: Path | None = None
) -> dict[str, Any] | None:
    """The newest record of a type in the user's newest local hour file (or its late parts)."""
    cloud_id = hourfiles.checked_cloud_id(cloud_id)
    for hour, _ in reversed(hourfiles.hour_dirs(root)):
        main = hourfiles.local_path(cloud_id, hour, root=root)
        if main.exists() and not hourfiles.sealed_marker(main).exists():
            # Late parts exist only beside a sealed or shipped hour: no need to list the
            # directory, which holds a file per user.
            names = [main]
        else:
            names = hourfiles.parts_on_disk(cloud_id, hour, root)
        records = [
            record for name in names if (record := _newest_in_tail(name, record_type)) is not None
        ]
        if records:
            return max(records, key=lambda record: record["meter_timestamp"])
    return None


def _newest_in_tail(path: Path, record_type: str) -> dict[str, Any] | None:
    # The last few lines nearly always hold the newest demand reading; a rarer record type may
    # need the longer tail.
    for max_bytes in (LATEST_TAIL_BYTES, TAIL_BYTES):
        records = [
            record
            for record in read_tail_records(path, max_bytes)
            if record.get("record_type") == record_type
            and isinstance(record.get("meter_timestamp"), int)
        ]
        if records:
            return max(records, key=lambda record: record["meter_timestamp"])
    return None


# --- The shared cache ----------------------------------------------------------------------------
# Straight through redis-py rather than Django's cache API, which builds a client for each call and
# pickles values: that costs a dashboard's request more than the rest of the view.

PREFIX = "rainlog:latest:"
# Every entry of a batch in one command: redis-py spends several times more building a command
# than the rest of this module spends on a reading, so one SET per reading would cost the poller a
# tenth more CPU per user-tick.
STORE_SCRIPT = """
local seconds = ARGV[#ARGV]
for i, key in ipairs(KEYS) do
    redis.call("SET", key, ARGV[i], "EX", seconds)
end
"""
_clients: dict[str, tuple[redis.Redis, Any]] = {}


def _connected() -> tuple[redis.Redis, Any]:
    """This process's client of REDIS_URL (thread-safe, and it reconnects after a fork), with
    STORE_SCRIPT registered on it."""
    url = settings.REDIS_URL
    found = _clients.get(url)
    if found is None:
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=settings.REDIS_TIMEOUT_SECONDS,
            socket_timeout=settings.REDIS_TIMEOUT_SECONDS,
        )
        found = _clients[url] = (client, client.register_script(STORE_SCRIPT))
    return found


def _key(cloud_id: str, record_type: str) -> str:
    return f"{PREFIX}{cloud_id}:{record_type}"


def _deleted_key(cloud_id: str) -> str:
    return f"{PREFIX}{cloud_id}:deleted"


class _Reachability:
    """Whether Redis answered lately; an outage is logged once, and so is its end."""

    def __init__(self) -> None:
        self.retry_at = 0.0
        self.down = False

    def call(self, operation: Callable[[redis.Redis, Any], T], always: bool = False) -> T | None:
        """`operation(client, store script)`, or None without REDIS_URL, if it failed, or if Redis failed less
        than RETRY_SECONDS ago (`always`: try anyway)."""
        if not settings.REDIS_URL or (not always and time.monotonic() < self.retry_at):
            return None
        try:
            result = operation(*_connected())
        except (RedisError, OSError) as exc:
            self.retry_at = time.monotonic() + RETRY_SECONDS
            if not self.down:
                self.down = True
                logger.error(
                    "Redis cannot be reached (%s): latest readings are read from the hour files "
                    "until it answers again",
                    exc,
                )
            return None
        if self.down:
            self.down = False
            logger.warning("Redis answers again: latest readings are cached again")
        return result


shared_cache = _Reachability()


def remember_written(readings: Sequence[Reading], result: AppendResult) -> None:
    """Cache the newest reading of each user and record type among `readings` that `result` (of
    HourFileWriter.append) says were written. For the poller, whose readings of a user and type
    only get newer."""
    if not settings.REDIS_URL or not result.written:
        return
    # Each file's path under LOG_ROOT (its hour directory and name), by user and hour (unix
    # seconds, so that a reading's is found without building a datetime).
    files = {
        (written.cloud_id, int(written.hour.timestamp())): (
            f"{written.path.parent.name}/{written.path.name}\n".encode()
        )
        for written in result.written
    }
    lines = result.lines
    newest: dict[tuple[str, str], Reading] = {}
    for reading in readings:
        key = (reading.cloud_id, reading.record_type)
        kept = newest.get(key)
        if (kept is None or reading.meter_timestamp > kept.meter_timestamp) and id(
            reading
        ) in lines:
            newest[key] = reading

    keys, entries = [], []
    for (cloud_id, record_type), reading in newest.items():
        timestamp = reading.meter_timestamp
        keys.append(_key(cloud_id, record_type))
        # The file's path, then the line as the file holds it.
        entries.append(files[(cloud_id, timestamp - timestamp % 3600)] + lines[id(reading)])
    shared_cache.call(lambda client, store: store(keys, [*entries, CACHE_SECONDS]))


def cached_record(cloud_id: str, record_type: str = DEMAND) -> dict[str, Any] | None:
    """The user's latest reading of a type from Redis, exactly as `latest_record` reads it from
    its file, while that file is on local disk; None when the files must say (no entry, the file
    gone, a deleted user, no Redis or none reachable)."""
    found = shared_cache.call(
        lambda client, _: client.mget(_key(cloud_id, record_type), _deleted_key(cloud_id))
    )
    if not found:
        return None
    entry, deleted = found
    if not isinstance(entry, bytes) or deleted is not None:
        return None
    relative_path, _, line = entry.partition(b"\n")
    if not os.path.exists(os.path.join(settings.LOG_ROOT, relative_path.decode())):
        return None
    return parse_line(line)


def forget(cloud_ids: Iterable[str]) -> None:
    """Drop the cached readings of these users (their files changed under the cache: a push,
    a purge)."""
    keys = [_key(cloud_id, name) for cloud_id in cloud_ids for name in RECORD_TYPES]
    if keys:
        shared_cache.call(lambda client, _: client.delete(*keys), always=True)


def forget_deleted(cloud_id: str) -> None:
    """A user was deleted: its cached readings are dropped and never served again, whatever
    the poller writes before it notices, until a user takes the cloud_id again."""
    shared_cache.call(lambda client, _: client.set(_deleted_key(cloud_id), b"1"), always=True)
    forget([cloud_id])


def _user_deleted(sender: type, instance: Any, **kwargs: Any) -> None:
    forget_deleted(instance.cloud_id)


def _user_saved(sender: type, instance: Any, created: bool, **kwargs: Any) -> None:
    if created:
        # A user took the cloud_id (perhaps again): its readings may be cached.
        key = _deleted_key(instance.cloud_id)
        shared_cache.call(lambda client, _: client.delete(key), always=True)


def connect_user_signals() -> None:
    """Follow users' creation and deletion (from IngestionConfig.ready)."""
    from users.models import EagleUser

    post_delete.connect(_user_deleted, sender=EagleUser, dispatch_uid="latest-user-deleted")
    post_save.connect(_user_saved, sender=EagleUser, dispatch_uid="latest-user-saved")
