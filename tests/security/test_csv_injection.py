"""CSV exports cannot carry a spreadsheet formula, and pushes cannot plant one.

The probe pushed a Price whose currency was `=cmd|' /C calc'!A0`; it was stored and written
unchanged into the API's and the admin's CSV exports.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.test import Client
from django.urls import reverse

from ingestion.push import PushRejectedError, parse_push
from ingestion.readings_csv import without_formula
from ingestion.records import Reading, Source
from tests.factories import EagleUserFactory, OperatorFactory
from tests.hour_files import write
from tests.push_uploads import eagle200_json, json_item

CLOUD_ID = "00c5a1"
NOW = datetime(2030, 1, 15, 12, 0, tzinfo=UTC)
FORMULA = "=cmd|' /C calc'!A0"


@pytest.mark.parametrize(
    "text", [FORMULA, "+1+cmd", "-2+3+cmd|' /C calc'!A0", "@SUM(A1)", "\t=1", "\r=1", "-"]
)
def test_a_text_cell_starting_a_formula_is_quoted(text: str) -> None:
    assert without_formula(text) == "'" + text


@pytest.mark.parametrize("text", ["-1.25", "+3", "-0", "1e-3", "USD", "840", "", "a=b"])
def test_numbers_and_plain_text_are_left_as_they_are(text: str) -> None:
    assert without_formula(text) == text


def test_a_pushed_currency_that_is_not_an_iso_4217_code_or_number_is_refused() -> None:
    sent_at = int(NOW.timestamp())
    body = eagle200_json(
        json_item("Price", sent_at - 5, {"price": 0.1, "currency": FORMULA, "units": "USD/kWh"}),
        sent_at=sent_at,
    )

    with pytest.raises(PushRejectedError) as refused:
        parse_push(body.decode(), CLOUD_ID, NOW)

    assert refused.value.status == 422
    assert "ISO 4217" in refused.value.message


@pytest.mark.parametrize("currency", ["USD", "usd", "840", "0x0348"])
def test_a_pushed_iso_4217_currency_is_accepted(currency: str) -> None:
    sent_at = int(NOW.timestamp())
    body = eagle200_json(
        json_item("Price", sent_at - 5, {"price": 0.1, "currency": currency, "units": "USD/kWh"}),
        sent_at=sent_at,
    )

    (price,) = parse_push(body.decode(), CLOUD_ID, NOW).readings

    assert price.values["currency"] in ("USD", "840")


@pytest.fixture
def planted_formula(db: None) -> Any:
    """An hour file holding a formula in a text value (as a line from before the validation
    could) next to a solar household's negative demand."""
    EagleUserFactory(cloud_id=CLOUD_ID)
    moment = NOW - timedelta(minutes=30)
    write(
        [
            Reading(
                cloud_id=CLOUD_ID,
                record_type="price",
                meter_timestamp=int(moment.timestamp()),
                received_at=moment,
                source=Source.PUSH,
                values={"price": 0.1, "currency": FORMULA, "tier": None},
                raw={"Currency": FORMULA},
            ),
            Reading(
                cloud_id=CLOUD_ID,
                record_type="demand",
                meter_timestamp=int(moment.timestamp()) + 1,
                received_at=moment,
                source=Source.PUSH,
                values={"demand_kw": -1.25},
                raw={"Demand": "-0x04e2"},
            ),
        ]
    )
    with time_machine.travel(NOW, tick=False):
        yield


def rows_of(response: Any) -> list[dict[str, str]]:
    assert response.status_code == 200, response.content
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


def assert_neutralised(rows: list[dict[str, str]]) -> None:
    price, demand = rows
    assert price["currency"] == "'" + FORMULA
    assert demand["demand_kw"] == "-1.25"
    for row in rows:
        for value in row.values():
            assert not value.startswith(("=", "+", "@", "\t", "\r")), value
            assert not value.startswith("-") or float(value) < 0, value


def test_the_api_csv_export_neutralises_formulas_and_keeps_negative_numbers(
    planted_formula: None,
) -> None:
    client = Client()
    client.force_login(OperatorFactory(is_staff=False))

    response = client.get(
        f"/api/users/{CLOUD_ID}/readings",
        {"start": "2030-01-15T11:00:00Z", "end": "2030-01-15T12:00:00Z", "format": "csv"},
    )

    assert_neutralised(rows_of(response))


def test_the_admin_csv_export_neutralises_formulas_and_keeps_negative_numbers(
    planted_formula: None,
) -> None:
    client = Client()
    client.force_login(OperatorFactory(is_superuser=True))
    user_pk = EagleUserFactory(cloud_id=CLOUD_ID).pk

    response = client.get(
        reverse("admin:console_user_export", args=[user_pk]),
        {"start": "2030-01-15", "end": "2030-01-15"},
    )

    assert_neutralised(rows_of(response))
