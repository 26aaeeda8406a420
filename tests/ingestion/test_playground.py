"""The payload playground at /dev/playground and `manage.py decode_payload`."""

from io import StringIO
from pathlib import Path

import orjson
import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client

from ingestion.console.playground import EXAMPLES

pytestmark = pytest.mark.django_db

URL = "/dev/playground"


@pytest.fixture
def browser(operator: User) -> Client:
    client = Client()
    client.force_login(operator)
    return client


def test_it_sends_visitors_who_are_not_signed_in_to_the_admin_login() -> None:
    response = Client().get(URL)
    assert response.status_code == 302
    assert response["Location"] == f"/admin/login/?next={URL}"
    assert Client().post(URL, {"payload": EXAMPLES["error"][1]}).status_code == 302


def test_it_offers_examples_to_start_from(browser: Client) -> None:
    page = browser.get(URL).content.decode()
    assert "Payload playground" in page
    assert 'href="?example=eagle200"' in page
    prefilled = browser.get(URL, {"example": "cloud-xml"}).content.decode()
    assert "&lt;Demand&gt;0xfffb1e&lt;/Demand&gt;" in prefilled


def test_it_shows_the_record_a_reply_becomes(browser: Client) -> None:
    response = browser.post(URL, {"payload": EXAMPLES["cloud-xml"][1], "cloud_id": "00a1b2"})
    assert response.status_code == 200
    page = response.content.decode()
    assert "Decoded" in page
    assert "&quot;demand_kw&quot;: -1.25" in page
    assert "&quot;meter_time&quot;: &quot;2025-01-03T03:51:08Z&quot;" in page
    assert "&quot;cloud_id&quot;: &quot;00a1b2&quot;" in page
    line = response.context["line"]
    assert orjson.loads(line)["raw"]["Demand"] == "0xfffb1e"


def test_it_names_the_failure_class_and_the_reason(browser: Client) -> None:
    page = browser.post(URL, {"payload": EXAMPLES["error"][1]}).content.decode()
    assert "Bad credentials" in page
    assert "the service replied Error: Invalid user name or password" in page

    truncated = EXAMPLES["eagle200"][1][:120]
    page = browser.post(URL, {"payload": truncated, "source": "eagle200"}).content.decode()
    assert "Malformed reply" in page and "broken XML" in page


def test_it_shows_the_reading_a_suspicion_refused(browser: Client) -> None:
    zero = EXAMPLES["cloud-xml"][1].replace("0xfffb1e", "0x000000")
    response = browser.post(URL, {"payload": zero})
    page = response.content.decode()
    assert "Suspicious reading" in page and "sudden 0 kW" in page
    assert "would not be written" in page
    assert "&quot;demand_kw&quot;: 0.0" in page


def test_it_holds_the_record_type_the_operator_asks_for(browser: Client) -> None:
    page = browser.post(
        URL, {"payload": EXAMPLES["cloud-json"][1], "record_type": "demand"}
    ).content.decode()
    assert "expected &lt;InstantaneousDemand&gt; for demand, got &lt;CurrentSummation&gt;" in page


def test_it_escapes_whatever_is_pasted(browser: Client) -> None:
    hostile = "<script>alert(1)</script>"
    page = browser.post(URL, {"payload": hostile}).content.decode()
    assert hostile not in page
    assert "&lt;script&gt;" in page


def test_it_rejects_a_cloud_id_that_is_not_one(browser: Client) -> None:
    response = browser.post(URL, {"payload": EXAMPLES["cloud-xml"][1], "cloud_id": "../etc"})
    assert response.context["form"].errors["cloud_id"]
    assert "Decoded" not in response.content.decode()


# --- manage.py decode_payload -----------------------------------------------------------------


def test_decode_payload_prints_the_record_of_each_file(tmp_path: Path) -> None:
    reply = tmp_path / "reply.xml"
    reply.write_text(EXAMPLES["cloud-xml"][1])
    out = StringIO()
    call_command("decode_payload", str(reply), "--cloud-id", "00a1b2", stdout=out)
    record = orjson.loads(out.getvalue())
    assert record["demand_kw"] == -1.25
    assert record["cloud_id"] == "00a1b2"
    assert record["source"] == "cloud"


def test_decode_payload_reports_failures_and_exits_non_zero(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.xml"
    good.write_text(EXAMPLES["cloud-json"][1])
    bad.write_text("<html><body>Bad Gateway</body></html>")
    out = StringIO()
    with pytest.raises(CommandError, match="1 of 2 payloads gave no reading"):
        call_command("decode_payload", str(good), str(bad), stdout=out)
    output = out.getvalue()
    assert f"{good}: {{" in output and '"delivered_kwh": 46873.298' in output
    assert f"{bad}: malformed_reply: an HTML page" in output


def test_decode_payload_names_a_file_it_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="cannot read .*missing.xml"):
        call_command("decode_payload", str(tmp_path / "missing.xml"), stdout=StringIO())
