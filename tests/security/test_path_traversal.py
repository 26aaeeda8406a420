"""Path traversal through cloud_ids and file names is refused, and nothing outside LOG_ROOT and
the archive is read or written on the way.

An audit hook (sys.addaudithook) records every file the process opens, lists, creates, renames or
removes while a hostile request is served; the test then checks that none of it lies outside
LOG_ROOT and the archive in the test's own directory, or under /etc. Decoy files beside LOG_ROOT,
named like hour files, must come out untouched.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.test import Client

from ingestion import hourfiles
from ingestion.eagle.decoders import decode_payload
from ingestion.hourfiles import HourFileWriter
from ingestion.models import HourFile, HourFileState
from ingestion.records import FetchFailure, Reading
from tests.factories import EagleUserFactory, OperatorFactory
from tests.hour_files import demand_readings, ship_hour, write
from users.jsonlines import Outcome, import_users
from users.models import ConnectionType, EagleUser

pytestmark = pytest.mark.django_db

NINE = datetime(2026, 3, 8, 9, tzinfo=UTC)
PUSH_CLOUD_ID = "00a1b2"
DEMAND_REPLY = (
    "<InstantaneousDemand><DeviceMacId>0xd8d5b9000000f8bc</DeviceMacId>"
    "<MeterMacId>0x00135003005dba2b</MeterMacId><TimeStamp>0x2f0a1b2c</TimeStamp>"
    "<Demand>0x0004d2</Demand><Multiplier>0x00000001</Multiplier>"
    "<Divisor>0x000003e8</Divisor></InstantaneousDemand>"
)
# cloud_ids that try to leave LOG_ROOT or the archive prefix, as they appear in a URL.
HOSTILE_IN_URLS = [
    "..",
    "%2e%2e",
    "..%2f..%2fdecoy",
    "%2e%2e%2f%2e%2e%2fdecoy",
    "..%5c..%5cdecoy",
    "%2fetc%2fpasswd",
    "00a1b2%00",
    "00a1b2%00..%2f..%2fdecoy",
    "%EF%BC%8E%EF%BC%8E%EF%BC%8Fdecoy",  # fullwidth ．．／
    "%E2%80%A4%E2%80%A4%2Fdecoy",  # one dot leaders ․․/
    "%EF%BC%90%EF%BC%90a1b2",  # fullwidth digits ００a1b2
    "%C0%AE%C0%AE%2F",  # overlong UTF-8 dots
]
# The same, as they arrive in a command line, a file or a form.
HOSTILE_CLOUD_IDS = [
    "..",
    "../../decoy",
    "..\\..\\decoy",
    "/etc/passwd",
    "00a1b2/../../decoy",
    "00a1b2\x00../../decoy",
    "．．／decoy",
    "․․/decoy",
    "００a1b2",
    "00a1b2\n",
    "",
]
WATCHED_EVENTS = {
    "open",
    "os.listdir",
    "os.scandir",
    "os.mkdir",
    "os.rename",
    "os.replace",
    "os.remove",
    "os.rmdir",
    "os.truncate",
    "shutil.rmtree",
    "glob.glob",
}


class FileAccess:
    """Files touched by this process while `watching()`; one audit hook for the whole session."""

    def __init__(self) -> None:
        self.active = False
        self.touched: list[tuple[str, str]] = []
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.active or event not in WATCHED_EVENTS or not args:
            return
        target = args[0]
        if isinstance(target, int):  # an open file descriptor, already checked when opened
            return
        if isinstance(target, bytes | os.PathLike):
            target = os.fsdecode(target)
        if isinstance(target, str):
            self.touched.append((event, target))

    @contextmanager
    def watching(self) -> Iterator[list[tuple[str, str]]]:
        self.touched = []
        self.active = True
        try:
            yield self.touched
        finally:
            self.active = False


FILE_ACCESS = FileAccess()


def outside(touched: list[tuple[str, str]], sandbox: Path) -> list[tuple[str, str]]:
    """What was touched in the test's directory outside LOG_ROOT and the archive, or under /etc."""
    allowed = [Path(settings.LOG_ROOT).resolve(), Path(settings.ARCHIVE_ROOT).resolve()]
    found = []
    for event, name in touched:
        path = Path(os.path.abspath(name)).resolve()
        if path.is_relative_to("/etc"):
            found.append((event, name))
        elif path.is_relative_to(sandbox) and not any(path.is_relative_to(a) for a in allowed):
            found.append((event, name))
    return found


def tree(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """The test's directory, with decoys beside LOG_ROOT and the archive that look like data."""
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    (decoy / f"iseif-rainforest-{PUSH_CLOUD_ID}-2026-03-08-09.jl").write_text('{"decoy": 1}\n')
    (decoy / "passwd").write_text("root:x:0:0\n")
    return tmp_path.resolve()


@pytest.fixture
def fleet(sandbox: Path) -> EagleUser:
    """A polled user with a local hour and an archived one, and a push user with a token."""
    user = EagleUserFactory(cloud_id="0cafe0")
    write(demand_readings(user.cloud_id, NINE, 20))
    ship_hour(user.cloud_id, NINE)
    write(demand_readings(user.cloud_id, NINE.replace(hour=10), 20))
    EagleUserFactory(cloud_id=PUSH_CLOUD_ID, connection_type=ConnectionType.PUSH)
    return user


@pytest.fixture
def staff() -> Client:
    client = Client()
    client.force_login(OperatorFactory(is_superuser=True))
    return client


def test_cloud_ids_that_leave_their_directory_are_refused_by_every_route_that_takes_one(
    fleet: EagleUser, staff: Client, sandbox: Path
) -> None:
    before = tree(sandbox)
    push = Client(
        HTTP_X_PUSH_TOKEN=EagleUser.objects.get(cloud_id=PUSH_CLOUD_ID).issue_push_token()
    )
    refused, searched = [], []
    for hostile in HOSTILE_IN_URLS:
        for method in ("get", "post", "put", "patch", "delete"):
            refused.append((staff, method, f"/api/users/{hostile}"))
        refused += [
            (staff, "delete", f"/api/users/{hostile}?purge=1"),
            (staff, "get", f"/api/event/{hostile}?fresh=1"),
            (staff, "get", f"/api/users/{hostile}/readings?start=2026-03-08&end=2026-03-09"),
            (staff, "get", f"/api/users/{hostile}/coverage?start=2026-03-08&end=2026-03-09"),
            (push, "post", f"/api/push/{hostile}"),
        ]
        searched += [
            f"/api/logfiles/?cloud_id={hostile}",
            f"/api/incidents/?cloud_id={hostile}",
            f"/api/users/?search={hostile}",
        ]
    with FILE_ACCESS.watching() as touched:
        answers = [
            (method, url, getattr(client, method)(url, body, content_type="application/json"))
            for client, method, url in refused
            for body in [{"email": "a@example.org"} if method in ("post", "put", "patch") else None]
        ]
        found = [(url, staff.get(url)) for url in searched]

    assert [
        (m, url, r.status_code) for m, url, r in answers if not 400 <= r.status_code < 500
    ] == []
    # Filters only search: a hostile value is refused or finds nothing.
    for url, response in found:
        assert response.status_code == 400 or response.json()["results"] == [], url
    assert outside(touched, sandbox) == []
    assert tree(sandbox) == before
    assert EagleUser.objects.count() == 2


@pytest.mark.parametrize("cloud_id", HOSTILE_CLOUD_IDS)
def test_hour_file_paths_and_archive_keys_refuse_a_cloud_id_that_is_not_hexadecimal(
    cloud_id: str,
) -> None:
    for make in (hourfiles.local_path, hourfiles.archive_key, hourfiles.file_name):
        with pytest.raises(ValueError, match="cloud_id"):
            make(cloud_id, NINE)


def test_a_reading_decoded_for_a_hostile_cloud_id_is_never_written(sandbox: Path) -> None:
    before = tree(sandbox)
    with FILE_ACCESS.watching() as touched:
        for cloud_id in HOSTILE_CLOUD_IDS:
            reading = decode_payload(DEMAND_REPLY, cloud_id=cloud_id)
            assert isinstance(reading, Reading)
            with HourFileWriter() as writer, pytest.raises(ValueError, match="cloud_id"):
                writer.append([reading])

    assert outside(touched, sandbox) == []
    assert tree(sandbox) == before


def test_an_import_file_with_hostile_cloud_ids_creates_nobody(sandbox: Path) -> None:
    lines = [
        f'{{"cloud_id": {cloud_id!r}, "user_email": "a@example.org", "user_pw": "pw"}}'.replace(
            "'", '"'
        )
        for cloud_id in HOSTILE_CLOUD_IDS
        if "\\" not in cloud_id and "\n" not in cloud_id and "\x00" not in cloud_id
    ]
    lines += [
        '{"cloud_id": "..\\\\..\\\\decoy", "user_email": "a@example.org", "user_pw": "pw"}',
        '{"cloud_id": "00a1b2\\u0000../x", "user_email": "a@example.org", "user_pw": "pw"}',
        '{"cloud_id": "00a1b2\\n", "user_email": "a@example.org", "user_pw": "pw"}',
    ]
    with FILE_ACCESS.watching() as touched:
        results = list(import_users(lines))

    assert [result.outcome for result in results] == [Outcome.FAILED] * len(lines)
    assert all("cloud_id" in result.detail for result in results)
    assert not EagleUser.objects.exists()
    assert outside(touched, sandbox) == []


@pytest.mark.parametrize(
    "payload",
    [
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        "<InstantaneousDemand><Demand>&x;</Demand></InstantaneousDemand>",
        '<!DOCTYPE r [<!ENTITY x SYSTEM "../decoy/passwd">]><Error><Text>&x;</Text></Error>',
        '<?xml version="1.0"?><!DOCTYPE r SYSTEM "file:///etc/passwd"><Error/>',
        '<rainforest><xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="/etc/passwd"/>'
        "</rainforest>",
    ],
)
def test_replies_that_name_files_get_a_failure_and_no_file_is_read(
    payload: str, sandbox: Path
) -> None:
    with FILE_ACCESS.watching() as touched:
        result = decode_payload(payload, cloud_id="0cafe0")

    assert isinstance(result, FetchFailure)
    assert "root:" not in result.message
    assert outside(touched, sandbox) == []


def test_the_playground_refuses_a_hostile_cloud_id_and_decodes_nothing(
    staff: Client, sandbox: Path
) -> None:
    with FILE_ACCESS.watching() as touched:
        answers = [
            staff.post("/dev/playground", {"payload": DEMAND_REPLY, "cloud_id": cloud_id})
            for cloud_id in HOSTILE_CLOUD_IDS
            if cloud_id
        ]

    for answer in answers:
        # A form: it is shown again with the error, and no record.
        assert answer.status_code == 200
        assert answer.context["form"].errors.get("cloud_id")
        assert not answer.context["record"]
    assert outside(touched, sandbox) == []


@pytest.mark.parametrize("cloud_id", ["../../decoy", "00a1b2\x00", "/etc/passwd"])
def test_decode_payload_names_a_hostile_cloud_id_without_writing_anything(
    cloud_id: str, sandbox: Path, tmp_path: Path
) -> None:
    reply = tmp_path / "reply.xml"
    reply.write_text(DEMAND_REPLY)
    before = tree(sandbox)
    out = StringIO()

    with FILE_ACCESS.watching() as touched:
        call_command("decode_payload", str(reply), "--cloud-id", cloud_id, stdout=out)

    assert '"demand_kw": 1.234' in out.getvalue()
    assert [name for _, name in outside(touched, sandbox)] == [str(reply)]
    assert tree(sandbox) == before


@pytest.mark.parametrize("cloud_id", ["../../decoy", ".."])
def test_commands_that_take_a_cloud_id_refuse_a_hostile_one(cloud_id: str, sandbox: Path) -> None:
    before = tree(sandbox)
    with FILE_ACCESS.watching() as touched:
        for command in (["check_user", cloud_id], ["push_token", cloud_id, "--issue"]):
            with pytest.raises(CommandError):
                call_command(*command, stdout=StringIO(), stderr=StringIO())
        with pytest.raises((CommandError, ValueError)):
            call_command("rotate_logs", "--user", cloud_id, stdout=StringIO(), stderr=StringIO())

    assert outside(touched, sandbox) == []
    assert tree(sandbox) == before


@pytest.mark.parametrize("value", ["-1", "0", "1%00", "1..%2f", "%2e%2e", "1e3"])
def test_hour_file_ids_that_are_not_plain_numbers_find_nothing(
    fleet: EagleUser, staff: Client, value: str
) -> None:
    for suffix in ("/", "/download"):
        response = staff.get(f"/api/logfiles/{value}{suffix}")
        assert response.status_code == 404, (value, suffix, response.status_code)


@pytest.mark.parametrize(
    "key",
    [
        "../decoy/iseif-rainforest-00a1b2-2026-03-08-09.jl",
        "rainforest-logs/../../decoy/passwd",
        "/etc/passwd",
    ],
)
def test_a_manifest_row_whose_key_leaves_the_archive_is_not_served(
    key: str, staff: Client, sandbox: Path
) -> None:
    row = HourFile.objects.create(
        cloud_id=PUSH_CLOUD_ID,
        hour=NINE,
        local_path=str(hourfiles.local_path(PUSH_CLOUD_ID, NINE)),
        key=key,
        state=HourFileState.VERIFIED,
        size=11,
        sha256="0" * 64,
    )
    with FILE_ACCESS.watching() as touched:
        response = staff.get(f"/api/logfiles/{row.pk}/download")
        body = b"".join(response.streaming_content) if response.streaming else response.content

    assert 400 <= response.status_code < 500, (response.status_code, body[:200])
    assert b"root:" not in body and b"decoy" not in body
    assert outside(touched, sandbox) == []


@pytest.mark.parametrize(
    "key", ["rainforest-logs/../decoy/passwd", "rainforest-logs/00a1b2/../../decoy/passwd"]
)
def test_a_manifest_key_with_dot_segments_reads_no_object_outside_the_prefix_on_s3(
    key: str, staff: Client, s3_archive: str, s3_client: Any
) -> None:
    s3_client.put_object(Bucket=s3_archive, Key="decoy/passwd", Body=b"root:x:0:0\n")
    row = HourFile.objects.create(
        cloud_id=PUSH_CLOUD_ID,
        hour=NINE,
        local_path=str(hourfiles.local_path(PUSH_CLOUD_ID, NINE)),
        key=key,
        state=HourFileState.VERIFIED,
    )

    response = staff.get(f"/api/logfiles/{row.pk}/download")
    body = b"".join(response.streaming_content) if response.streaming else response.content

    assert response.status_code != 200
    assert b"root:" not in body
