"""The admin's pages read well in an 800 px window and a 1400 px one: no table squeezes its
columns to a word (or a letter) per line. Screenshots of each page at both widths are left in
test-output/screenshots/ for a person to look at."""

from typing import Any

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from ingestion.eagle.simulator import Simulator
from tests.admin.conftest import Fleet, build_fleet, screenshot
from tests.factories import OPERATOR_PASSWORD, OperatorFactory

pytestmark = [pytest.mark.browser]
WIDTHS = (800, 1400)
# The tallest a table cell may be: two lines of the admin's text and its padding.
MAX_CELL_HEIGHT = 60
ON_TOP = """(selector) => {
    const box = document.querySelector(selector).getBoundingClientRect();
    const top = document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2);
    return Boolean(top && top.closest(selector));
}"""
TALLEST_CELL = """(selector) => Math.max(0, ...Array.from(document.querySelectorAll(selector))
    .map((cell) => cell.getBoundingClientRect().height))"""


@pytest.fixture
def fleet(transactional_db: None, simulator: Simulator, settings_for_console: None) -> Fleet:
    return build_fleet(simulator, week_for_failing=False)


def test_every_list_and_the_dashboard_read_well_at_800_and_1400_px(
    fleet: Fleet, page: Any, live_server: Any, at_now: Any
) -> None:
    operator = OperatorFactory(is_superuser=True)
    page.goto(f"{live_server.url}{reverse('admin:login')}")
    page.fill("#id_username", operator.username)
    page.fill("#id_password", OPERATOR_PASSWORD)
    page.click("input[type=submit]")
    pages = {
        "dashboard": (reverse("admin:index"), "#jobs td, #jobs th, #failing-by-class td"),
        "users": (reverse("admin:users_eagleuser_changelist"), "#result_list td"),
        "incidents": (reverse("admin:ingestion_incident_changelist"), "#result_list td"),
        "ticks": (reverse("admin:ingestion_tick_changelist"), "#result_list td"),
        "hour-files": (reverse("admin:ingestion_hourfile_changelist"), "#result_list td"),
        "fetch-state": (reverse("admin:ingestion_fetchstate_changelist"), "#result_list td"),
    }
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        for name, (path, cells) in pages.items():
            page.goto(f"{live_server.url}{path}")
            if name == "dashboard":
                expect(page.locator("#fleet-readings-chart canvas")).to_be_visible()
                # Nothing (the app list) lies over the figures.
                assert page.evaluate(ON_TOP, "#card-users"), f"#card-users is covered at {width} px"
            tallest = page.evaluate(TALLEST_CELL, cells)
            screenshot(page, f"width-{width}-{name}")
            assert 0 < tallest <= MAX_CELL_HEIGHT, f"{name} at {width} px: a cell {tallest} px tall"
