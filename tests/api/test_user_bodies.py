"""Writing users: one vocabulary with the seed's names accepted, unknown fields refused, PUT the
whole record, PATCH some of it, and a hint where users are created."""

from typing import Any

import pytest
from rest_framework.test import APIClient

from users.models import EagleUser

pytestmark = pytest.mark.django_db

WHOLE = {
    "email": "viktor.krum@durmstrang.edu",
    "eagle_password": "1234567",
    "connection_type": "cloud",
    "gateway_address": "",
    "meter_mac": "",
    "is_active": True,
    "suspended_reason": "",
}


def errors_of(response: Any) -> dict[str | None, str]:
    assert response.status_code == 400, response.content
    return {error["field"]: error["message"] for error in response.json()["errors"]}


def test_an_unknown_field_is_refused_and_a_near_miss_gets_the_right_name(
    operator_client: APIClient,
) -> None:
    response = operator_client.post(
        "/api/users/002738",
        {"email": "a@example.org", "password": "1234567", "colour": "red"},
        format="json",
    )

    errors = errors_of(response)
    assert errors["password"] == "Unknown field: did you mean eagle_password?"
    assert errors["colour"].startswith("Unknown field: the fields are email, eagle_password")
    assert "1234567" not in response.content.decode()
    assert not EagleUser.objects.exists()


def test_put_stores_the_whole_record_and_refuses_a_part_of_it(operator_client: APIClient) -> None:
    partial = operator_client.put("/api/users/002738", {"email": "a@example.org"}, format="json")
    created = operator_client.put("/api/users/002738", WHOLE, format="json")
    replaced = operator_client.put(
        "/api/users/002738",
        {**{k: v for k, v in WHOLE.items() if k != "eagle_password"}, "meter_mac": "0x00135003"},
        format="json",
    )

    assert set(errors_of(partial)) == {
        "connection_type",
        "gateway_address",
        "meter_mac",
        "is_active",
        "suspended_reason",
    }
    assert (created.status_code, replaced.status_code) == (201, 200)
    user = EagleUser.objects.get()
    # Left out of a PUT of an existing user, the EAGLE password is kept: no answer shows it.
    assert (user.meter_mac, user.eagle_password) == ("0x00135003", "1234567")


def test_patch_changes_only_what_it_is_given(operator_client: APIClient) -> None:
    operator_client.put("/api/users/002738", WHOLE, format="json")

    response = operator_client.patch("/api/users/002738", {"is_active": False}, format="json")

    assert response.status_code == 200
    assert (response.json()["is_active"], response.json()["email"]) == (False, WHOLE["email"])


def test_an_answer_can_be_edited_and_sent_back(operator_client: APIClient) -> None:
    answer = operator_client.put("/api/users/002738", WHOLE, format="json").json()

    response = operator_client.put(
        "/api/users/002738", {**answer, "suspended_reason": "", "is_active": True}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["has_eagle_password"] is True


def test_the_seeds_names_are_accepted_and_answers_use_rainlogs(operator_client: APIClient) -> None:
    response = operator_client.post(
        "/api/users/002738", {"user_email": WHOLE["email"], "user_pw": "1234567"}, format="json"
    )

    assert response.status_code == 201
    assert response.json()["email"] == WHOLE["email"]
    assert "user_email" not in response.json() and "eagle_password" not in response.json()
    assert EagleUser.objects.get().eagle_password == "1234567"


def test_creating_on_the_list_says_where_users_are_created(operator_client: APIClient) -> None:
    response = operator_client.post("/api/users/", {"cloud_id": "002738", **WHOLE}, format="json")

    assert response.status_code == 405
    assert response["Content-Type"] == "application/problem+json"
    assert "PUT /api/users/{cloud_id}" in response.json()["detail"]
    assert response["Allow"] == "GET, HEAD, OPTIONS"
