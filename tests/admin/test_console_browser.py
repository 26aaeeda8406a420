"""The console in a real browser: an operator logs in, reads the fleet, opens a failing household
and acts on it. Each test leaves a screenshot in test-output/screenshots/ for a person to look at.
"""

import re
from typing import Any

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from ingestion.eagle.simulator import Simulator
from tests.admin.conftest import RAW_BAD_CREDENTIALS, Fleet, build_fleet, screenshot
from tests.factories import OPERATOR_PASSWORD, OperatorFactory

pytestmark = [pytest.mark.browser]


@pytest.fixture
def fleet(transactional_db: None, simulator: Simulator, settings_for_console: None) -> Fleet:
    return build_fleet(simulator, week_for_failing=False)


@pytest.fixture
def fleet_with_a_week(
    transactional_db: None, simulator: Simulator, settings_for_console: None
) -> Fleet:
    return build_fleet(simulator, week_for_failing=True)


@pytest.fixture
def browser_errors(page: Any) -> list[str]:
    """Every error the page reports: script errors, failed loads and Content-Security-Policy
    violations (Chromium logs each as a console error)."""
    errors: list[str] = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


@pytest.fixture
def signed_in(page: Any, live_server: Any, at_now: Any, browser_errors: list[str]) -> Any:
    """The browser page, signed in through the admin's login form as an operator; the test fails
    if any page it visits reports an error (a script error or a CSP violation)."""
    operator = OperatorFactory(is_superuser=True)
    page.goto(f"{live_server.url}{reverse('admin:index')}")
    assert "/login/" in page.url
    page.fill("#id_username", operator.username)
    page.fill("#id_password", OPERATOR_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}{reverse('admin:index')}")
    yield page
    assert browser_errors == []


def test_it_shows_the_fleet_at_a_glance_after_logging_in(fleet: Fleet, signed_in: Any) -> None:
    page = signed_in

    users = page.locator("#card-users")
    expect(users).to_contain_text("6 of 10 logging")
    expect(users).to_contain_text("2 failing")
    expect(users).to_contain_text("1 suspended")
    failures = page.locator("#failing-by-class tbody tr")
    expect(failures).to_have_count(2)
    expect(failures.first).to_contain_text("Bad credentials")
    archive = page.locator("#card-archive")
    expect(archive).to_contain_text(f"{fleet.failed_upload.cloud_id}, failed")
    expect(page.locator("#jobs")).to_contain_text("Failed tasks")
    # Both charts are drawn from the console's own data and the vendored chart library.
    expect(page.locator("#fleet-demand-chart canvas")).to_be_visible()
    expect(page.locator("#fleet-readings-chart canvas")).to_be_visible()
    expect(page.locator("#fleet-charts figcaption").first).to_contain_text(
        "sampled of 6 logging households"
    )
    screenshot(page, "dashboard")
    # The admin's dark theme: the console's colours come from the same CSS variables.
    page.emulate_media(color_scheme="dark")
    page.reload()
    expect(page.locator("#fleet-readings-chart canvas")).to_be_visible()
    screenshot(page, "dashboard-dark")


def test_it_opens_a_failing_user_checks_its_credentials_and_suspends_it(
    fleet_with_a_week: Fleet, signed_in: Any
) -> None:
    page = signed_in
    user = fleet_with_a_week.bad_credentials

    page.locator("#card-users").get_by_role("link", name="2 failing").click()
    page.get_by_role("link", name=user.cloud_id, exact=True).click()
    console = page.locator("#user-console")
    expect(console.locator("#user-state")).to_contain_text("Failing: Bad credentials")
    expect(page.locator("#user-demand-chart canvas")).to_be_visible()
    expect(page.locator("[data-demand-summary]")).to_have_text(re.compile(r"[\d,]+ readings; peak"))
    strip = console.locator(".rl-strip")
    expect(strip.locator("td.rl-cov-missing")).to_have_count(3)  # since it broke
    expect(strip.locator("td.rl-cov-partial")).to_have_count(3)  # an outage 2 days ago, today
    expect(strip.locator("td.rl-cov-complete")).to_have_count(7 * 24 - 6)
    expect(console.locator("#user-incidents")).to_contain_text("Bad credentials")

    page.get_by_role("button", name="Check credentials").click()

    expect(page.locator(".messagelist")).to_contain_text(f"{user.cloud_id}: bad_credentials")
    assert user.eagle_password not in page.content()
    screenshot(page, "user")
    screenshot(page, "user-laptop-screen", full_page=False)

    page.get_by_role("button", name="Suspend").click()
    expect(page.locator(".messagelist")).to_contain_text("suspended: it is no longer polled")
    expect(page.locator("#user-state")).to_contain_text("Suspended: Suspended by")
    user.refresh_from_db()
    assert not user.is_active
    page.get_by_role("button", name="Resume").click()
    expect(page.locator(".messagelist")).to_contain_text("resumed")
    user.refresh_from_db()
    assert user.is_active
    screenshot(page, "user-resumed")


def test_it_lists_open_incidents_and_shows_the_reply_behind_one(
    fleet: Fleet, signed_in: Any
) -> None:
    page = signed_in

    page.locator("#card-incidents").get_by_role("link", name="2").click()
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.filter(has_text=fleet.bad_credentials.cloud_id)).to_contain_text("Bad credentials")
    expect(rows.filter(has_text=fleet.unreachable.cloud_id)).to_contain_text("Gateway unreachable")
    screenshot(page, "incidents")

    rows.filter(has_text=fleet.bad_credentials.cloud_id).get_by_role("link").first.click()
    expect(page.locator("#content")).to_contain_text(RAW_BAD_CREDENTIALS.splitlines()[1].strip())
    assert fleet.bad_credentials.eagle_password not in page.content()
    screenshot(page, "incident")


def test_the_admin_and_the_console_run_under_the_content_security_policy(
    fleet: Fleet, signed_in: Any, live_server: Any, browser_errors: list[str]
) -> None:
    page = signed_in
    user = fleet.bad_credentials
    pages = [
        reverse("admin:index"),
        reverse("admin:users_eagleuser_changelist"),
        reverse("admin:users_eagleuser_change", args=[user.pk]),
        reverse("admin:users_eagleuser_add"),
        reverse("admin:ingestion_incident_changelist"),
        reverse("admin:ingestion_hourfile_changelist"),
        reverse("admin:knox_authtoken_add"),
        reverse("admin:axes_accessattempt_changelist"),
        "/dev/playground?example=cloud-xml",
        # The API's own pages (DRF, drf-spectacular) are allowed inline code: content_security.py.
        # (Not ReDoc: it asks for Google's fonts, which the policy blocks, as it should.)
        "/api/schema/swagger/",
        "/api/users/",
        "/api-auth/login/",
    ]
    for path in pages:
        response = page.goto(f"{live_server.url}{path}")
        assert response is not None and response.status == 200, path
        assert "default-src 'self'" in response.headers["content-security-policy"], path
        page.wait_for_load_state("networkidle")
    # Swagger UI drew the schema.
    page.goto(f"{live_server.url}/api/schema/swagger/")
    expect(page.locator(".swagger-ui .info")).to_be_visible()
    # A violation is reported, not just silently blocked: the check itself works.
    page.goto(f"{live_server.url}{reverse('admin:index')}")
    page.evaluate(
        "const script = document.createElement('script');"
        "script.textContent = \"document.body.dataset.inline = 'ran'\";"
        "document.body.append(script);"
    )
    assert page.evaluate("document.body.dataset.inline") is None
    assert any("Content Security Policy" in error for error in browser_errors)
    browser_errors.clear()
