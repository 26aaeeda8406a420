"""The seed's `?pw=` is refused whenever it is present, even next to valid credentials.

The probe's `?pw=` beside a valid token was ignored: the request succeeded, and the password sat
in the access log, so a client had no reason to stop sending it.
"""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from api.authentication import SEED_PASSWORD_HINT
from tests.factories import EagleUserFactory, OperatorFactory

pytestmark = pytest.mark.django_db

URLS = ["/api/users/", "/api/users/00abcd", "/api/event/00abcd", "/api/status/"]


@pytest.fixture(autouse=True)
def household() -> None:
    EagleUserFactory(cloud_id="00abcd")


@pytest.mark.parametrize("url", URLS)
def test_it_is_refused_next_to_a_valid_token(url: str) -> None:
    client = APIClient()
    token = client.post(
        "/api/auth/token/",
        {"username": OperatorFactory().username, "password": "correct-horse-battery-staple"},
    ).json()["token"]
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get(url).status_code in (200, 404)

    response = client.get(url, {"pw": "secret"})

    assert response.status_code == 401
    assert response.json()["detail"] == SEED_PASSWORD_HINT


@pytest.mark.parametrize("url", URLS)
def test_it_is_refused_next_to_a_signed_in_session(url: str) -> None:
    client = Client()
    client.force_login(OperatorFactory())

    response = client.get(url, {"pw": ""})

    assert response.status_code == 401
    assert "?pw=" in response.json()["detail"]
