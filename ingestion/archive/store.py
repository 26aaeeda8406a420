"""The archive: one interface (`Archive`) for every object rainlog stores, local or S3.

Every archive read, write, listing and check goes through `Archive`, over the storage `storages["archive"]`:
- S3 (`S3Archive`): PUT with `If-None-Match: *` and the body's SHA-256 (`ChecksumSHA256`). S3
  checks that checksum against the body it receives and echoes it, so a successful PUT is a
  verified one; a HEAD (with checksum mode) is needed only when the PUT answers 412.
- Local file system (`FileSystemArchive`): the body is written to a temporary file beside the
  target, hashed as written, made durable, then hard-linked into place, which fails if the name
  exists; so both backends create only when absent and report what they stored.

Hour files are stored as they are (`application/x-ndjson`) or, with ARCHIVE_COMPRESS=gzip, as
deterministic gzip streams (`.jl.gz`, `application/gzip`, no Content-Encoding, so no client
decompresses them on the fly). `read_hour_file` gives the JSON lines back either way.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from botocore.exceptions import BotoCoreError, ClientError
from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.utils import timezone
from storages.backends.s3 import S3Storage

from ingestion import hourfiles

if TYPE_CHECKING:
    # pyarrow is loaded only by the readers that scan the archive in place: web and polling
    # processes reach the archive too and need none of it.
    import pyarrow.fs

CONTENT_TYPE_JSONL = "application/x-ndjson"
CONTENT_TYPE_GZIP = "application/gzip"
READ_CHUNK = 1 << 20


def content_type(compressed: bool) -> str:
    return CONTENT_TYPE_GZIP if compressed else CONTENT_TYPE_JSONL


# --- The interface -------------------------------------------------------------------------------


# What is stored: a small file's bytes, or a file object to stream a large one from.
Body = bytes | BinaryIO


class ArchiveError(Exception):
    """The archive could not be reached or did not do what was asked; worth retrying later."""


@dataclass(frozen=True, slots=True)
class StoredObject:
    size: int
    # Hex SHA-256 of the object as the archive reports it; None when it keeps none for it.
    sha256: str | None


class Archive(Protocol):
    def create(
        self, key: str, body: Body, size: int, sha256: str, content_type: str
    ) -> StoredObject | None:
        """Store `body` at `key` only if nothing is there. What the archive confirms it stored,
        or None when the key already exists (nothing was written)."""

    def stat(self, key: str) -> StoredObject | None:
        """Size and checksum of the object at `key`, or None if there is none."""

    def open(self, key: str) -> BinaryIO:
        """The object's bytes as stored; FileNotFoundError if there is none."""

    def open_sized(self, key: str) -> tuple[BinaryIO, int]:
        """The object's bytes as stored and its size, in one request; FileNotFoundError if there
        is none."""

    def presigned_url(self, key: str) -> tuple[str, datetime] | None:
        """A short-lived URL of the object and when it expires; None where the archive serves no
        URLs (the local file system)."""

    def keys(self, prefix: str) -> Iterator[tuple[str, int]]:
        """(key, size) of every object under `prefix`: an audit tool, never used to ship."""

    def delete(self, key: str) -> None:
        """Remove the object at `key`; nothing happens if there is none."""

    def arrow_filesystem(self) -> tuple[pyarrow.fs.FileSystem, str]:
        """A pyarrow file system over the archive and the path of the archive's root in it,
        for readers that scan objects in place (the Parquet dataset)."""


def _b64_to_hex(value: str) -> str:
    return base64.b64decode(value).hex()


def _hex_to_b64(value: str) -> str:
    return base64.b64encode(bytes.fromhex(value)).decode()


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


class S3Archive:
    """The archive on S3, through the boto3 client of django-storages' S3Storage."""

    def __init__(self, storage: S3Storage) -> None:
        # boto3 clients are thread-safe (resources are not): one client for every worker.
        self.client = storage.connection.meta.client
        self.bucket = storage.bucket_name
        self.endpoint_url: str | None = storage.endpoint_url or None
        self.storage = storage
        # Operator settings such as server-side encryption or storage class apply here too; the
        # content headers are ours (a gzip object must not carry Content-Encoding).
        self.object_parameters = {
            name: value
            for name, value in storage.get_object_parameters("").items()
            if name not in ("ContentType", "ContentEncoding")
        }

    def create(
        self, key: str, body: Body, size: int, sha256: str, content_type: str
    ) -> StoredObject | None:
        checksum = _hex_to_b64(sha256)
        try:
            reply = self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentLength=size,
                ContentType=content_type,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=checksum,
                IfNoneMatch="*",
                **self.object_parameters,
            )
        except ClientError as exc:
            if _status(exc) == 412:
                return None
            raise ArchiveError(f"PUT {key}: {exc}") from exc
        except BotoCoreError as exc:
            raise ArchiveError(f"PUT {key}: {exc}") from exc
        echoed = reply.get("ChecksumSHA256")
        return StoredObject(size, _b64_to_hex(echoed) if echoed else None)

    def stat(self, key: str) -> StoredObject | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as exc:
            if _status(exc) == 404:
                return None
            raise ArchiveError(f"HEAD {key}: {exc}") from exc
        except BotoCoreError as exc:
            raise ArchiveError(f"HEAD {key}: {exc}") from exc
        checksum = head.get("ChecksumSHA256")
        # A multipart object's checksum is of its parts ("…-N"), not of the whole object.
        whole = checksum and head.get("ChecksumType") != "COMPOSITE" and "-" not in checksum
        return StoredObject(int(head["ContentLength"]), _b64_to_hex(checksum) if whole else None)

    def open(self, key: str) -> BinaryIO:
        return self.open_sized(key)[0]

    def open_sized(self, key: str) -> tuple[BinaryIO, int]:
        try:
            reply = self.client.get_object(Bucket=self.bucket, Key=key)
            return reply["Body"], int(reply["ContentLength"])
        except ClientError as exc:
            if _status(exc) == 404:
                raise FileNotFoundError(key) from exc
            raise ArchiveError(f"GET {key}: {exc}") from exc
        except BotoCoreError as exc:
            raise ArchiveError(f"GET {key}: {exc}") from exc

    def keys(self, prefix: str) -> Iterator[tuple[str, int]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{prefix}/" if prefix else ""
        )
        try:
            for page in pages:
                for entry in page.get("Contents", ()):
                    yield entry["Key"], int(entry["Size"])
        except (ClientError, BotoCoreError) as exc:
            raise ArchiveError(f"LIST {prefix}: {exc}") from exc

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise ArchiveError(f"DELETE {key}: {exc}") from exc

    def presigned_url(self, key: str) -> tuple[str, datetime]:
        expires_in = int(self.storage.querystring_expire)
        url = self.storage.url(key, expire=expires_in)
        return url, timezone.now() + timedelta(seconds=expires_in)

    def arrow_filesystem(self) -> tuple[pyarrow.fs.FileSystem, str]:
        import pyarrow.fs

        # The credentials boto3 resolved (environment, profile or instance role), handed over as
        # they are, so pyarrow never looks for any of its own.
        credentials = self.client._request_signer._credentials.get_frozen_credentials()
        filesystem = pyarrow.fs.S3FileSystem(
            access_key=credentials.access_key,
            secret_key=credentials.secret_key,
            session_token=credentials.token,
            region=self.client.meta.region_name,
            endpoint_override=self.endpoint_url,
            scheme=self.endpoint_url.split("://", 1)[0] if self.endpoint_url else "https",
        )
        return filesystem, self.bucket


class FileSystemArchive:
    """The archive as a directory tree (FileSystemStorage), with the same create-if-absent rule."""

    TEMP_PREFIX = "."

    def __init__(self, storage: FileSystemStorage) -> None:
        self.storage = storage
        self.root = Path(storage.location)

    def _path(self, key: str) -> Path:
        return Path(self.storage.path(key))

    def create(
        self, key: str, body: Body, size: int, sha256: str, content_type: str
    ) -> StoredObject | None:
        target = self._path(key)
        try:
            if target.exists():
                return None
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, temp_name = tempfile.mkstemp(
                dir=target.parent, prefix=f"{self.TEMP_PREFIX}{target.name}.", suffix=".part"
            )
            try:
                digest = hashlib.sha256()
                written = 0
                chunks = (
                    [body] if isinstance(body, bytes) else iter(partial(body.read, READ_CHUNK), b"")
                )
                with os.fdopen(fd, "wb") as temp:
                    for chunk in chunks:
                        temp.write(chunk)
                        digest.update(chunk)
                        written += len(chunk)
                    temp.flush()
                    os.fsync(temp.fileno())
                try:
                    # A hard link, unlike a rename, fails when the target exists.
                    os.link(temp_name, target)
                except FileExistsError:
                    return None
            finally:
                os.unlink(temp_name)
            hourfiles.fsync_directory(target.parent)
        except OSError as exc:
            raise ArchiveError(f"write {key}: {exc}") from exc
        return StoredObject(written, digest.hexdigest())

    def stat(self, key: str) -> StoredObject | None:
        try:
            return StoredObject(self._path(key).stat().st_size, None)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ArchiveError(f"stat {key}: {exc}") from exc

    def open(self, key: str) -> BinaryIO:
        return open(self._path(key), "rb")

    def open_sized(self, key: str) -> tuple[BinaryIO, int]:
        handle = self.open(key)
        return handle, os.fstat(handle.fileno()).st_size

    def presigned_url(self, key: str) -> None:
        return None

    def keys(self, prefix: str) -> Iterator[tuple[str, int]]:
        top = self._path(prefix) if prefix else self.root
        for directory, _, names in os.walk(top):
            for name in sorted(names):
                if name.startswith(self.TEMP_PREFIX):
                    continue  # a create interrupted by a crash, never linked into place
                path = Path(directory) / name
                yield path.relative_to(self.root).as_posix(), path.stat().st_size

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise ArchiveError(f"delete {key}: {exc}") from exc

    def arrow_filesystem(self) -> tuple[pyarrow.fs.FileSystem, str]:
        import pyarrow.fs

        return pyarrow.fs.LocalFileSystem(), self.root.as_posix()


def open_archive(storage: Storage | None = None) -> Archive:
    storage = storage or storages["archive"]
    if isinstance(storage, S3Storage):
        return S3Archive(storage)
    if isinstance(storage, FileSystemStorage):
        return FileSystemArchive(storage)
    raise ImproperlyConfigured(
        f"STORAGES['archive'] is a {type(storage).__name__}: the archive needs S3Storage "
        "or FileSystemStorage."
    )


def _sha256_of_stream(stream: BinaryIO) -> str:
    digest = hashlib.sha256()
    with stream:
        for chunk in iter(partial(stream.read, READ_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def stored_sha256(archive: Archive, key: str, stored: StoredObject) -> str:
    """The object's SHA-256: as the archive reports it, else by reading it back."""
    if stored.sha256 is not None:
        return stored.sha256
    try:
        return _sha256_of_stream(archive.open(key))
    except (OSError, BotoCoreError) as exc:
        raise ArchiveError(f"read {key}: {exc}") from exc


def sha256_of_file(path: Path) -> str:
    return _sha256_of_stream(open(path, "rb"))


def read_hour_file(archive: Archive, key: str, compressed: bool) -> bytes:
    """The JSON lines of an archived hour file, decompressed if it is stored gzip; ArchiveError if
    there is no such object or it cannot be read."""
    try:
        with archive.open(key) as stream:
            data = stream.read()
        return gzip.decompress(data) if compressed else data
    except (OSError, BotoCoreError, ClientError, EOFError, zlib.error) as exc:
        raise ArchiveError(f"read {key}: {exc}") from exc
