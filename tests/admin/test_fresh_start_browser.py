"""What a new user sees: `make run`'s `run_all` on a fresh checkout (SQLite, the simulator, five
demo households), then the console in a browser. Within two minutes the dashboard shows no
problem; a screenshot of it is left in test-output/screenshots/."""

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.admin.conftest import screenshot
from tests.rainlog.test_run_all import PROJECT_DIR, free_port, fresh_checkout

pytestmark = [pytest.mark.browser, pytest.mark.slow]
PASSWORD = re.compile(r"username 'demo', password '(?P<password>[^']+)'")


@pytest.fixture
def fresh_system(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A freshly started system: (its URL, the demo operator's password)."""
    port = free_port()
    env, simulator_port = fresh_checkout(tmp_path)
    manage = [sys.executable, "manage.py"]
    output = tmp_path / "run_all.txt"
    with open(output, "w") as out:
        process = subprocess.Popen(
            [*manage, "run_all", "--port", str(port), "--simulator-port", str(simulator_port)],
            cwd=PROJECT_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while "rainlog is running" not in output.read_text():
            assert process.poll() is None and time.monotonic() < deadline, output.read_text()
            time.sleep(0.5)
        match = PASSWORD.search(output.read_text())
        assert match, output.read_text()
        yield f"http://127.0.0.1:{port}", match["password"]
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=60)


def test_a_fresh_system_shows_no_problem_within_two_minutes(fresh_system: Any, page: Any) -> None:
    url, password = fresh_system
    started = time.monotonic()
    page.goto(url + "/")
    page.fill("#id_username", "demo")
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    cards = page.locator(".rl-cards")
    expect(cards).to_be_visible()

    # A minute of polling, so that every figure has something to count.
    time.sleep(max(0.0, 60 - (time.monotonic() - started)))
    page.reload()

    expect(page.locator("#card-users")).to_contain_text("5 of 5 logging")
    for card in ("users", "readings", "ticks", "archive", "incidents"):
        expect(page.locator(f"#card-{card} .rl-status").first).to_contain_text("OK")
    assert "Problem" not in cards.inner_text()
    assert time.monotonic() - started < 120
    # The chart draws when its own request for the window's data returns, which on a busy
    # machine takes longer than expect()'s default five seconds. It counts whole minutes, and
    # polling starts at the first minute boundary the scheduler sees: its first minute may end
    # after this page loaded, and then the next load, once that minute is over, shows it.
    readings_chart = page.locator("#fleet-readings-chart")
    for _ in range(2):
        loaded = readings_chart.locator("canvas, p.rl-empty").first
        expect(loaded).to_be_visible(timeout=30_000)
        if readings_chart.locator("canvas").is_visible():
            break
        expect(readings_chart).to_contain_text("No whole minute of ticks in this window yet")
        time.sleep(61 - time.time() % 60)
        page.reload()
    expect(readings_chart.locator("canvas")).to_be_visible(timeout=30_000)
    page.locator("[data-window='1h']").click()
    expect(page.locator("[data-window-title]")).to_have_text("Last hour (UTC)", timeout=30_000)
    screenshot(page, "fresh-start-dashboard")
