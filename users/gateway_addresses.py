"""Where rainlog may send a local gateway's credentials: the checks of `gateway_address`.

A gateway address is http(s) only. Addresses in private, loopback, link-local (which holds the
cloud metadata service, 169.254.169.254), shared, reserved or multicast ranges, and any other
address that is not globally reachable, are refused unless one of GATEWAY_ALLOWED_NETWORKS
holds them: EAGLE-200s live on LANs, and the operator says which LANs rainlog may reach.
Without this, whoever may edit a user could make the server send requests into its own network
and show the replies.

Literal addresses are checked when a user is saved and again before each fetch; host names are
checked when the poller resolves them (`address_refusal` is asked of every address a name
resolves to), so a name that later points elsewhere is refused too.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
METER_MAC = re.compile(r"(0x)?[0-9a-f]{1,16}", re.IGNORECASE)


def address_refusal(host: str) -> str:
    """Why rainlog must not send a request to the IP address `host` ("" when it may; "" for a
    host name, which is checked once resolved)."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return ""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    reachable = address.is_global and not address.is_multicast
    if reachable or _allowed(address, tuple(settings.GATEWAY_ALLOWED_NETWORKS)):
        return ""
    return (
        f"{address} is a private, loopback, link-local or reserved address: add its network to "
        "GATEWAY_ALLOWED_NETWORKS to let rainlog reach it"
    )


@lru_cache(maxsize=64)
def _networks(
    allowed: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(network, strict=False) for network in allowed)


def _allowed(address: IPAddress, allowed: tuple[str, ...]) -> bool:
    return any(address in network for network in _networks(allowed))


def validate_gateway_address(value: str) -> None:
    """A gateway address given as host[:port] or an http(s) URL, to a host rainlog may reach."""
    text = value.strip()
    if not text:
        return
    parts = urlsplit(text if "://" in text else f"http://{text}")
    if parts.scheme.lower() not in ("http", "https"):
        raise ValidationError(
            "A gateway address is host[:port] or an http:// or https:// URL.",
            code="invalid_gateway_scheme",
        )
    try:
        parts.port  # noqa: B018  (a port that is not a number raises here)
    except ValueError:
        raise ValidationError("The gateway address's port is not a number.") from None
    if not parts.hostname:
        raise ValidationError("The gateway address has no host.", code="invalid_gateway_host")
    refusal = address_refusal(parts.hostname)
    if refusal:
        raise ValidationError(refusal[0].upper() + refusal[1:] + ".", code="gateway_not_allowed")


def validate_meter_mac(value: str) -> None:
    if value and not METER_MAC.fullmatch(value.strip()):
        raise ValidationError(
            "A meter MAC is up to 16 hexadecimal digits, with or without 0x (0x00135003007c1234).",
            code="invalid_meter_mac",
        )
