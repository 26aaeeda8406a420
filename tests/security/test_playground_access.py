"""The payload playground is a staff tool, and off in production unless PLAYGROUND_ENABLED.

The probe's viewer used /dev/playground in production.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from pytest_django.fixtures import Settings

from tests.factories import OperatorFactory, ViewerFactory
from tests.rainlog.test_settings import PRODUCTION_ENVIRONMENT, manage

pytestmark = pytest.mark.django_db

URL = "/dev/playground"


def signed_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_viewer_is_refused(settings: Settings) -> None:
    settings.PLAYGROUND_ENABLED = True

    assert signed_in(ViewerFactory()).get(URL).status_code == 403
    assert signed_in(ViewerFactory()).post(URL, {"payload": "<x/>"}).status_code == 403


def test_staff_use_it_where_it_is_enabled(settings: Settings) -> None:
    settings.PLAYGROUND_ENABLED = True

    assert signed_in(OperatorFactory()).get(URL).status_code == 200


def test_it_is_not_there_when_it_is_not_enabled(settings: Settings) -> None:
    settings.PLAYGROUND_ENABLED = False

    assert signed_in(OperatorFactory(is_superuser=True)).get(URL).status_code == 404


@pytest.mark.parametrize(("debug", "enabled"), [("0", "False"), ("1", "True")])
def test_it_is_off_by_default_in_production_and_on_in_development(
    tmp_path: Path, debug: str, enabled: str
) -> None:
    shown = manage(
        "shell",
        "-c",
        "from django.conf import settings; print(settings.PLAYGROUND_ENABLED)",
        env={**PRODUCTION_ENVIRONMENT, "DEBUG": debug},
        tmp_path=tmp_path,
    )

    assert shown.stdout.strip().splitlines()[-1] == enabled, shown.stderr
