"""/api/users/ driven as a client would: a token obtained, users created through the seed's
POST /api/users/{cloud_id}, listed, read, updated and deleted, no response ever holding a password."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from ingestion import hourfiles
from ingestion.models import FetchState, HourFile, Incident
from ingestion.records import FailureClass
from tests.factories import OPERATOR_PASSWORD, EagleUserFactory
from users.models import EagleUser

pytestmark = pytest.mark.django_db

PASSWORDS = ["1234567", "veela-secret", "new-secret-pw"]


class PasswordCheckingClient(APIClient):
    """An API client that fails the test if any response contains a known EAGLE password."""

    def request(self, *args: Any, **kwargs: Any) -> Any:
        response = super().request(*args, **kwargs)
        content = response.content.decode()
        for password in PASSWORDS:
            assert password not in content, f"a response contains the password {password!r}"
        return response


def client_with_token(user: User) -> APIClient:
    client = PasswordCheckingClient()
    response = client.post(
        "/api/auth/token/",
        {"username": user.username, "password": OPERATOR_PASSWORD},
        format="json",
    )
    assert response.status_code == 200
    client.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
    return client


def fields_of(response: Any) -> list[str | None]:
    """The fields named by a 400 problem document."""
    return [error["field"] for error in response.json()["errors"]]


@pytest.fixture(autouse=True)
def fresh_throttle() -> None:
    cache.clear()


@pytest.fixture
def api(operator: User) -> APIClient:
    return client_with_token(operator)


@pytest.fixture
def viewer_api(viewer: User) -> APIClient:
    return client_with_token(viewer)


@pytest.fixture
def krum(api: APIClient) -> Iterator[dict]:
    response = api.post(
        "/api/users/002738",
        {"user_email": "viktor.krum@durmstrang.edu", "user_pw": "1234567"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    yield response.json()


def test_a_client_creates_lists_reads_updates_and_deletes_a_user(api: APIClient) -> None:
    created = api.post(
        "/api/users/002738",
        {"user_email": "viktor.krum@durmstrang.edu", "user_pw": "1234567"},
        format="json",
    )
    assert created.status_code == 201
    assert created.json()["cloud_id"] == "002738"
    assert created.json()["has_eagle_password"] is True
    assert "eagle_password" not in created.json()

    listed = api.get("/api/users/")
    assert listed.status_code == 200
    assert [u["cloud_id"] for u in listed.json()["results"]] == ["002738"]

    read = api.get("/api/users/002738")
    assert read.status_code == 200
    assert read.json()["email"] == "viktor.krum@durmstrang.edu"

    updated = api.patch("/api/users/002738/", {"eagle_password": "new-secret-pw"}, format="json")
    assert updated.status_code == 200
    assert EagleUser.objects.get(cloud_id="002738").eagle_password == "new-secret-pw"

    assert api.delete("/api/users/002738").status_code == 204
    assert api.get("/api/users/002738").status_code == 404


def test_the_seeds_post_updates_an_existing_user_with_200(api: APIClient, krum: dict) -> None:
    response = api.post(
        "/api/users/002738/", {"email": "krum@bulgaria.example", "eagle_password": "1234567"}
    )
    assert response.status_code == 200
    assert response.json()["email"] == "krum@bulgaria.example"
    assert EagleUser.objects.count() == 1


def test_the_cloud_id_keeps_its_leading_zeros(api: APIClient, krum: dict) -> None:
    assert EagleUser.objects.get().cloud_id == "002738"
    assert api.get("/api/users/2738").status_code == 404


@pytest.mark.parametrize("cloud_id", ["00-27", "0027g8", "1" * 33])
def test_a_bad_cloud_id_is_refused_with_400(api: APIClient, cloud_id: str) -> None:
    response = api.post(
        f"/api/users/{cloud_id}", {"email": "a@example.org", "eagle_password": "x"}, format="json"
    )
    assert response.status_code == 400
    assert fields_of(response) == ["cloud_id"]
    assert not EagleUser.objects.exists()


def test_a_cloud_id_in_the_body_must_match_the_url(api: APIClient) -> None:
    response = api.post(
        "/api/users/002738",
        {"cloud_id": "002739", "email": "a@example.org", "eagle_password": "x"},
        format="json",
    )
    assert response.status_code == 400
    assert not EagleUser.objects.exists()


def test_a_user_that_could_not_be_polled_is_refused_under_the_api_field_names(
    api: APIClient,
) -> None:
    response = api.post("/api/users/002738", {"email": "a@example.org"}, format="json")
    assert response.status_code == 400
    assert fields_of(response) == ["eagle_password"]


def test_the_seed_and_api_names_for_one_field_must_agree(api: APIClient) -> None:
    response = api.post(
        "/api/users/002738",
        {"user_email": "a@example.org", "email": "b@example.org", "eagle_password": "x"},
        format="json",
    )
    assert response.status_code == 400
    assert fields_of(response) == ["user_email"]


def test_the_response_carries_fetch_metadata_and_open_incidents(api: APIClient, krum: dict) -> None:
    assert krum["fetch"]["total_events_logged"] == 0
    user = EagleUser.objects.get(cloud_id="002738")
    FetchState.objects.filter(user=user).update(
        total_events_logged=2725, first_timestamp=1443274732.39435, consecutive_failures=2
    )
    Incident.objects.create(user=user, failure_class=FailureClass.BAD_CREDENTIALS)

    body = api.get("/api/users/002738").json()

    assert body["fetch"]["total_events_logged"] == 2725
    assert body["fetch"]["first_reading_at"] == "2015-09-26T13:38:52.394Z"
    assert body["failing"] is True
    assert body["incidents"]["open_count"] == 1
    assert body["incidents"]["open"][0]["failure_class"] == "bad_credentials"


def test_fetch_metadata_is_read_only(api: APIClient, krum: dict) -> None:
    sent_back = api.patch(
        "/api/users/002738", {"fetch": {"total_events_logged": 99}}, format="json"
    )
    not_a_field = api.patch("/api/users/002738", {"total_events_logged": 99}, format="json")

    assert sent_back.status_code == 200
    assert not_a_field.status_code == 400
    assert fields_of(not_a_field) == ["total_events_logged"]
    assert FetchState.objects.get(user__cloud_id="002738").total_events_logged == 0


def test_suspending_and_activating_through_patch(api: APIClient, krum: dict) -> None:
    body = api.patch(
        "/api/users/002738", {"is_active": False, "suspended_reason": "moved out"}, format="json"
    ).json()
    assert (body["is_active"], body["suspended_reason"]) == (False, "moved out")
    assert body["suspended_at"] is not None
    body = api.patch("/api/users/002738", {"is_active": True}, format="json").json()
    assert (body["is_active"], body["suspended_reason"], body["suspended_at"]) == (True, "", None)


def test_patch_of_a_missing_user_is_404_and_creates_nothing(api: APIClient) -> None:
    response = api.patch("/api/users/002738", {"email": "a@example.org"}, format="json")
    assert response.status_code == 404
    assert not EagleUser.objects.exists()


def test_the_list_filters_by_active_and_failing_state(api: APIClient) -> None:
    for cloud_id in ("000001", "000002", "000003"):
        EagleUserFactory(cloud_id=cloud_id).ensure_fetch_state()
    EagleUser.objects.get(cloud_id="000002").suspend("moved out")
    FetchState.objects.filter(user__cloud_id="000003").update(consecutive_failures=4)

    def ids(query: str) -> list[str]:
        response = api.get(f"/api/users/?{query}")
        assert response.status_code == 200
        return [u["cloud_id"] for u in response.json()["results"]]

    assert ids("is_active=true") == ["000001", "000003"]
    assert ids("is_active=false") == ["000002"]
    assert ids("failing=true") == ["000003"]
    assert ids("failing=false") == ["000001", "000002"]
    assert ids("is_active=true&failing=false") == ["000001"]
    assert ids("search=0002") == ["000002"]


def test_the_list_is_paginated_in_cloud_id_order(api: APIClient) -> None:
    for n in range(5):
        EagleUserFactory(cloud_id=f"{n:06d}")
    first = api.get("/api/users/?page_size=2").json()
    assert first["count"] == 5
    assert [u["cloud_id"] for u in first["results"]] == ["000000", "000001"]
    second = api.get(first["next"]).json()
    assert [u["cloud_id"] for u in second["results"]] == ["000002", "000003"]


def test_the_list_costs_a_fixed_number_of_queries(
    api: APIClient,
    django_assert_max_num_queries: Any,
) -> None:
    for n in range(20):
        user = EagleUserFactory(cloud_id=f"{n:06d}")
        Incident.objects.create(user=user, failure_class=FailureClass.TIMEOUT)
    # Token lookup, count, page, open incidents; a query per user would be far more.
    with django_assert_max_num_queries(8):
        assert len(api.get("/api/users/").json()["results"]) == 20


def test_a_viewer_reads_but_cannot_write(viewer_api: APIClient, krum: dict) -> None:
    assert viewer_api.get("/api/users/").status_code == 200
    assert viewer_api.get("/api/users/002738").status_code == 200
    refused = [
        viewer_api.post("/api/users/002739", {"email": "a@example.org", "eagle_password": "x"}),
        viewer_api.patch("/api/users/002738", {"email": "a@example.org"}, format="json"),
        viewer_api.delete("/api/users/002738"),
    ]
    assert [r.status_code for r in refused] == [403, 403, 403]
    assert list(EagleUser.objects.values_list("cloud_id", "email")) == [
        ("002738", "viktor.krum@durmstrang.edu")
    ]


def test_every_route_refuses_a_client_without_a_token(krum: dict) -> None:
    anonymous = APIClient()
    responses = [
        anonymous.get("/api/users/"),
        anonymous.get("/api/users/002738"),
        anonymous.post("/api/users/002739", {"email": "a@example.org", "eagle_password": "x"}),
        anonymous.patch("/api/users/002738", {"email": "a@example.org"}, format="json"),
        anonymous.delete("/api/users/002738"),
    ]
    assert [r.status_code for r in responses] == [401] * 5
    assert EagleUser.objects.count() == 1


def test_delete_with_purge_removes_the_data_and_lists_it(
    api: APIClient, krum: dict, s3_archive: str
) -> None:
    hour = hourfiles.parse_hour_label("2026-03-08-09")
    local = hourfiles.local_path("002738", hour)
    local.parent.mkdir(parents=True)
    local.write_text("{}\n")
    key = hourfiles.archive_key("002738", hour)
    storages["archive"].save(key, ContentFile(b"{}\n"))
    HourFile.objects.create(cloud_id="002738", hour=hour, local_path=str(local), key=key)

    response = api.delete("/api/users/002738?purge=1")

    assert response.status_code == 200
    assert response.json() == {
        "deleted": "002738",
        "purged": {
            "cloud_id": "002738",
            "local_files": [str(local)],
            "archive_keys": [key],
            "manifest_rows": 1,
            "parquet_hours": 0,
            "store_rows": 0,
        },
    }
    assert not local.exists() and not storages["archive"].exists(key)
    assert not HourFile.objects.exists() and not EagleUser.objects.exists()


def test_delete_without_purge_keeps_the_data(api: APIClient, krum: dict) -> None:
    hour = hourfiles.parse_hour_label("2026-03-08-09")
    local: Path = hourfiles.local_path("002738", hour)
    local.parent.mkdir(parents=True)
    local.write_text("{}\n")

    assert api.delete("/api/users/002738?purge=0").status_code == 204
    assert local.exists()


def test_an_unclear_purge_flag_is_refused_and_deletes_nothing(api: APIClient, krum: dict) -> None:
    assert api.delete("/api/users/002738?purge=maybe").status_code == 400
    assert EagleUser.objects.exists()


def test_the_browsable_api_works_with_a_session_and_shows_no_password(
    operator: User, krum: dict
) -> None:
    client = PasswordCheckingClient()
    client.force_login(operator)
    for url in ("/api/users/", "/api/users/002738"):
        response = client.get(url, HTTP_ACCEPT="text/html")
        assert response.status_code == 200
        assert "002738" in response.content.decode()


def test_a_purge_the_archive_refuses_answers_503_and_keeps_the_user(
    api: APIClient,
    krum: dict,
    settings: Settings,
    s3_archive: str,
) -> None:
    hour = hourfiles.parse_hour_label("2026-03-08-09")
    key = hourfiles.archive_key("002738", hour)
    storages["archive"].save(key, ContentFile(b"{}\n"))
    settings.STORAGES = {
        **settings.STORAGES,
        "archive": {
            "BACKEND": "storages.backends.s3.S3Storage",
            # A loopback port nothing listens on: the archive is unreachable.
            "OPTIONS": {"bucket_name": s3_archive, "endpoint_url": "http://127.0.0.1:9"},
        },
    }

    response = api.delete("/api/users/002738?purge=1")

    assert response.status_code == 503
    assert "Send the same request again" in response.json()["detail"]
    assert response.json()["removed"]["archive_keys"] == []
    assert api.get("/api/users/002738").json()["is_active"] is False
