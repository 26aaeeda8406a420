"""The OpenAPI schema: valid, public, documenting errors, and every GET in it answers
without a server error when called with a token (a schema walk, ahead of a schemathesis soak)."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from knox.models import AuthToken
from openapi_spec_validator import validate
from rest_framework.test import APIClient

from ingestion.models import HourFile, Incident
from ingestion.records import FailureClass
from tests.factories import EagleUserFactory
from tests.hour_files import demand_readings, ship_hour, write

NINE = datetime(2026, 3, 8, 9, tzinfo=UTC)
# Query values for required parameters, by name; anything else gets its example, enum or default.
OWN_PATHS = ("/api/users/002738/", "/api/logfiles/", "/api/status/", "/api/incidents/")
OWN_SCHEMA_PATHS = (
    "/api/users/{cloud_id}/readings",
    "/api/users/{cloud_id}/coverage",
    "/api/logfiles/",
    "/api/status/",
    "/api/incidents/",
)
QUERY_VALUES = {"start": "2026-03-08T09:00:00Z", "end": "2026-03-08T11:00:00Z"}


def schema_of(client: APIClient) -> dict[str, Any]:
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return json.loads(response.content)


def operations(schema: dict[str, Any], method: str) -> list[tuple[str, dict[str, Any]]]:
    return [(path, item[method]) for path, item in schema["paths"].items() if method in item]


def test_the_schema_is_valid_openapi_3(viewer_client: APIClient) -> None:
    schema = schema_of(viewer_client)

    validate(schema)
    assert schema["openapi"].startswith("3.")
    assert "/api/users/{cloud_id}/readings" in schema["paths"]


def test_the_schema_and_its_pages_are_readable_without_a_token(db: None) -> None:
    client = APIClient()
    for url in ("/api/schema/", "/api/schema/swagger/", "/api/schema/redoc/"):
        assert client.get(url).status_code == 200, url
    # A bad token is no reason to refuse what anyone may read.
    client.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    assert client.get("/api/schema/").status_code == 200


def test_every_operation_documents_its_errors(viewer_client: APIClient) -> None:
    schema = schema_of(viewer_client)
    for method in ("get", "post", "put", "patch", "delete"):
        for path, operation in operations(schema, method):
            codes = set(operation["responses"])
            if {"tokenAuth": []} in operation.get("security", []):
                assert "401" in codes, f"{method.upper()} {path} does not document 401"
            if path.endswith("/resolve") or (path.startswith("/api/users/") and method != "get"):
                assert "403" in codes, f"{method.upper()} {path}: viewers get 403, undocumented"
            if path.startswith(OWN_SCHEMA_PATHS) and path != "/api/status/":
                assert codes & {"400", "404", "409"}, f"{method.upper()} {path}: no client error"
            if any(p["name"] == "page" for p in operation.get("parameters", [])):
                assert "404" in codes, f"{method.upper()} {path}: a page past the end, undocumented"
    token = schema["paths"]["/api/auth/token/"]["post"]["responses"]
    assert {"200", "400", "401", "429"} <= set(token)


@pytest.fixture
def token_client(db: None, operator: User, s3_archive: str) -> APIClient:
    """A client with a real token, and a user with archived and local hours and an incident."""
    user = EagleUserFactory(cloud_id="002738")
    write(demand_readings("002738", NINE, 1200))
    ship_hour("002738", NINE, compressed=True)
    Incident.objects.create(user=user, failure_class=FailureClass.TIMEOUT, opened_at=NINE)
    _, token = AuthToken.objects.create(operator, expiry=timedelta(hours=1))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def path_value(path: str, name: str) -> str:
    if name == "cloud_id":
        return "002738"
    model = HourFile if path.startswith("/api/logfiles/") else Incident
    return str(model.objects.order_by("id").values_list("id", flat=True)[0])


def query_value(parameter: dict[str, Any]) -> Any:
    name, schema = parameter["name"], parameter.get("schema", {})
    if name in QUERY_VALUES:
        return QUERY_VALUES[name]
    for source in (parameter.get("example"), schema.get("default")):
        if source is not None:
            return source
    if schema.get("enum"):
        return schema["enum"][0]
    return {"integer": 1, "boolean": "false"}.get(schema.get("type", ""), "x")


def test_every_get_answers_a_token_without_a_server_error_and_strangers_with_401(
    token_client: APIClient,
) -> None:
    schema = schema_of(token_client)
    called = []
    for path, operation in operations(schema, "get"):
        url = path
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path":
                name = parameter["name"]
                url = url.replace("{" + name + "}", path_value(path, name))
        query = {
            p["name"]: query_value(p)
            for p in operation.get("parameters", [])
            if p["in"] == "query" and p.get("required")
        }
        response = token_client.get(url, query)
        if response.streaming:
            b"".join(response.streaming_content)
        assert response.status_code < 500, (url, response.status_code)
        if url.startswith(OWN_PATHS):
            assert response.status_code == 200, (url, response.status_code, response.content)
        if {"tokenAuth": []} in operation.get("security", []):
            assert APIClient().get(url, query).status_code == 401, url
        called.append(path)
    assert "/api/logfiles/{id}/download" in called and "/api/status/" in called
