"""Simulated meters: per-gateway demand curves, energy totals and prices, fully deterministic.

Everything a meter reports is a pure function of (seed, gateway index, record type, update index):
when each update happens, its value and how the firmware encodes it. So the readings a meter
produced over any time window can be computed exactly afterwards (the simulator's ground truth).

Reading k of a record type becomes current at `phase + k * period` (unix seconds, a float) and stays
current until reading k + 1; its meter timestamp is that moment rounded down to the second. Periods
are drawn per gateway: demand 8-10 s (so 6-second polls see repeats), summation 60-75 s, price
15 minutes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from ingestion.eagle.record_types import CURRENCIES, DEMAND, RECORD_TYPES, ZIGBEE_EPOCH

MASK64 = (1 << 64) - 1


def mix(*parts: int) -> int:
    """A 64-bit hash of integers (splitmix64 steps): cheap, stable across runs and platforms."""
    state = 0x9E3779B97F4A7C15
    for part in parts:
        state = (state ^ (part & MASK64)) * 0xBF58476D1CE4E5B9 & MASK64
        state = (state ^ (state >> 27)) * 0x94D049BB133111EB & MASK64
        state ^= state >> 31
    return state


def unit_noise(*parts: int) -> float:
    """A deterministic number in [-1, 1)."""
    return mix(*parts) / (1 << 63) - 1.0


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a meter's readings of one type are updated."""

    period: float
    phase: float

    def index_at(self, moment: float) -> int:
        """The reading current at `moment` (unix seconds)."""
        return math.floor((moment - self.phase) / self.period)

    def starts_at(self, k: int) -> float:
        return self.phase + k * self.period

    def timestamp(self, k: int) -> int:
        return math.floor(self.starts_at(k))

    def indices(self, start: float, end: float) -> range:
        """Every reading that was current at some moment in [start, end]."""
        return range(self.index_at(start), self.index_at(end) + 1)


@dataclass(frozen=True, slots=True)
class Meter:
    """One simulated household: its account, hardware and consumption profile."""

    seed: int
    index: int
    cloud_id: str
    email: str
    password: str
    device_mac: str
    meter_mac: str
    utc_offset_hours: int
    base_kw: float
    morning_kw: float
    evening_kw: float
    noise_kw: float
    solar_kw: float
    demand_digits: int
    sends_zero_multiplier: bool
    currency: int
    offers_price: bool
    start_kwh: float
    installed_at: int
    schedules: dict[str, Schedule]

    @classmethod
    def create(cls, seed: int, index: int) -> Meter:
        rng = random.Random(f"rainlog-simulator/{seed}/{index}")
        cloud_id = f"{index + 1:06x}"
        schedules = {
            name: Schedule(period, rng.uniform(0, period))
            for name, model in MODELS.items()
            for period in [rng.uniform(*model.periods)]
        }
        return cls(
            seed=seed,
            index=index,
            cloud_id=cloud_id,
            email=f"household-{cloud_id}@example.net",
            password=f"{rng.getrandbits(64):016x}",
            device_mac=f"0xd8d5b9{rng.getrandbits(40):010x}",
            meter_mac=f"0x001350{rng.getrandbits(40):010x}",
            utc_offset_hours=rng.choice((-8, -7, -6, -5)),
            base_kw=rng.uniform(0.15, 0.6),
            morning_kw=rng.uniform(0.4, 2.0),
            evening_kw=rng.uniform(1.0, 4.0),
            noise_kw=rng.uniform(0.03, 0.3),
            # About a third of households have solar panels that export at midday.
            solar_kw=rng.uniform(2.5, 7.0) if rng.random() < 0.35 else 0.0,
            # Firmware differs: demand in 24-bit (6 hex digits) or 32-bit (8 digits) fields, and
            # some send a Multiplier of 0, which means 1.
            demand_digits=rng.choice((6, 8)),
            sends_zero_multiplier=rng.random() < 0.2,
            currency=840 if rng.random() < 0.85 else 124,
            offers_price=rng.random() < 0.75,
            start_kwh=rng.uniform(0, 2000),
            # Meters count from their installation, between 2012 and 2024.
            installed_at=rng.randint(1_325_376_000, 1_704_067_200),
            schedules=schedules,
        )

    def local_hour(self, unix: float) -> float:
        return (unix / 3600 + self.utc_offset_hours) % 24

    def solar_share(self, unix: float) -> float:
        hour = self.local_hour(unix)
        return max(0.0, math.sin(math.pi * (hour - 6) / 12)) ** 1.5 if 6 < hour < 18 else 0.0


def _bump(hour: float, centre: float, width: float) -> float:
    return math.exp(-(((hour - centre) / width) ** 2) / 2)


class ReadingModel:
    """How one record type's readings are produced and encoded by the simulated firmware."""

    name: ClassVar[str]
    periods: ClassVar[tuple[float, float]]
    # The raw integers of a false zero read, or None if this type has none.
    false_zero: ClassVar[tuple[int, ...] | None] = None

    @property
    def element(self) -> str:
        """Root element of the cloud/legacy reply."""
        return RECORD_TYPES[self.name].cloud_elements[0]

    def offered(self, meter: Meter) -> bool:
        return True

    def raw(self, meter: Meter, k: int) -> tuple[int, ...]:
        """The integers the meter holds for reading k."""
        raise NotImplementedError

    def values(self, meter: Meter, raw: tuple[int, ...]) -> dict[str, Any]:
        """What a correct decoder makes of `raw`: the ground truth."""
        raise NotImplementedError

    def cloud_fields(
        self, meter: Meter, timestamp: int, raw: tuple[int, ...]
    ) -> list[tuple[str, str]]:
        raise NotImplementedError

    def eagle200_variables(
        self, meter: Meter, raw: tuple[int, ...] | None
    ) -> list[tuple[str, str, str]]:
        """(name, value, units) of the EAGLE-200 variables; `raw` None means not offered."""
        raise NotImplementedError


class DemandModel(ReadingModel):
    name = DEMAND
    periods = (8.0, 10.0)
    false_zero = (0,)

    def raw(self, meter: Meter, k: int) -> tuple[int, ...]:
        unix = meter.schedules[self.name].timestamp(k)
        hour = meter.local_hour(unix)
        kw = (
            meter.base_kw
            + meter.morning_kw * _bump(hour, 7.5, 1.2)
            + meter.evening_kw * _bump(hour, 19.0, 2.0)
            + meter.noise_kw * unit_noise(meter.seed, meter.index, k)
            - meter.solar_kw * meter.solar_share(unix)
        )
        watts = round(kw * 1000)
        # An exact 0 kW is what a failed read looks like; a real meter in use never stays there.
        return (watts or 1,)

    def values(self, meter: Meter, raw: tuple[int, ...]) -> dict[str, Any]:
        return {"demand_kw": raw[0] / 1000}

    def cloud_fields(
        self, meter: Meter, timestamp: int, raw: tuple[int, ...]
    ) -> list[tuple[str, str]]:
        bits = 4 * meter.demand_digits
        demand = f"0x{raw[0] & ((1 << bits) - 1):0{meter.demand_digits}x}"
        return [
            ("DeviceMacId", meter.device_mac),
            ("MeterMacId", meter.meter_mac),
            ("TimeStamp", f"0x{timestamp - ZIGBEE_EPOCH:08x}"),
            ("Demand", demand),
            ("Multiplier", "0x00000000" if meter.sends_zero_multiplier else "0x00000001"),
            ("Divisor", "0x000003e8"),
            ("DigitsRight", "0x03"),
            ("DigitsLeft", "0x0f"),
            ("SuppressLeadingZero", "Y"),
        ]

    def eagle200_variables(
        self, meter: Meter, raw: tuple[int, ...] | None
    ) -> list[tuple[str, str, str]]:
        assert raw is not None
        return [("zigbee:InstantaneousDemand", f"{raw[0] / 1000:.6f}", "kW")]


class SummationModel(ReadingModel):
    name = "summation"
    periods = (60.0, 75.0)
    false_zero = (0, 0)

    def raw(self, meter: Meter, k: int) -> tuple[int, ...]:
        unix = meter.schedules[self.name].timestamp(k)
        hours = max(0.0, (unix - meter.installed_at) / 3600)
        # Average import follows the household's profile, with a daily swing smaller than the
        # mean so that the total only ever grows.
        mean_kw = meter.base_kw + 0.15 * (meter.morning_kw + meter.evening_kw)
        swing = 0.8 * mean_kw * 24 / (2 * math.pi) * math.sin(2 * math.pi * hours / 24)
        delivered = meter.start_kwh + mean_kw * hours + swing
        received = 0.1 * meter.solar_kw * hours
        return (math.floor(delivered * 1000), math.floor(received * 1000))

    def values(self, meter: Meter, raw: tuple[int, ...]) -> dict[str, Any]:
        return {"delivered_kwh": raw[0] / 1000, "received_kwh": raw[1] / 1000}

    def cloud_fields(
        self, meter: Meter, timestamp: int, raw: tuple[int, ...]
    ) -> list[tuple[str, str]]:
        return [
            ("DeviceMacId", meter.device_mac),
            ("MeterMacId", meter.meter_mac),
            ("TimeStamp", f"0x{timestamp - ZIGBEE_EPOCH:08x}"),
            ("SummationDelivered", f"0x{raw[0]:012x}"),
            ("SummationReceived", f"0x{raw[1]:012x}"),
            ("Multiplier", "0x00000001"),
            ("Divisor", "0x000003e8"),
            ("DigitsRight", "0x03"),
            ("DigitsLeft", "0x0f"),
            ("SuppressLeadingZero", "Y"),
        ]

    def eagle200_variables(
        self, meter: Meter, raw: tuple[int, ...] | None
    ) -> list[tuple[str, str, str]]:
        assert raw is not None
        return [
            ("zigbee:CurrentSummationDelivered", f"{raw[0] / 1000:.6f}", "kWh"),
            ("zigbee:CurrentSummationReceived", f"{raw[1] / 1000:.6f}", "kWh"),
        ]


# Time-of-use tiers by local hour: (tier, price per kWh in ten-thousandths).
TIERS = ((0, 1104), (1, 1893), (2, 3127))


class PriceModel(ReadingModel):
    name = "price"
    periods = (900.0, 900.0)

    def offered(self, meter: Meter) -> bool:
        return meter.offers_price

    def raw(self, meter: Meter, k: int) -> tuple[int, ...]:
        hour = meter.local_hour(meter.schedules[self.name].timestamp(k))
        tier, price = TIERS[2] if 16 <= hour < 21 else TIERS[1] if 7 <= hour < 16 else TIERS[0]
        return (price + meter.index % 50, tier)

    def values(self, meter: Meter, raw: tuple[int, ...]) -> dict[str, Any]:
        return {"price": raw[0] / 10**4, "currency": CURRENCIES[meter.currency], "tier": raw[1]}

    def cloud_fields(
        self, meter: Meter, timestamp: int, raw: tuple[int, ...]
    ) -> list[tuple[str, str]]:
        price, digits, tier = (raw[0], 4, raw[1]) if self.offered(meter) else (0xFFFFFFFF, 0xFF, 0)
        return [
            ("DeviceMacId", meter.device_mac),
            ("MeterMacId", meter.meter_mac),
            ("TimeStamp", f"0x{timestamp - ZIGBEE_EPOCH:08x}"),
            ("Price", f"0x{price:08x}"),
            ("Currency", f"0x{meter.currency:04x}"),
            ("TrailingDigits", f"0x{digits:02x}"),
            ("Tier", f"0x{tier:02x}"),
            ("StartTime", f"0x{timestamp - ZIGBEE_EPOCH:08x}"),
            ("Duration", "0x000f"),
            ("RateLabel", f"Tier {tier}"),
        ]

    def eagle200_variables(
        self, meter: Meter, raw: tuple[int, ...] | None
    ) -> list[tuple[str, str, str]]:
        if raw is None or not self.offered(meter):
            return [
                ("zigbee:Price", "invalid", ""),
                ("zigbee:PriceCurrency", CURRENCIES[meter.currency], ""),
                ("zigbee:PriceTier", "0", ""),
            ]
        return [
            ("zigbee:Price", f"{raw[0] / 10**4:.6f}", f"{CURRENCIES[meter.currency]}/kWh"),
            ("zigbee:PriceCurrency", CURRENCIES[meter.currency], ""),
            ("zigbee:PriceTier", str(raw[1]), ""),
        ]


MODELS: dict[str, ReadingModel] = {
    model.name: model for model in (DemandModel(), SummationModel(), PriceModel())
}
# Cloud/legacy command name -> model, and EAGLE-200 variable name -> model.
COMMANDS = {RECORD_TYPES[name].cloud_command: model for name, model in MODELS.items()}
VARIABLES = {
    variable: model
    for name, model in MODELS.items()
    for variable in RECORD_TYPES[name].eagle200_variables
}


def produced(meter: Meter, record_type: str, start: float, end: float) -> Iterator[tuple[int, int]]:
    """(update index, meter timestamp) of every reading current at some moment in [start, end]."""
    model = MODELS[record_type]
    if not model.offered(meter):
        return
    schedule = meter.schedules[record_type]
    for k in schedule.indices(start, end):
        yield k, schedule.timestamp(k)
