"""Sign-ins are throttled and locked out per real client address, in a cache every process shares.

The probe forged X-Forwarded-For to get past the token endpoint's throttle, found each gunicorn
worker counting on its own, and signed in to the admin after 60 wrong passwords.
"""

from __future__ import annotations

from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import User
from django.core.cache import caches
from django.core.management import call_command
from django.db import connection
from django.test import Client
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from tests.factories import OPERATOR_PASSWORD, OperatorFactory
from tests.rainlog.test_settings import PRODUCTION_ENVIRONMENT, manage

pytestmark = pytest.mark.django_db

TOKEN_URL = "/api/auth/token/"


def obtain(
    client: APIClient, username: str, password: str = OPERATOR_PASSWORD, **extra: str
) -> Any:
    return client.post(TOKEN_URL, {"username": username, "password": password}, **extra)


@pytest.fixture
def token_limit(settings: Settings) -> int:
    return int(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["token"].split("/")[0])


@pytest.fixture
def no_lockout(settings: Settings) -> None:
    """The throttle alone, for tests of the throttle (the lockout would answer first)."""
    settings.AXES_FAILURE_LIMIT = 1000


def test_it_ignores_a_forged_x_forwarded_for_when_no_proxy_is_trusted(
    operator: User, token_limit: int, no_lockout: None
) -> None:
    client = APIClient()
    statuses = [
        obtain(client, operator.username, "guess", HTTP_X_FORWARDED_FOR=f"10.0.0.{n}").status_code
        for n in range(token_limit + 1)
    ]
    assert statuses == [401] * token_limit + [429]
    assert obtain(client, operator.username, HTTP_X_FORWARDED_FOR="10.0.1.1").status_code == 429


def test_it_counts_the_address_its_trusted_proxy_saw(
    operator: User, token_limit: int, no_lockout: None, settings: Settings
) -> None:
    settings.TRUSTED_PROXY_COUNT = 1
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    client = APIClient()
    # The client writes anything before the proxy's entry; the proxy appends what it saw.
    statuses = [
        obtain(
            client, operator.username, "guess", HTTP_X_FORWARDED_FOR=f"10.0.0.{n}, 203.0.113.7"
        ).status_code
        for n in range(token_limit + 1)
    ]
    assert statuses == [401] * token_limit + [429]
    # Another client behind the same proxy has its own count.
    response = obtain(client, operator.username, HTTP_X_FORWARDED_FOR="203.0.113.8")
    assert response.status_code == 200


def test_throttle_counts_are_kept_in_the_database_cache_that_every_process_shares(
    operator: User, no_lockout: None
) -> None:
    assert caches["default"].__class__.__name__ == "DatabaseCache"
    obtain(APIClient(), operator.username, "guess")
    with connection.cursor() as cursor:
        cursor.execute("SELECT cache_key FROM rainlog_cache")
        keys = [row[0] for row in cursor.fetchall()]
    assert any("throttle_token" in key for key in keys)


@pytest.mark.parametrize("url", ["/admin/login/?next=/admin/", "/api-auth/login/"])
def test_a_sign_in_form_locks_out_an_address_after_too_many_wrong_passwords(
    operator: User, settings: Settings, url: str
) -> None:
    client = Client()
    statuses = [
        client.post(url, {"username": operator.username, "password": "guess"}).status_code
        for _ in range(settings.AXES_FAILURE_LIMIT)
    ]
    # The form again with its error, until the failure that locks the address out.
    assert statuses == [200] * (settings.AXES_FAILURE_LIMIT - 1) + [429]
    response = client.post(url, {"username": operator.username, "password": OPERATOR_PASSWORD})
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


def test_the_token_endpoint_locks_out_an_address_after_too_many_wrong_passwords(
    operator: User, settings: Settings
) -> None:
    client = APIClient()
    statuses = [
        obtain(client, operator.username, "guess").status_code
        for _ in range(settings.AXES_FAILURE_LIMIT)
    ]
    assert statuses == [401] * (settings.AXES_FAILURE_LIMIT - 1) + [429]
    response = obtain(client, operator.username)
    assert response.status_code == 429
    assert "token" not in response.json()
    assert "locked" in response.json()["detail"].lower()


def test_an_operator_unlocks_an_address_with_axes_reset(operator: User, settings: Settings) -> None:
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/admin/login/", {"username": operator.username, "password": "guess"})
    assert AccessAttempt.objects.exists()

    output = StringIO()
    call_command("axes_reset", stdout=output)

    assert not AccessAttempt.objects.exists()
    response = client.post(
        "/admin/login/?next=/admin/",
        {"username": operator.username, "password": OPERATOR_PASSWORD},
    )
    assert response.status_code == 302


def test_an_administrator_sees_and_deletes_lockouts_in_the_admin(settings: Settings) -> None:
    locked_out = Client(REMOTE_ADDR="198.51.100.9")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        locked_out.post("/admin/login/", {"username": "nobody", "password": "guess"})
    attempt = AccessAttempt.objects.get()
    staff = Client()
    staff.force_login(OperatorFactory(is_superuser=True))

    page = staff.get("/admin/axes/accessattempt/")
    assert page.status_code == 200
    assert "198.51.100.9" in page.content.decode()

    staff.post(
        "/admin/axes/accessattempt/",
        {"action": "delete_selected", "_selected_action": [attempt.pk], "post": "yes"},
    )
    assert not AccessAttempt.objects.exists()


@pytest.mark.parametrize(
    ("redis_url", "backend"),
    [
        ("redis://127.0.0.1:6379/7", "django.core.cache.backends.redis.RedisCache"),
        ("", "django.core.cache.backends.db.DatabaseCache"),
    ],
)
def test_throttles_count_in_redis_where_there_is_one_and_else_in_the_database(
    tmp_path: Path, redis_url: str, backend: str
) -> None:
    shown = manage(
        "shell",
        "-c",
        "from django.conf import settings; print(settings.CACHES['default']['BACKEND'])",
        env={**PRODUCTION_ENVIRONMENT, "REDIS_URL": redis_url},
        tmp_path=tmp_path,
    )

    assert shown.stdout.strip().splitlines()[-1] == backend, shown.stderr
