"""An API token added in the admin is shown once on its page, never in the messages cookie.

The probe found knox's "Add auth token" putting the whole token in a message, which Django keeps
in the `messages` cookie: signed, not encrypted.
"""

from __future__ import annotations

import pytest
from django.test import Client
from knox.models import AuthToken
from rest_framework.test import APIClient

from tests.factories import OperatorFactory, ViewerFactory

pytestmark = pytest.mark.django_db


def test_a_token_added_in_the_admin_is_shown_once_and_kept_out_of_cookies() -> None:
    viewer = ViewerFactory()
    admin = Client()
    admin.force_login(OperatorFactory(is_superuser=True))

    response = admin.post(
        "/admin/knox/authtoken/add/", {"user": viewer.pk, "expiry_0": "", "expiry_1": ""}
    )

    assert response.status_code == 200
    assert "no-cache" in response["Cache-Control"]
    token = response.context["token"]
    assert token in response.content.decode()
    assert all(token not in morsel.OutputString() for morsel in response.cookies.values())
    assert token not in str(admin.cookies)
    # The next page shows no message with it either.
    assert token not in admin.get("/admin/knox/authtoken/").content.decode()

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api.get("/api/users/").status_code == 200
    assert AuthToken.objects.get().user == viewer
