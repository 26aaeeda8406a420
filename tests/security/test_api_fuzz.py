"""The API fuzzed from its own OpenAPI schema (schemathesis), signed in as a staff operator.

The schema is loaded from /api/schema/ with a knox token. Every operation in it gets a fixed number
of schema-valid and of schema-breaking requests (derandomized: every run sends the same ones),
through the WSGI application, in the test's transaction: real PostgreSQL, moto's S3 server for the
archive, the EAGLE simulator for `?fresh=1`. Half of the generated ids and cloud_ids are swapped for
ones that exist, so that the code behind the 404s (retrieval from disk and S3, downloads, upserts,
purges, pushes) is reached too. Each request runs in a savepoint that is rolled back, so every one
meets the same data. A new endpoint is fuzzed as soon as it is in the schema. Besides no server
error, every answer must conform to the schema: its content type, its body, and its status code,
which the operation must document.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import schemathesis
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, given, settings
from knox.models import AuthToken
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_schema_conformance,
    status_code_conformance,
)

from ingestion.eagle.simulator import Simulator
from ingestion.models import Incident
from ingestion.records import FailureClass
from rainlog.wsgi import application
from tests.factories import EagleUserFactory, HourFileFactory
from tests.hour_files import demand_readings, manifest_row, ship_hour, write
from users.models import ConnectionType

NINE = datetime(2026, 3, 8, 9, tzinfo=UTC)
# A range that holds the archived hour and the local one.
READINGS_RANGE = {"start": "2026-03-08T09:00:00Z", "end": "2026-03-08T11:00:00Z"}
# Requests per operation, schema-valid and schema-breaking ones mixed.
EXAMPLES = 24
# 5xx answers that are the API's word on a dependency, allowed where the operation documents them:
# 502 the EAGLE gave no reading (?fresh=1), 503 the archive cannot be read or a purge stopped.
DEPENDENCY_STATUSES = {502, 503}


@dataclass(frozen=True)
class Fleet:
    """What exists while the API is fuzzed."""

    polled: str  # a simulated household, with an archived hour (S3) and a local one
    push: str  # a push user
    push_token: str
    disposable: str  # the one DELETE may remove (with its data: ?purge=1)
    hour_file_ids: list[int]
    incident_ids: list[int]


@pytest.fixture
def wsgi_in_test_transaction() -> Iterator[None]:
    """Requests into the WSGI application share the test's transaction, as with Django's test
    client: the request signals would otherwise close the connection in the middle of the test."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def simulator(settings: Settings) -> Iterator[Simulator]:
    with Simulator(users=2) as sim:
        settings.EAGLE_CLOUD_URL = sim.cloud_url
        yield sim


@pytest.fixture
def fleet(db: None, s3_archive: str, simulator: Simulator) -> Fleet:
    account = simulator.accounts()[0]
    polled = EagleUserFactory(
        cloud_id=account["cloud_id"],
        email=account["user_email"],
        eagle_password=account["user_pw"],
    )
    write(demand_readings(polled.cloud_id, NINE, 600))
    archived = ship_hour(polled.cloud_id, NINE)
    write(demand_readings(polled.cloud_id, NINE + timedelta(hours=1), 600))
    local = manifest_row(polled.cloud_id, NINE + timedelta(hours=1))
    incident = Incident.objects.create(
        user=polled, failure_class=FailureClass.TIMEOUT, opened_at=NINE
    )
    push = EagleUserFactory(cloud_id="00a1b2", connection_type=ConnectionType.PUSH)
    disposable = EagleUserFactory(cloud_id="0dead0")
    write(demand_readings(disposable.cloud_id, NINE, 10))
    ship_hour(disposable.cloud_id, NINE)
    return Fleet(
        polled.cloud_id,
        push.cloud_id,
        push.issue_push_token(),
        disposable.cloud_id,
        [archived.id, local.id],
        [incident.id],
    )


@pytest.fixture
def api_schema(fleet: Fleet, operator: User, wsgi_in_test_transaction: Any) -> Iterator[Any]:
    _, token = AuthToken.objects.create(operator)
    yield schemathesis.openapi.from_wsgi(
        "/api/schema/?format=json", application, headers={"Authorization": f"Token {token}"}
    )
    # The token endpoint's throttle counts in the cache: later tests start afresh.
    cache.clear()


def aim_at_existing(case: Any, fleet: Fleet) -> dict[str, str]:
    """Swap half of the generated ids and cloud_ids (chosen by the generated value itself, so the
    run stays deterministic) for ones that exist; returns the headers that go with them."""
    parameters = case.path_parameters
    if not parameters:
        return {}
    value = parameters.get("id")
    if isinstance(value, int) and not isinstance(value, bool) and value % 2 == 0:
        ids = fleet.incident_ids if case.path.startswith("/api/incidents/") else fleet.hour_file_ids
        parameters["id"] = ids[(value // 2) % len(ids)]
    value = parameters.get("cloud_id")
    if isinstance(value, str) and len(value) % 2 == 0:
        if case.method.upper() == "DELETE":
            parameters["cloud_id"] = fleet.disposable
        elif case.path.startswith("/api/push/"):
            parameters["cloud_id"] = fleet.push
            return {"X-Push-Token": fleet.push_token}
        else:
            parameters["cloud_id"] = fleet.polled
            if case.query and "start" in case.query and "end" in case.query:
                case.query.update(READINGS_RANGE)
    return {}


def no_undocumented_server_error(ctx: Any, response: Any, case: Any) -> None:
    """No 500 ever; another 5xx only where the operation documents it as a dependency's failure."""
    status = response.status_code
    if status < 500:
        return
    documented = str(status) in case.operation.definition.raw.get("responses", {})
    if status in DEPENDENCY_STATUSES and documented:
        return
    raise AssertionError(
        f"{case.method.upper()} {case.formatted_path} answered {status}: "
        f"{response.content[:2000]!r}"
    )


def content_type_of_routed_answers(ctx: Any, response: Any, case: Any) -> None:
    """Content types as documented, except Django's HTML 404 for a path no URL pattern matches
    (a schema-breaking id such as `false`): such a request never reaches the API."""
    content_type = response.headers.get("content-type", [""])[0]
    if response.status_code == 404 and content_type.startswith("text/html"):
        return
    content_type_conformance(ctx, response, case)


CHECKS = [
    no_undocumented_server_error,
    content_type_of_routed_answers,
    response_schema_conformance,
    ignored_auth,
    status_code_conformance,
]


def test_no_operation_answers_with_a_server_error_or_off_its_schema(
    api_schema: Any, fleet: Fleet, operator: User
) -> None:
    failures: dict[str, str] = {}
    labels = []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        labels.append(operation.label)
        strategy = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(
            GenerationMode.NEGATIVE
        )

        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def send(case: Any) -> None:
            headers = aim_at_existing(case, fleet)
            # A fresh token each time: the logout operations revoke the one they are sent with.
            _, token = AuthToken.objects.create(operator)
            headers["Authorization"] = f"Token {token}"
            with transaction.atomic():
                case.call_and_validate(headers=headers, checks=CHECKS)
                transaction.set_rollback(True)

        try:
            send()
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - every operation is reported
            failures[operation.label] = str(exc)

    assert "GET /api/users/{cloud_id}/readings" in labels and len(labels) >= 19, labels
    assert not failures, "\n\n".join(f"{label}: {text}" for label, text in failures.items())


def test_a_utc_offset_beyond_what_postgresql_stores_is_read_as_its_instant(
    operator_client: APIClient,
) -> None:
    row = HourFileFactory(hour=NINE)
    # 2026-03-09T08:45+23:45 is NINE itself; PostgreSQL takes offsets up to 15:59 only.
    at_nine = "2026-03-09T08:45:00+23:45"
    a_minute_later = "2026-03-09T08:46:00+23:45"

    included = operator_client.get("/api/logfiles/", {"hour_after": at_nine})
    excluded = operator_client.get("/api/logfiles/", {"hour_after": a_minute_later})

    assert included.status_code == excluded.status_code == 200
    assert [item["id"] for item in included.json()["results"]] == [row.id]
    assert excluded.json()["results"] == []


@pytest.mark.parametrize("name", ["since", "until"])
def test_a_time_that_is_out_of_range_in_utc_is_a_client_error(
    operator_client: APIClient, name: str
) -> None:
    response = operator_client.get("/api/incidents/", {name: "9999-12-31T23:00:00-23:00"})

    assert response.status_code == 400
    assert [error["field"] for error in response.json()["errors"]] == [name]
