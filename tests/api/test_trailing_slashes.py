"""Every route of the API answers with and without its trailing slash, the same way, without a
redirect; the schema lists each route once."""

import json
from datetime import timedelta

import pytest
from django.urls import get_resolver
from knox.models import AuthToken
from rest_framework.test import APIClient

from ingestion.models import Incident
from ingestion.records import FailureClass
from tests.factories import EagleUserFactory, OperatorFactory

RANGE = {"start": "2026-03-08T09:00:00Z", "end": "2026-03-08T10:00:00Z"}


@pytest.fixture
def token_client(db: None) -> APIClient:
    user = EagleUserFactory(cloud_id="002738")
    Incident.objects.create(user=user, failure_class=FailureClass.TIMEOUT)
    _, token = AuthToken.objects.create(OperatorFactory(), expiry=timedelta(hours=1))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def api_routes() -> list[str]:
    """The named routes of the API, as concrete paths without their trailing slash."""
    api = next(p for p in get_resolver().url_patterns if getattr(p, "namespace", "") == "api")
    incident = Incident.objects.values_list("id", flat=True).first()
    paths = []
    for pattern in api.url_patterns:
        route = str(pattern.pattern)
        if not pattern.name or pattern.name in ("root", "unknown"):
            continue
        route = route.replace("<cloud_id:cloud_id>", "002738").replace(
            "<any_cloud_id:cloud_id>", "002738"
        )
        route = route.replace("<int:pk>", str(incident))
        paths.append("/api/" + route.rstrip("/"))
    return paths


def test_every_route_answers_both_forms_alike(token_client: APIClient) -> None:
    answers = {}
    for path in api_routes():
        query = RANGE if "/users/002738/" in path else {}
        bare, slashed = token_client.get(path, query), token_client.get(path + "/", query)
        answers[path] = (bare.status_code, slashed.status_code)
        assert bare.status_code == slashed.status_code, path
        assert bare.status_code not in (301, 302, 308), path
        assert bare["Content-Type"] == slashed["Content-Type"], path

    assert answers["/api/status"] == (200, 200)
    assert answers["/api/users/002738/readings"] == (200, 200)
    assert answers["/api/auth/token"] == (405, 405)


def test_a_post_reaches_its_view_in_either_form(token_client: APIClient) -> None:
    body = {"email": "a@example.org", "eagle_password": "x"}

    created = token_client.post("/api/users/00a1b2", body, format="json")
    updated = token_client.post("/api/users/00a1b2/", body, format="json")

    assert (created.status_code, updated.status_code) == (201, 200)


def test_the_schema_lists_each_route_once(db: None) -> None:
    schema = json.loads(APIClient().get("/api/schema", {"format": "json"}).content)

    forms = [route.rstrip("/") for route in schema["paths"]]
    assert len(forms) == len(set(forms))
    assert "/api/status/" in schema["paths"] and "/api/users/{cloud_id}" in schema["paths"]
