"""Security headers on every kind of answer, HTTPS-only cookies and HSTS, and CSRF on the admin.

(`check --deploy` is clean with production settings: tests/rainlog/test_settings.py.)
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from knox.models import AuthToken
from pytest_django.fixtures import Settings

from tests.factories import OPERATOR_PASSWORD, EagleUserFactory, OperatorFactory
from users.models import ConnectionType, EagleUser

pytestmark = pytest.mark.django_db

HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
HSTS = "max-age=31536000; includeSubDomains; preload"


@pytest.fixture
def superuser() -> User:
    return OperatorFactory(is_superuser=True)


def csrf_token_of(response: Any) -> str:
    return re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', response.content)[1].decode()


def test_every_kind_of_answer_carries_the_security_headers(superuser: User) -> None:
    EagleUserFactory(cloud_id="00a1b2", connection_type=ConnectionType.PUSH)
    _, token = AuthToken.objects.create(superuser)
    api = Client(HTTP_AUTHORIZATION=f"Token {token}")
    admin = Client()
    admin.force_login(superuser)
    stranger = Client()
    answers = {
        "API JSON": api.get("/api/users/"),
        "API 404": api.get("/api/users/0fffff"),
        "API 401": stranger.get("/api/users/"),
        "push refusal": stranger.post("/api/push/00a1b2", b"<x/>", content_type="text/xml"),
        "schema": api.get("/api/schema/"),
        "admin page": admin.get("/admin/users/eagleuser/"),
        "admin sign-in": stranger.get("/admin/login/"),
        "playground": admin.get("/dev/playground"),
        "healthz": stranger.get("/healthz"),
        "metrics": stranger.get("/metrics"),
        "unknown URL": stranger.get("/no-such-page"),
    }

    missing = {
        name: {header: response.get(header) for header in HEADERS}
        for name, response in answers.items()
        if any(response.get(header) != value for header, value in HEADERS.items())
    }
    assert missing == {}


def test_hsts_is_sent_over_https_only(settings: Settings) -> None:
    assert not settings.DEBUG
    client = Client()

    assert client.get("/healthz", secure=True)["Strict-Transport-Security"] == HSTS
    # Behind the TLS proxy, which says so in X-Forwarded-Proto.
    proxied = client.get("/healthz", HTTP_X_FORWARDED_PROTO="https")
    assert proxied["Strict-Transport-Security"] == HSTS
    assert not client.get("/healthz").has_header("Strict-Transport-Security")


def test_plain_http_is_redirected_to_https_except_for_probes(settings: Settings) -> None:
    settings.SECURE_SSL_REDIRECT = True
    client = Client()

    for url in ("/admin/", "/api/users/", "/dev/playground"):
        response = client.get(url)
        assert response.status_code == 301, url
        assert response["Location"].startswith("https://"), url
    # Load balancers and scrapers probe over plain HTTP inside the network.
    assert client.get("/healthz").status_code in (200, 503)
    settings.METRICS_TOKEN = "scrape-secret"
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret").status_code == 200


def test_the_session_and_csrf_cookies_are_https_only_and_the_session_is_hidden_from_scripts(
    superuser: User,
) -> None:
    client = Client(enforce_csrf_checks=True)
    page = client.get("/admin/login/", secure=True)

    signed_in = client.post(
        "/admin/login/",
        {
            "username": superuser.username,
            "password": OPERATOR_PASSWORD,
            "csrfmiddlewaretoken": csrf_token_of(page),
        },
        secure=True,
        HTTP_REFERER="https://testserver/admin/login/",
    )

    assert signed_in.status_code == 302
    session = signed_in.cookies["sessionid"]
    assert session["secure"] and session["httponly"]
    assert session["samesite"].lower() in ("lax", "strict")
    assert client.cookies["csrftoken"]["secure"]


def test_an_admin_change_without_a_csrf_token_is_refused(superuser: User) -> None:
    user = EagleUserFactory(cloud_id="00a1b2", email="before@example.org")
    client = Client(enforce_csrf_checks=True)
    client.force_login(superuser)
    url = f"/admin/users/eagleuser/{user.pk}/change/"
    form = {
        "email": "after@example.org",
        "eagle_password": "",
        "connection_type": "cloud",
        "is_active": "on",
    }

    forged = client.post(url, form)
    assert forged.status_code == 403
    assert EagleUser.objects.get(pk=user.pk).email == "before@example.org"

    # The same change with the form's token goes through: the 403 was the missing token.
    accepted = client.post(url, {**form, "csrfmiddlewaretoken": csrf_token_of(client.get(url))})
    assert accepted.status_code == 302, accepted.content[:500]
    assert EagleUser.objects.get(pk=user.pk).email == "after@example.org"


@pytest.mark.parametrize(
    "url",
    [
        "/admin/users/eagleuser/",  # the changelist's actions
        "/admin/logout/",
        "/admin/password_change/",
        "/dev/playground",
    ],
)
def test_other_admin_posts_without_a_csrf_token_are_refused(superuser: User, url: str) -> None:
    user = EagleUserFactory(cloud_id="00a1b2")
    client = Client(enforce_csrf_checks=True)
    client.force_login(superuser)

    response = client.post(url, {"action": "suspend_users", "_selected_action": [user.pk]})

    assert response.status_code == 403
    assert EagleUser.objects.get(pk=user.pk).is_active


def test_a_console_action_without_a_csrf_token_is_refused(superuser: User) -> None:
    user = EagleUserFactory(cloud_id="00a1b2")
    client = Client(enforce_csrf_checks=True)
    client.force_login(superuser)

    response = client.post(f"/admin/console/users/{user.pk}/suspend/")

    assert response.status_code == 403
    assert EagleUser.objects.get(pk=user.pk).is_active


def test_api_writes_with_a_session_need_the_csrf_token_but_token_writes_do_not(
    superuser: User,
) -> None:
    body = {"email": "a@example.org", "eagle_password": "secret-password"}
    with_session = Client(enforce_csrf_checks=True)
    with_session.force_login(superuser)
    _, token = AuthToken.objects.create(superuser)
    with_token = Client(enforce_csrf_checks=True, HTTP_AUTHORIZATION=f"Token {token}")

    forged = with_session.post("/api/users/00a1b2", body, content_type="application/json")
    by_token = with_token.post("/api/users/00a1b3", body, content_type="application/json")

    assert forged.status_code == 403
    assert "CSRF" in forged.json()["detail"]
    assert by_token.status_code == 201
    assert list(EagleUser.objects.values_list("cloud_id", flat=True)) == ["00a1b3"]
