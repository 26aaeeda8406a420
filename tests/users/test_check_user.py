"""manage.py check_user: the credentials tried against a (simulated) EAGLE, the result classified."""

from collections.abc import Iterator
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from pytest_django.fixtures import Settings

from ingestion.eagle.simulator import Simulator
from users.models import ConnectionType, EagleUser

pytestmark = pytest.mark.django_db


@pytest.fixture
def sim(settings: Settings) -> Iterator[Simulator]:
    with Simulator(users=2) as simulator:
        settings.EAGLE_CLOUD_URL = simulator.cloud_url
        yield simulator


def add_user(account: dict[str, str], **over: str) -> EagleUser:
    fields = {"email": account["user_email"], "eagle_password": account["user_pw"], **over}
    return EagleUser.objects.upsert(account["cloud_id"], fields)[0]


def check(cloud_id: str) -> tuple[str, bool]:
    out = StringIO()
    try:
        call_command("check_user", cloud_id, stdout=out)
    except CommandError:
        return out.getvalue(), False
    return out.getvalue(), True


def test_it_reports_working_cloud_credentials_with_the_reading(sim: Simulator) -> None:
    account = sim.accounts()[0]
    add_user(account)
    output, ok = check(account["cloud_id"])
    assert ok
    assert f"{account['cloud_id']}: OK: credentials accepted; demand read at " in output


def test_it_classifies_a_wrong_password_and_exits_non_zero(sim: Simulator) -> None:
    account = sim.accounts()[0]
    add_user(account, eagle_password="not-the-password")
    output, ok = check(account["cloud_id"])
    assert not ok
    assert f"{account['cloud_id']}: bad_credentials:" in output
    assert "not-the-password" not in output


def test_it_checks_a_local_gateway_too(sim: Simulator) -> None:
    account = sim.accounts("eagle200")[1]
    add_user(
        account,
        connection_type=ConnectionType.EAGLE200,
        gateway_address=account["gateway_address"],
    )
    output, ok = check(account["cloud_id"])
    assert ok, output


def test_it_names_an_unknown_cloud_id() -> None:
    with pytest.raises(CommandError, match="No user with cloud_id '002738'"):
        call_command("check_user", "002738", stdout=StringIO())
