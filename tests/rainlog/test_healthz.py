"""/healthz reports whether the database, the broker and the archive storage answer."""

import pytest
from django.test import Client
from pytest_django.fixtures import Settings


@pytest.mark.django_db
def test_it_reports_every_dependency_healthy_with_local_storage(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) >= {"database", "broker", "storage"}


@pytest.mark.django_db
def test_it_answers_head_as_it_answers_get_without_the_body(client: Client) -> None:
    get, head = client.get("/healthz"), client.head("/healthz")

    assert head.status_code == get.status_code == 200
    assert head["Content-Type"] == get["Content-Type"] == "application/json"
    assert head.content == b""


@pytest.mark.django_db
def test_it_reaches_the_s3_archive(client: Client, s3_archive: str) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["checks"]["storage"] == {"status": "ok"}


@pytest.mark.django_db
def test_it_answers_503_naming_the_storage_when_s3_is_down(
    client: Client, settings: Settings
) -> None:
    settings.STORAGES = {
        **settings.STORAGES,
        "archive": {
            "BACKEND": "storages.backends.s3.S3Storage",
            # A loopback port nothing listens on: the archive is unreachable.
            "OPTIONS": {"bucket_name": "rainlog-down", "endpoint_url": "http://127.0.0.1:9"},
        },
    }
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error"
    assert body["checks"]["storage"]["status"] == "error"
    assert body["checks"]["database"] == {"status": "ok"}
