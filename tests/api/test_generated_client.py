"""A client generated from the live schema by openapi-python-client lists users, reads readings as
JSON and handles a 404 and a 400 as problem documents: the schema is what clients can rely on.

The client is generated at test time, offline (no post-generation hooks), into a temporary
directory, from the schema the running server answers without a token."""

import importlib
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from django.db import connection
from knox.models import AuthToken

from tests.factories import EagleUserFactory, OperatorFactory
from tests.hour_files import demand_readings, write

PACKAGE = "rainlog_client"
NINE = datetime(2026, 3, 8, 9, tzinfo=UTC)
CONFIG = (
    f"post_hooks: []\npackage_name_override: {PACKAGE}\nproject_name_override: rainlog-client\n"
)


@pytest.fixture
def generated_client(live_server: Any, tmp_path: Path) -> Iterator[ModuleType]:
    schema = httpx.get(f"{live_server.url}/api/schema/", params={"format": "json"})
    assert schema.status_code == 200
    (tmp_path / "schema.json").write_bytes(schema.content)
    (tmp_path / "config.yaml").write_text(CONFIG)
    generator = Path(sys.executable).parent / "openapi-python-client"
    generated = subprocess.run(
        [
            str(generator),
            "generate",
            "--path",
            str(tmp_path / "schema.json"),
            "--config",
            str(tmp_path / "config.yaml"),
            "--meta",
            "none",
            "--output-path",
            str(tmp_path / PACKAGE),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]


@pytest.fixture
def token(transactional_db: None, monkeypatch: pytest.MonkeyPatch) -> str:
    # The live server answers each request in a thread of its own: its connection must close
    # with the request, or the test database cannot be dropped.
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    EagleUserFactory(cloud_id="002738")
    write(demand_readings("002738", NINE, count=20))
    _, token = AuthToken.objects.create(OperatorFactory(), expiry=timedelta(hours=1))
    return token


def test_it_lists_users_reads_readings_as_json_and_handles_a_404_and_a_400(
    generated_client: ModuleType, token: str, live_server: Any
) -> None:
    users_list = importlib.import_module(f"{PACKAGE}.api.users.users_list")
    user_readings = importlib.import_module(f"{PACKAGE}.api.users.user_readings")
    models = importlib.import_module(f"{PACKAGE}.models")
    client = generated_client.AuthenticatedClient(
        base_url=live_server.url, token=token, prefix="Token", raise_on_unexpected_status=True
    )
    window = {"start": "2026-03-08T09:00:00Z", "end": "2026-03-08T09:01:00Z"}

    users = users_list.sync(client=client)
    readings = user_readings.sync("002738", client=client, **window)
    missing = user_readings.sync("00ffff", client=client, **window)
    backwards = user_readings.sync(
        "002738", client=client, start=window["end"], end=window["start"]
    )

    assert [user.cloud_id for user in users.results] == ["002738"]
    assert isinstance(readings, models.PaginatedReadingList)
    assert readings.count == 10
    assert [reading.meter_time for reading in readings.results][:2] == [
        NINE,
        NINE + timedelta(seconds=6),
    ]
    assert isinstance(missing, models.Problem)
    assert (missing.status, missing.code) == (404, "not_found")
    assert "00ffff" in missing.detail
    assert isinstance(backwards, models.Problem)
    assert (backwards.status, backwards.code) == (400, "invalid")
    assert "after start" in backwards.detail
