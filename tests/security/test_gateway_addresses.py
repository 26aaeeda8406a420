"""A gateway address cannot point rainlog into its own network, and a meter MAC is a MAC.

The probe set `gateway_address` to any host (the server then sent requests there and showed the
replies to viewers) and `meter_mac` to any text.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from pytest_django.fixtures import Settings
from pytest_httpserver import HTTPServer

from tests.factories import OperatorFactory
from users.gateway_addresses import validate_gateway_address, validate_meter_mac
from users.models import ConnectionType, EagleUser

REFUSED = [
    "http://169.254.169.254/latest/meta-data/",
    "169.254.169.254",
    "http://[fd00:ec2::254]/",
    "http://[::ffff:169.254.169.254]/",
    "10.0.0.2",
    "172.16.5.4:8080",
    "192.168.1.20",
    "127.0.0.1:8000",
    "http://[::1]:8000",
    "0.0.0.0",
    "100.64.0.1",
    "224.0.0.1",
]
NOT_HTTP = ["file:///etc/passwd", "gopher://192.0.2.1:70/", "ftp://eagle.example.org/", "http://"]
ACCEPTED = ["eagle.example.org", "https://eagle.example.org:8443", "93.184.216.34", ""]


@pytest.fixture
def no_allowed_networks(settings: Settings) -> None:
    """Production's default: no private network allowed."""
    settings.GATEWAY_ALLOWED_NETWORKS = []


@pytest.mark.parametrize("address", REFUSED)
def test_private_link_local_and_metadata_addresses_are_refused(
    no_allowed_networks: None, address: str
) -> None:
    with pytest.raises(ValidationError, match="GATEWAY_ALLOWED_NETWORKS"):
        validate_gateway_address(address)


@pytest.mark.parametrize("address", NOT_HTTP)
def test_only_http_and_https_are_accepted(no_allowed_networks: None, address: str) -> None:
    with pytest.raises(ValidationError):
        validate_gateway_address(address)


@pytest.mark.parametrize("address", ACCEPTED)
def test_public_addresses_and_host_names_are_accepted(
    no_allowed_networks: None, address: str
) -> None:
    validate_gateway_address(address)


def test_an_allowed_network_lets_rainlog_reach_the_gateways_on_a_lan(
    settings: Settings,
) -> None:
    settings.GATEWAY_ALLOWED_NETWORKS = ["192.168.1.0/24"]

    validate_gateway_address("192.168.1.20")
    with pytest.raises(ValidationError):
        validate_gateway_address("192.168.2.20")
    with pytest.raises(ValidationError):
        validate_gateway_address("169.254.169.254")


@pytest.mark.parametrize("mac", ["0x00135003007c1234", "00135003007C1234", "0xd8d5b9000000", ""])
def test_a_meter_mac_is_hexadecimal(mac: str) -> None:
    validate_meter_mac(mac)


@pytest.mark.parametrize(
    "mac", ["=cmd|' /C calc'!A0", "<script>", "0x00135003007c12345", "00:13:50:03", "0x"]
)
def test_anything_else_is_not_a_meter_mac(mac: str) -> None:
    with pytest.raises(ValidationError):
        validate_meter_mac(mac)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("field", "value"),
    [("gateway_address", "http://169.254.169.254/"), ("meter_mac", "=HYPERLINK(1)")],
)
def test_the_api_refuses_them_with_a_message(
    no_allowed_networks: None, field: str, value: str
) -> None:
    client = Client()
    client.force_login(OperatorFactory())

    response = client.post(
        "/api/users/00e200",
        {"connection_type": "eagle200", "eagle_password": "install-code", field: value},
        content_type="application/json",
    )

    assert response.status_code == 400
    assert field in response.content.decode()
    assert not EagleUser.objects.filter(cloud_id="00e200").exists()


@pytest.fixture
def lan_gateway(httpserver: HTTPServer) -> Iterator[HTTPServer]:
    httpserver.expect_request("/cgi-bin/post_manager").respond_with_data("<Error/>")
    yield httpserver


@pytest.mark.django_db
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_fetch_never_reaches_an_address_that_is_not_allowed_now(
    lan_gateway: HTTPServer, settings: Settings, host: str
) -> None:
    EagleUser.objects.create(
        cloud_id="00e201",
        eagle_password="install-code",
        connection_type=ConnectionType.LEGACY,
        gateway_address=f"http://{host}:{lan_gateway.port}",
    )
    # Allowed when it was saved; the operator has since narrowed the allow-list.
    settings.GATEWAY_ALLOWED_NETWORKS = []
    client = Client()
    client.force_login(OperatorFactory())

    response = client.get("/api/event/00e201?fresh=1")

    assert response.status_code == 502
    assert "GATEWAY_ALLOWED_NETWORKS" in response.json()["failure"]["message"]
    assert lan_gateway.log == []
