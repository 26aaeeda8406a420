"""GET /api/logfiles/ and the download of one hour file, from disk, the archive or a presigned URL."""

import gzip
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rest_framework.test import APIClient

from ingestion import hourfiles
from ingestion.models import HourFileState
from tests.hour_files import demand_readings, manifest_row, ship_hour, write

NINE = datetime(2026, 3, 8, 9, tzinfo=UTC)


@pytest.fixture
def hour_files(db: None, s3_archive: str) -> Any:
    """002738: 09 verified (gzip), 10 verified (plain), 11 open on disk; 0abc: 09 failed."""
    write(demand_readings("002738", NINE, 1800))
    write(demand_readings("0abc", NINE, 10))
    return {
        "gzip": ship_hour("002738", NINE, compressed=True),
        "plain": ship_hour("002738", NINE + timedelta(hours=1)),
        "open": manifest_row("002738", NINE + timedelta(hours=2)),
        "failed": manifest_row("0abc", NINE, state=HourFileState.FAILED),
    }


def body(response: Any) -> bytes:
    return b"".join(response.streaming_content)


def test_it_lists_the_manifest_newest_first_with_filters(
    viewer_client: APIClient, hour_files
) -> None:
    everything = viewer_client.get("/api/logfiles/").json()
    mine = viewer_client.get("/api/logfiles/", {"cloud_id": "002738"}).json()
    ranged = viewer_client.get(
        "/api/logfiles/",
        {"hour_after": "2026-03-08T10:00:00Z", "hour_before": "2026-03-08T11:00:00Z"},
    ).json()
    troubled = viewer_client.get("/api/logfiles/", {"state": ["failed", "open"]}).json()

    assert everything["count"] == 4
    assert [f["hour"] for f in mine["results"]] == [
        "2026-03-08T11:00:00Z",
        "2026-03-08T10:00:00Z",
        "2026-03-08T09:00:00Z",
    ]
    assert [f["id"] for f in ranged["results"]] == [hour_files["plain"].id]
    assert {f["id"] for f in troubled["results"]} == {
        hour_files["open"].id,
        hour_files["failed"].id,
    }
    gzip_file = next(f for f in everything["results"] if f["id"] == hour_files["gzip"].id)
    assert gzip_file["key"].endswith(".jl.gz") and gzip_file["compressed"] is True
    assert gzip_file["download_url"].endswith(f"/api/logfiles/{gzip_file['id']}/download")


def test_a_bad_filter_is_400(viewer_client: APIClient, hour_files) -> None:
    assert viewer_client.get("/api/logfiles/", {"state": "lost"}).status_code == 400
    assert viewer_client.get("/api/logfiles/", {"hour_after": "soon"}).status_code == 400


def test_an_archived_gzip_file_downloads_as_stored(viewer_client: APIClient, hour_files) -> None:
    row = hour_files["gzip"]

    response = viewer_client.get(f"/api/logfiles/{row.id}/download")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/gzip"
    assert not response.has_header("Content-Encoding")
    data = body(response)
    assert len(data) == int(response["Content-Length"]) == row.size
    lines = gzip.decompress(data).splitlines()
    assert len(lines) == 600
    assert row.key.endswith(response["Content-Disposition"].split('"')[1])


def test_an_open_local_file_downloads_from_disk(viewer_client: APIClient, hour_files) -> None:
    row = hour_files["open"]

    response = viewer_client.get(f"/api/logfiles/{row.id}/download", HTTP_ACCEPT="*/*")

    assert response["Content-Type"] == "application/x-ndjson"
    local = hourfiles.local_path("002738", row.hour)
    assert body(response) == local.read_bytes()


def test_a_presigned_url_fetches_the_archived_object_from_s3(
    viewer_client: APIClient, hour_files
) -> None:
    row = hour_files["plain"]

    response = viewer_client.get(f"/api/logfiles/{row.id}/download", {"presigned": "1"})

    assert response.status_code == 200
    document = response.json()
    assert "Signature=" in document["url"] and document["key"] == row.key
    expires = datetime.fromisoformat(document["expires_at"])
    assert timedelta(0) < expires - datetime.now(UTC) <= timedelta(minutes=5)
    with urllib.request.urlopen(document["url"], timeout=10) as reply:  # moto on 127.0.0.1
        assert len(reply.read().splitlines()) == 600


def test_a_file_with_no_copy_to_serve_is_a_409(viewer_client: APIClient, hour_files) -> None:
    failed = hour_files["failed"]
    hourfiles.local_path("0abc", NINE).unlink()

    assert viewer_client.get(f"/api/logfiles/{failed.id}/download").status_code == 409
    presigned = viewer_client.get(
        f"/api/logfiles/{hour_files['open'].id}/download", {"presigned": "1"}
    )
    assert presigned.status_code == 409
    assert "not verified" in presigned.json()["detail"]


def test_presigned_urls_need_an_s3_archive(viewer_client: APIClient, db) -> None:
    write(demand_readings("002738", NINE, 10))
    row = ship_hour("002738", NINE)  # the local file-system archive of the test settings

    response = viewer_client.get(f"/api/logfiles/{row.id}/download", {"presigned": "1"})

    assert response.status_code == 409
    assert "S3" in response.json()["detail"]
    assert len(body(viewer_client.get(f"/api/logfiles/{row.id}/download")).splitlines()) == 10


def test_everything_needs_a_token(hour_files) -> None:
    client = APIClient()
    row = hour_files["gzip"]

    assert client.get("/api/logfiles/").status_code == 401
    assert client.get(f"/api/logfiles/{row.id}/").status_code == 401
    assert client.get(f"/api/logfiles/{row.id}/download").status_code == 401
