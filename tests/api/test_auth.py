"""Operator authentication: knox tokens obtained with username and password, with expiry,
revocation and a throttled token endpoint; the seed's ?pw= gets a 401 that explains tokens."""

from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from knox.models import AuthToken
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from api.authentication import recent_tokens
from tests.factories import OPERATOR_PASSWORD

pytestmark = pytest.mark.django_db

TOKEN_URL = "/api/auth/token/"


@pytest.fixture(autouse=True)
def fresh_throttle() -> None:
    # The throttle counts in the cache, which outlives a test.
    cache.clear()


def obtain(client: APIClient, username: str, password: str = OPERATOR_PASSWORD) -> Any:
    return client.post(TOKEN_URL, {"username": username, "password": password}, format="json")


def test_it_issues_a_token_with_its_expiry_and_stores_only_a_hash(
    operator: User,
    settings: Settings,
) -> None:
    response = obtain(APIClient(), operator.username)

    assert response.status_code == 200
    body = response.json()
    assert body["user"] == {"username": operator.username, "role": "operator"}
    token = body["token"]
    stored = AuthToken.objects.get(user=operator)
    assert token not in (stored.digest, stored.token_key)
    assert stored.expiry > timezone.now() + timedelta(hours=settings.API_TOKEN_TTL_HOURS - 1)
    assert body["expiry"].endswith("Z")


@pytest.mark.parametrize("scheme", ["Token", "Bearer"])
def test_the_token_authenticates_as_token_or_bearer(operator: User, scheme: str) -> None:
    token = obtain(APIClient(), operator.username).json()["token"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{scheme} {token}")
    assert client.get("/api/users/").status_code == 200


def test_a_viewer_gets_a_token_with_the_viewer_role(viewer: User) -> None:
    response = obtain(APIClient(), viewer.username)
    assert response.json()["user"]["role"] == "viewer"


@pytest.mark.parametrize("password", ["wrong-password", ""])
def test_wrong_credentials_get_no_token(operator: User, password: str) -> None:
    response = obtain(APIClient(), operator.username, password)
    assert response.status_code in (400, 401)
    assert "token" not in response.json()
    assert not AuthToken.objects.exists()


def test_wrong_credentials_answer_401_with_a_token_challenge(operator: User) -> None:
    response = obtain(APIClient(), operator.username, "wrong-password")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_an_inactive_operator_gets_no_token(operator: User) -> None:
    operator.is_active = False
    operator.save()
    assert obtain(APIClient(), operator.username).status_code == 401


def test_an_expired_token_is_refused(operator: User, settings: Settings) -> None:
    token = obtain(APIClient(), operator.username).json()["token"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    # Used once, so that the recently accepted tokens hold it.
    assert client.get("/api/users/").status_code == 200
    later = timezone.now() + timedelta(hours=settings.API_TOKEN_TTL_HOURS, minutes=1)
    with time_machine.travel(later):
        assert client.get("/api/users/").status_code == 401


def queries_of(client: APIClient, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


def test_a_token_accepted_moments_ago_is_accepted_again_without_a_query(
    operator: User,
    settings: Settings,
) -> None:
    token = obtain(APIClient(), operator.username).json()["token"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")

    first, again = queries_of(client, "/api/users/"), queries_of(client, "/api/users/")
    settings.API_TOKEN_CACHE_SECONDS = 0
    recent_tokens.clear()
    uncached = [queries_of(client, "/api/users/") for _ in range(2)]

    assert again == first - 1
    assert uncached == [first, first]


def test_deactivating_an_operator_refuses_their_recently_used_token_at_once(
    operator: User,
) -> None:
    token = obtain(APIClient(), operator.username).json()["token"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/users/").status_code == 200

    operator.is_active = False
    operator.save()

    assert client.get("/api/users/").status_code == 401


def test_signing_in_deletes_expired_tokens(
    operator: User, viewer: User, settings: Settings
) -> None:
    obtain(APIClient(), viewer.username)
    later = timezone.now() + timedelta(hours=settings.API_TOKEN_TTL_HOURS, minutes=1)
    with time_machine.travel(later):
        assert obtain(APIClient(), operator.username).status_code == 200

    assert not AuthToken.objects.filter(user=viewer).exists()
    assert AuthToken.objects.filter(user=operator).count() == 1


def test_logout_revokes_only_the_token_used(operator: User) -> None:
    first = obtain(APIClient(), operator.username).json()["token"]
    second = obtain(APIClient(), operator.username).json()["token"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {first}")

    assert client.post("/api/auth/logout/").status_code == 204

    assert client.get("/api/users/").status_code == 401
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {second}")
    assert client.get("/api/users/").status_code == 200


def test_logout_all_revokes_every_token_of_the_operator(operator: User, viewer: User) -> None:
    tokens = [obtain(APIClient(), operator.username).json()["token"] for _ in range(2)]
    obtain(APIClient(), viewer.username)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {tokens[0]}")

    assert client.post("/api/auth/logout-all/").status_code == 204

    assert not AuthToken.objects.filter(user=operator).exists()
    assert AuthToken.objects.filter(user=viewer).count() == 1


def test_the_token_endpoint_is_throttled(operator: User, settings: Settings) -> None:
    limit = int(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["token"].split("/")[0])
    # The throttle alone: the sign-in lockout (tests/security/test_login_throttling.py) is stricter.
    settings.AXES_FAILURE_LIMIT = limit + 1
    client = APIClient()
    statuses = [obtain(client, operator.username, "guess").status_code for _ in range(limit)]
    assert statuses == [401] * limit
    # Even the right password is refused once the client is over the limit.
    response = obtain(client, operator.username)
    assert response.status_code == 429
    assert "token" not in response.json()


def test_a_request_without_credentials_is_refused_with_401() -> None:
    response = APIClient().get("/api/users/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_the_seeds_pw_parameter_gets_a_401_explaining_token_auth() -> None:
    response = APIClient().get("/api/users/002738?pw=plaintext123")
    assert response.status_code == 401
    assert "POST /api/auth/token/" in response.json()["detail"]
    assert "plaintext123" not in response.content.decode()
