"""Every 4xx and 5xx under /api/ is an RFC 9457 problem document, and the schema says so."""

import json
from typing import Any

import pytest
from django.http import HttpRequest
from django.test import Client
from django.urls import include, path
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from tests.factories import EagleUserFactory

PROBLEM = "application/problem+json"
RANGE = {"start": "2026-03-08T09:00:00Z", "end": "2026-03-08T10:00:00Z"}


def problem_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    body = json.loads(response.content)
    assert body["type"] == "about:blank"
    assert body["status"] == status
    assert body["title"] and body["detail"] and body["code"]
    return body


def test_an_unknown_path_under_the_api_is_a_json_404_with_or_without_a_slash(
    viewer_client: APIClient,
) -> None:
    for url in ("/api/nothing-here", "/api/nothing-here/", "/api/users/002738/readings/x"):
        body = problem_of(viewer_client.get(url), 404)
        assert body["instance"] == url
        assert body["code"] == "not_found"


def test_a_missing_user_and_a_missing_object_say_what_was_looked_for(
    viewer_client: APIClient, db
) -> None:
    readings = problem_of(viewer_client.get("/api/users/00ffff/readings/", RANGE), 404)
    user = problem_of(viewer_client.get("/api/users/00ffff"), 404)
    incident = problem_of(viewer_client.get("/api/incidents/999/"), 404)

    assert "00ffff" in readings["detail"]
    assert user["detail"] == "No EAGLE user with cloud_id 00ffff."
    assert incident["detail"] == "No incident with id 999."


def test_values_that_do_not_validate_are_listed_field_by_field(
    viewer_client: APIClient, db
) -> None:
    EagleUserFactory(cloud_id="002738")

    body = problem_of(
        viewer_client.get("/api/users/002738/readings", {"start": "yesterday", "end": "soon"}), 400
    )

    assert body["code"] == "invalid"
    assert [error["field"] for error in body["errors"]] == ["start", "end"]
    assert body["detail"].startswith("start: 'yesterday' is neither ISO 8601")
    assert all(error["message"] and error["code"] for error in body["errors"])


def test_a_csv_request_that_fails_gets_its_problem_as_json(viewer_client: APIClient, db) -> None:
    EagleUserFactory(cloud_id="002738")

    response = viewer_client.get(
        "/api/users/002738/readings", {"start": "x", "end": "y"}, HTTP_ACCEPT="text/csv"
    )

    problem_of(response, 400)


def test_a_missing_token_a_refused_method_and_an_unknown_format_are_problems(
    viewer_client: APIClient, operator_client: APIClient
) -> None:
    stranger = problem_of(APIClient().get("/api/users/"), 401)
    viewer = problem_of(viewer_client.delete("/api/users/002738"), 403)
    method = problem_of(operator_client.delete("/api/status/"), 405)
    fmt = problem_of(viewer_client.get("/api/users/", {"format": "xml"}), 400)

    assert (stranger["code"], viewer["code"]) == ("not_authenticated", "permission_denied")
    assert method["code"] == "method_not_allowed"
    assert [error["field"] for error in fmt["errors"]] == ["format"]


def broken(request: HttpRequest) -> None:
    raise RuntimeError("a bug")


urlpatterns = [path("api/broken", broken), path("", include("rainlog.urls"))]
handler500 = "api.exceptions.server_error"


def test_a_server_error_under_the_api_is_a_problem_too(settings: Settings) -> None:
    settings.ROOT_URLCONF = __name__

    body = problem_of(Client(raise_request_exception=False).get("/api/broken"), 500)

    assert body["code"] == "server_error"
    assert "a bug" not in body["detail"]


@pytest.mark.django_db
def test_the_schema_describes_every_error_response_as_a_problem() -> None:
    schema = json.loads(APIClient().get("/api/schema/", {"format": "json"}).content)
    problem = schema["components"]["schemas"]["Problem"]
    errors = [
        (f"{method.upper()} {route} {code}", response)
        for route, item in schema["paths"].items()
        for method, operation in item.items()
        for code, response in operation["responses"].items()
        if code[0] in "45"
    ]

    assert set(problem["required"]) >= {"type", "title", "status", "detail", "code"}
    assert len(errors) > 50
    for name, response in errors:
        assert list(response["content"]) == [PROBLEM], name
        assert response["content"][PROBLEM]["schema"] == {"$ref": "#/components/schemas/Problem"}
