"""Fault injection: what can go wrong with a gateway, for one gateway or the whole fleet.

A fault has a kind, a rate (the share of requests it hits while active) and a time window. Window
faults (stall, not_joined) hold for their whole window; the others hit requests at their rate.

A plan on the command line (`run_simulator --faults`) is a comma-separated list of items
`KIND[@CLOUD_ID][*SHARE][=RATE][~SECONDS]`, for example:

    timeout=0.02                 2 % of all requests time out, for ever
    stall@000003~120             gateway 000003 stalls for two minutes from the start
    bad_credentials*0.01         1 % of the gateways (chosen from the seed) refuse their passwords
    false_zero=0.05,http_5xx=0.01
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from users.cloud_ids import CLOUD_ID_CHARACTERS


class FaultKind(StrEnum):
    BAD_CREDENTIALS = "bad_credentials"  # cloud: Error reply; local: HTTP 401
    UNKNOWN_CLOUD_ID = "unknown_cloud_id"  # cloud: Error reply; local: HTTP 401
    TIMEOUT = "timeout"  # no reply until the client gives up, then the connection closes
    RESET = "reset"  # the connection is reset instead of a reply
    HTTP_5XX = "http_5xx"  # HTTP 500, 502 or 503
    HTML = "html"  # an HTML error page with HTTP 200
    TRUNCATED = "truncated"  # the reply cut off half-way
    WRONG_ROOT = "wrong_root"  # well-formed XML of another reply (NetworkInfo)
    ERROR_REPLY = "error_reply"  # Error reply: the gateway cannot be reached
    NOT_JOINED = "not_joined"  # the gateway lost its meter
    STALL = "stall"  # the meter keeps reporting the reading it had when the stall began
    FALSE_ZERO = "false_zero"  # a reading of 0 (demand) or 0/0 (summation) that is not real

    @property
    def holds_window(self) -> bool:
        """True for faults that are a state of the gateway rather than a per-request event."""
        return self in (FaultKind.STALL, FaultKind.NOT_JOINED)


@dataclass(slots=True)
class Fault:
    kind: FaultKind
    cloud_id: str | None  # None = every gateway
    rate: float
    starts_at: float
    ends_at: float | None = None

    def active(self, moment: float) -> bool:
        return self.starts_at <= moment and (self.ends_at is None or moment < self.ends_at)

    def overlaps(self, start: float, end: float) -> bool:
        return self.starts_at < end and (self.ends_at is None or start < self.ends_at)


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One item of a fault plan, applied when the simulator starts."""

    kind: FaultKind
    cloud_id: str | None = None
    share: float | None = None
    rate: float = 1.0
    duration: float | None = None


_ITEM = re.compile(
    rf"(?P<kind>[a-z_0-9]+)(?:@(?P<cloud_id>{CLOUD_ID_CHARACTERS}))?"
    r"(?:\*(?P<share>[0-9.]+))?"
    r"(?:=(?P<rate>[0-9.]+))?(?:~(?P<duration>[0-9.]+))?"
)


@dataclass(frozen=True, slots=True)
class FaultPlan:
    specs: tuple[FaultSpec, ...] = ()

    @classmethod
    def parse(cls, text: str) -> FaultPlan:
        """A plan from its command-line form; ValueError naming the item that does not parse."""
        specs = []
        for item in filter(None, (part.strip() for part in text.split(","))):
            match = _ITEM.fullmatch(item)
            if not match:
                raise ValueError(
                    f"fault {item!r}: expected KIND[@CLOUD_ID][*SHARE][=RATE][~SECONDS]"
                )
            try:
                kind = FaultKind(match["kind"])
            except ValueError:
                known = ", ".join(kind.value for kind in FaultKind)
                raise ValueError(f"fault {item!r}: unknown kind (known: {known})") from None
            try:
                spec = FaultSpec(
                    kind=kind,
                    cloud_id=match["cloud_id"] and match["cloud_id"].lower(),
                    share=float(match["share"]) if match["share"] else None,
                    rate=float(match["rate"]) if match["rate"] else 1.0,
                    duration=float(match["duration"]) if match["duration"] else None,
                )
            except ValueError:
                raise ValueError(f"fault {item!r}: a number does not parse") from None
            if not 0 <= spec.rate <= 1 or (spec.share is not None and not 0 <= spec.share <= 1):
                raise ValueError(f"fault {item!r}: rates and shares are between 0 and 1")
            specs.append(spec)
        return cls(tuple(specs))
