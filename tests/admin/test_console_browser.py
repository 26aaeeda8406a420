"""The console in a real browser: an operator logs in, reads the fleet, opens a failing household
and acts on it. Each test leaves a screenshot in test-output/screenshots/ for a person to look at.
"""

import re

import pytest
from django.urls import reverse

from tests.admin.conftest import RAW_BAD_CREDENTIALS, Fleet, build_fleet, screenshot
from tests.factories import OPERATOR_PASSWORD, OperatorFactory

pytestmark = [pytest.mark.browser]


@pytest.fixture
def fleet(transactional_db, simulator, settings_for_console) -> Fleet:  # type: ignore[no-untyped-def]
    return build_fleet(simulator)


@pytest.fixture
def signed_in(page, live_server, fleet: Fleet):  # type: ignore[no-untyped-def]
    """The browser page, signed in through the admin's login form as an operator."""
    operator = OperatorFactory(is_superuser=True)
    page.goto(f"{live_server.url}{reverse('admin:index')}")
    assert "/login/" in page.url
    page.fill("#id_username", operator.username)
    page.fill("#id_password", OPERATOR_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}{reverse('admin:index')}")
    return page


def test_it_shows_the_fleet_at_a_glance_after_logging_in(signed_in, fleet: Fleet) -> None:  # type: ignore[no-untyped-def]
    page = signed_in

    users = page.locator("#card-users")
    assert "6 of 10 logging" in users.inner_text()
    assert "2 failing" in users.inner_text() and "1 suspended" in users.inner_text()
    failures = page.locator("#failing-by-class tbody")
    assert failures.locator("tr").count() == 2
    assert "Bad credentials" in failures.inner_text()
    archive = page.locator("#card-archive").inner_text()
    assert fleet.failed_upload.cloud_id in archive and "failed" in archive
    jobs = page.locator("#jobs").inner_text()
    assert "Failed tasks" in jobs and "Queued tasks" in jobs
    # Both charts are drawn from the console's own data and the vendored chart library.
    page.locator("#fleet-demand-chart canvas").wait_for()
    page.locator("#fleet-readings-chart canvas").wait_for()
    assert "sampled of 6 logging households" in page.locator("#fleet-charts figcaption").first.inner_text()
    screenshot(page, "dashboard")


def test_it_opens_a_failing_user_and_checks_its_credentials(signed_in, fleet: Fleet) -> None:  # type: ignore[no-untyped-def]
    page = signed_in
    user = fleet.bad_credentials

    page.locator("#card-users").get_by_role("link", name="2 failing").click()
    page.get_by_role("link", name=user.cloud_id, exact=True).click()
    console = page.locator("#user-console")
    assert "Failing: Bad credentials" in console.locator("#user-state").inner_text()
    page.locator("#user-demand-chart canvas").wait_for()
    assert re.search(r"[\d,]+ readings; peak import", page.locator("[data-demand-summary]").inner_text())
    assert console.locator(".rl-strip td.rl-cov-missing").count() >= 3  # since it broke
    assert console.locator(".rl-strip td.rl-cov-partial").count() >= 1  # the outage 2 days ago
    assert "Bad credentials" in console.locator("#user-incidents").inner_text()

    page.get_by_role("button", name="Check credentials").click()

    message = page.locator(".messagelist li").first
    assert f"{user.cloud_id}: bad_credentials" in message.inner_text()
    assert user.eagle_password not in page.content()
    screenshot(page, "user")


def test_it_suspends_and_resumes_a_user_from_its_page(signed_in, fleet: Fleet, live_server) -> None:  # type: ignore[no-untyped-def]
    page = signed_in
    user = fleet.unreachable
    page.goto(f"{live_server.url}{reverse('admin:users_eagleuser_change', args=[user.pk])}")

    page.get_by_role("button", name="Suspend").click()
    assert "suspended: it is no longer polled" in page.locator(".messagelist").inner_text()
    assert "Suspended: Suspended by" in page.locator("#user-state").inner_text()
    user.refresh_from_db()
    assert not user.is_active

    page.get_by_role("button", name="Resume").click()
    assert "resumed" in page.locator(".messagelist").inner_text()
    user.refresh_from_db()
    assert user.is_active
    screenshot(page, "user-resumed")


def test_it_lists_open_incidents_and_shows_the_reply_behind_one(signed_in, fleet: Fleet) -> None:  # type: ignore[no-untyped-def]
    page = signed_in

    page.locator("#card-incidents").get_by_role("link", name="2").click()
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 2
    assert fleet.bad_credentials.cloud_id in rows.all_inner_texts()[0] + rows.all_inner_texts()[1]
    screenshot(page, "incidents")

    page.goto(page.url.split("?")[0] + f"{fleet.incident.pk}/change/")
    assert "Invalid user name or password" in page.content()
    assert RAW_BAD_CREDENTIALS.splitlines()[1].strip() in page.locator("#content").inner_text()
    assert fleet.bad_credentials.eagle_password not in page.content()
