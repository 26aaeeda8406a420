"""A simulated fleet for the console's tests, and a headless Chromium for the browser tests.

The fleet is what an operator would find after a week of logging: households from the EAGLE
simulator (so that actions such as "check credentials" talk to a real gateway), a week of
archived hours for the household that is now failing, a day for the others, poll ticks for the
last 24 hours with an outage, open and resolved incidents, a failed upload and a suspended user.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from pytest_django.fixtures import Settings

from ingestion import hourfiles
from ingestion.eagle.simulator import FaultKind, Simulator
from ingestion.hourfiles import HourFileWriter
from ingestion.models import FetchState, HourFile, HourFileState, Incident, IncidentState, Tick
from ingestion.records import FailureClass, Reading, Source
from tests.factories import EagleUserFactory
from users.models import EagleUser

# A fixed moment in the future: session cookies set by the travelled server stay valid for the
# browser, which keeps the real clock.
NOW = datetime(2030, 1, 15, 13, 20, tzinfo=UTC)
METER_SECONDS = 10
RAW_BAD_CREDENTIALS = "<Error>\n  <Text>Invalid user name or password</Text>\n</Error>"
RAW_UNREACHABLE = "<Error>\n  <Text>Gateway did not respond: it may be offline</Text>\n</Error>"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"


@dataclass
class Fleet:
    simulator: Simulator
    logging: list[EagleUser] = field(default_factory=list)
    bad_credentials: EagleUser | None = None
    unreachable: EagleUser | None = None
    suspended: EagleUser | None = None
    waiting: EagleUser | None = None
    failed_upload: HourFile | None = None
    incident: Incident | None = None

    @property
    def users(self) -> list[EagleUser]:
        named = (self.bad_credentials, self.unreachable, self.suspended, self.waiting)
        return [*self.logging, *(user for user in named if user is not None)]


def demand_kw(index: int, moment: float) -> float:
    """A household's demand: night base load, morning and evening peaks, solar export at midday
    for every third household, and some deterministic noise."""
    hour = (moment % 86400) / 3600
    kw = (
        0.35
        + 0.9 * math.exp(-(((hour - 7.5) / 1.3) ** 2))
        + 1.9 * math.exp(-(((hour - 19) / 2) ** 2))
    )
    if index % 3 == 0 and abs(hour - 12.5) < 4:
        kw -= 3.2 * math.cos((hour - 12.5) / 8 * math.pi) ** 2
    kw += 0.12 * math.sin(moment / 1300 + index) + 0.04 * math.sin(moment / 170 + 2 * index)
    return round(kw, 3)


def _readings(
    user: EagleUser, index: int, start: datetime, end: datetime, gaps: Any
) -> list[Reading]:
    first = math.ceil(start.timestamp() / METER_SECONDS) * METER_SECONDS + index % METER_SECONDS
    return [
        Reading(
            cloud_id=user.cloud_id,
            record_type="demand",
            meter_timestamp=moment,
            received_at=datetime.fromtimestamp(moment + 2, UTC),
            source=Source.CLOUD,
            values={"demand_kw": demand_kw(index, moment)},
        )
        for moment in range(first, int(end.timestamp()), METER_SECONDS)
        if not any(a <= moment < b for a, b in gaps)
    ]


def write_history(
    user: EagleUser,
    index: int,
    start: datetime,
    end: datetime,
    gaps: tuple[tuple[datetime, datetime], ...] = (),
    failed_hour: datetime | None = None,
) -> HourFile | None:
    """Readings of [start, end) in hour files: closed hours archived and verified in the manifest,
    the current hour (and `failed_hour`, whose upload failed) on local disk."""
    archive = storages["archive"]
    gap_seconds = [(a.timestamp(), b.timestamp()) for a, b in gaps]
    current = hourfiles.hour_floor(NOW)
    failed_row = None
    rows = []
    hour = hourfiles.hour_floor(start)
    with HourFileWriter() as writer:
        while hour < end:
            readings = _readings(
                user, index, max(hour, start), min(hour + hourfiles.HOUR, end), gap_seconds
            )
            hour_start = hour
            hour += hourfiles.HOUR
            if not readings:
                continue
            row = HourFile(
                cloud_id=user.cloud_id,
                user=user,
                hour=hour_start,
                local_path=str(hourfiles.local_path(user.cloud_id, hour_start)),
                key=hourfiles.archive_key(user.cloud_id, hour_start),
                line_count=len(readings),
                first_reading_at=readings[0].meter_time,
                last_reading_at=readings[-1].meter_time,
            )
            if hour_start == current or hour_start == failed_hour:
                written = writer.append(readings).written[0]
                if hour_start == failed_hour:
                    hourfiles.seal(written.path)
                    row.state = HourFileState.FAILED
                    row.attempts = 4
                    row.sealed_at = hour_start + hourfiles.HOUR + timedelta(minutes=2)
                    row.last_error = "S3 PutObject: 503 Slow Down; retrying with backoff"
                    row.next_attempt_at = NOW + timedelta(minutes=8)
                    failed_row = row
                else:
                    row.line_count = None
            else:
                data = b"".join(reading.to_line() for reading in readings)
                archive.save(row.key, ContentFile(data))
                row.state = HourFileState.VERIFIED
                row.size = len(data)
                row.sha256 = hashlib.sha256(data).hexdigest()
                row.sealed_at = hour_start + hourfiles.HOUR + timedelta(minutes=2)
                row.verified_at = row.sealed_at + timedelta(seconds=20)
                row.local_deleted_at = row.verified_at
            rows.append(row)
    HourFile.objects.bulk_create(rows)
    return failed_row


def fetch_state(user: EagleUser, **fields: Any) -> None:
    FetchState.objects.update_or_create(user=user, defaults=fields)


def write_ticks(logging_users: int) -> None:
    """One tick per 6 s over the last 24 h: a 15-minute poller outage 7 h ago, a few late ticks."""
    outage = (NOW - timedelta(hours=7), NOW - timedelta(hours=6, minutes=45))
    ticks = []
    moment = NOW - timedelta(hours=24)
    k = 0
    while moment < NOW:
        k += 1
        if not outage[0] <= moment < outage[1]:
            # The first minute after the outage catches up late, and now and then one is late.
            late = outage[1] <= moment < outage[1] + timedelta(minutes=1) or k % 997 == 0
            started = moment + timedelta(seconds=7 if late else 0.05)
            ticks.append(
                Tick(
                    scheduled_at=moment,
                    started_at=started,
                    finished_at=started + timedelta(seconds=0.8),
                    users_polled=logging_users + 2,
                    # Meters update every 8 to 10 s: a 6-s poll finds a new reading 3 times in 5.
                    readings_written=logging_users * 3 // 5 + (k % 5 < 3),
                    failures=2,
                    late=late,
                )
            )
        moment += timedelta(seconds=6)
    # The poller's very first tick, when the households were added: its readings are expected
    # from then on (older ticks are left out to keep the fleet small).
    first = NOW - timedelta(days=30)
    ticks.append(Tick(scheduled_at=first, started_at=first, finished_at=first))
    Tick.objects.bulk_create(ticks, batch_size=2000)


def build_fleet(simulator: Simulator, week_for_failing: bool = True) -> Fleet:
    """Ten households of `simulator` (seeded) as they are at NOW; see the module's docstring."""
    accounts = simulator.accounts()
    users = [
        EagleUserFactory(
            cloud_id=account["cloud_id"],
            email=account["user_email"],
            eagle_password=account["user_pw"],
        )
        for account in accounts[:10]
    ]
    EagleUser.objects.filter(pk__in=[u.pk for u in users]).update(
        created_at=NOW - timedelta(days=30)
    )
    fleet = Fleet(simulator=simulator, logging=users[:6])
    fleet.bad_credentials, fleet.unreachable, fleet.suspended, fleet.waiting = users[6:10]
    day_ago = NOW - timedelta(hours=25)

    for index, user in enumerate(fleet.logging):
        failed_hour = hourfiles.hour_floor(NOW - timedelta(hours=5)) if index == 0 else None
        row = write_history(user, index, day_ago, NOW, failed_hour=failed_hour)
        fleet.failed_upload = fleet.failed_upload or row
        fetch_state(
            user,
            total_events_logged=8640 * 30,
            first_timestamp=(NOW - timedelta(days=30)).timestamp(),
            last_timestamp=(NOW - timedelta(seconds=4)).timestamp(),
            last_success_at=NOW - timedelta(seconds=3),
            last_attempt_at=NOW - timedelta(seconds=3),
        )
    Incident.objects.create(
        user=fleet.logging[1],
        failure_class=FailureClass.METER_NOT_JOINED,
        state=IncidentState.RESOLVED,
        opened_at=NOW - timedelta(hours=20),
        last_seen_at=NOW - timedelta(hours=19, minutes=50),
        resolved_at=NOW - timedelta(hours=19, minutes=49),
        occurrences=98,
        message="the gateway reports its meter as not joined",
    )

    # Failing since 3 h 10 min ago: its account password was changed at the Rainforest cloud.
    broke = NOW - timedelta(hours=3, minutes=10)
    outage = (
        NOW - timedelta(days=2, hours=4, minutes=35),
        NOW - timedelta(days=2, hours=4, minutes=5),
    )
    write_history(
        fleet.bad_credentials,
        6,
        NOW - timedelta(days=7) if week_for_failing else day_ago,
        broke,
        gaps=(outage,),
    )
    simulator.set_fault(fleet.bad_credentials.cloud_id, FaultKind.BAD_CREDENTIALS)
    fetch_state(
        fleet.bad_credentials,
        total_events_logged=8640 * 29,
        last_timestamp=broke.timestamp(),
        last_success_at=broke,
        last_attempt_at=NOW - timedelta(seconds=40),
        consecutive_failures=37,
        last_error="the cloud refused the credentials",
        last_error_class=FailureClass.BAD_CREDENTIALS,
        last_error_at=NOW - timedelta(seconds=40),
        next_attempt_at=NOW + timedelta(minutes=4),
    )
    fleet.incident = Incident.objects.create(
        user=fleet.bad_credentials,
        failure_class=FailureClass.BAD_CREDENTIALS,
        opened_at=broke,
        last_seen_at=NOW - timedelta(seconds=40),
        occurrences=37,
        message="the cloud refused the credentials",
        raw_reply=RAW_BAD_CREDENTIALS,
    )
    Incident.objects.create(
        user=fleet.bad_credentials,
        failure_class=FailureClass.TIMEOUT,
        state=IncidentState.RESOLVED,
        opened_at=outage[0],
        last_seen_at=outage[1],
        resolved_at=outage[1],
        occurrences=300,
        message="no reply within 4 s",
    )

    # Its gateway stopped answering 50 minutes ago.
    went_offline = NOW - timedelta(minutes=50)
    write_history(fleet.unreachable, 7, day_ago, went_offline)
    simulator.set_fault(fleet.unreachable.cloud_id, FaultKind.ERROR_REPLY)
    fetch_state(
        fleet.unreachable,
        last_success_at=went_offline,
        last_attempt_at=NOW - timedelta(seconds=20),
        consecutive_failures=12,
        last_error="Gateway did not respond: it may be offline",
        last_error_class=FailureClass.GATEWAY_UNREACHABLE,
        last_error_at=NOW - timedelta(seconds=20),
        next_attempt_at=NOW + timedelta(seconds=100),
    )
    Incident.objects.create(
        user=fleet.unreachable,
        failure_class=FailureClass.GATEWAY_UNREACHABLE,
        opened_at=went_offline,
        last_seen_at=NOW - timedelta(seconds=20),
        occurrences=12,
        message="Gateway did not respond: it may be offline",
        raw_reply=RAW_UNREACHABLE,
    )

    fleet.suspended.suspend("Moved out; the household asked us to stop.")
    fetch_state(fleet.suspended, last_success_at=NOW - timedelta(days=9))
    fetch_state(fleet.waiting)

    write_ticks(len(fleet.logging))
    for user in users:
        user.refresh_from_db()
    return fleet


@pytest.fixture
def simulator(settings: Settings, at_now: Any) -> Iterator[Simulator]:
    with Simulator(users=10, seed=11) as sim:
        settings.EAGLE_CLOUD_URL = sim.cloud_url
        yield sim


@pytest.fixture
def at_now() -> Iterator[None]:
    """The clock at NOW, running: pages compare times with the fleet's."""
    with time_machine.travel(NOW, tick=True):
        yield


@pytest.fixture
def settings_for_console(settings: Settings) -> None:
    settings.INGEST_POLL_SECONDS = 6.0
    settings.INGEST_METER_SECONDS = float(METER_SECONDS)
    settings.INGEST_SHARDS = 1
    settings.CONSOLE_DEMAND_SAMPLE = 4


# --- Browser --------------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def chromium() -> Any:
    """One headless Chromium for the browser tests (Debian's: Playwright cannot download its own).

    Module-scoped, not session-scoped: Playwright's sync API keeps an event loop running in this
    thread while it is open, and tests elsewhere start event loops of their own.
    """
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(
            f"no Chromium at {CHROMIUM}: install it with `make chromium` (apt-get install chromium)"
        )
    from playwright.sync_api import sync_playwright

    # With Playwright's loop running here, Django would refuse the ORM calls the tests make.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
            )
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(chromium: Any) -> Any:
    """A fresh browser page at a laptop's screen size; its screenshot is saved after the test."""
    context = chromium.new_context(viewport={"width": 1366, "height": 768}, timezone_id="UTC")
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()


def screenshot(page: Any, name: str, full_page: bool = True) -> Path:
    """Saves the page (or only what a 1366x768 laptop screen shows) for a person to look at."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
