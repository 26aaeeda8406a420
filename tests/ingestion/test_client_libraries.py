"""The simulator against the client libraries Home Assistant reads EAGLEs with: `aioeagle` (the
EAGLE-200) and `eagle100` (the legacy EAGLE). They connect, tell the two generations apart as
Home Assistant's setup does, and read the values of the simulator's ground truth."""

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

import aioeagle
import aiohttp
import pytest
from eagle100 import Eagle as Eagle100

from ingestion.eagle.simulator import Simulator
from ingestion.eagle.simulator.server import Gateway
from tests.polling import Clock

# 10:00 UTC is night in every simulated household (US time zones): no solar export. eagle100
# reads demand as 32-bit, so a 24-bit negative demand would come out wrong whatever we send.
NIGHT = datetime(2026, 3, 2, 10, tzinfo=UTC).timestamp()
EAGLE_200 = "eagle-200"
LEGACY = "eagle-100"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(users=4, seed=11, clock=Clock(NIGHT)) as simulator:
        yield simulator


def host(sim: Simulator, cloud_id: str, generation: str) -> str:
    """The `host` the libraries take: they add `/cgi-bin/post_manager` themselves."""
    return sim.gateway_address(cloud_id, generation).removeprefix("http://")


async def classify(cloud_id: str, install_code: str, address: str) -> tuple[str | None, str | None]:
    """Home Assistant's rainforest_eagle setup (`async_get_type`): ask aioeagle for the device
    list; a gateway that gives none is asked get_network_info through eagle100, whose reply
    names a legacy EAGLE's model. A reply without a device list (a legacy EAGLE's `Error:
    Unknown command`) counts as none, like a failed request."""
    async with aiohttp.ClientSession() as session:
        hub = aioeagle.EagleHub(session, cloud_id, install_code, host=address)
        try:
            meters = await hub.get_device_list()
        except (aiohttp.ClientError, KeyError):
            meters = None
    if meters is not None:
        return EAGLE_200, meters[0].hardware_address if meters else None
    reader = Eagle100(cloud_id, install_code, address)
    response = await asyncio.to_thread(reader.get_network_info)
    if response.get("NetworkInfo", {}).get("ModelId") == "Z109-EAGLE":
        return LEGACY, None
    return None, None


def served(sim: Simulator, cloud_id: str, record_type: str) -> dict:
    """The values of the one reading of a type the simulator served to the library."""
    (truth,) = [t for t in sim.ground_truth(cloud_id, record_type) if t.served]
    return truth.values


def test_home_assistant_classifies_each_generation_and_finds_the_eagle200s_meter(
    sim: Simulator,
) -> None:
    for cloud_id, gateway in sim.gateways.items():
        password = gateway.meter.password
        as_200 = asyncio.run(classify(cloud_id, password, host(sim, cloud_id, "eagle200")))
        as_legacy = asyncio.run(classify(cloud_id, password, host(sim, cloud_id, "legacy")))

        assert as_200 == (EAGLE_200, gateway.meter.meter_mac)
        assert as_legacy == (LEGACY, None)


def test_aioeagle_reads_the_ground_truth_from_a_simulated_eagle200(sim: Simulator) -> None:
    gateway: Gateway = next(g for g in sim.gateways.values() if g.meter.offers_price)
    meter = gateway.meter

    async def query() -> tuple[dict, dict]:
        async with aiohttp.ClientSession() as session:
            hub = aioeagle.EagleHub(
                session, meter.cloud_id, meter.password, host=host(sim, meter.cloud_id, "eagle200")
            )
            # What Home Assistant's coordinator does every 30 s.
            electric_meter = aioeagle.ElectricMeter.create_instance(hub, meter.meter_mac)
            data = await electric_meter.get_device_query()
            return {name: var["Value"] for name, var in data.items()}, electric_meter.details

    values, details = asyncio.run(query())

    demand = served(sim, meter.cloud_id, "demand")
    totals = served(sim, meter.cloud_id, "summation")
    price = served(sim, meter.cloud_id, "price")
    assert float(values["zigbee:InstantaneousDemand"]) == demand["demand_kw"]
    assert float(values["zigbee:CurrentSummationDelivered"]) == totals["delivered_kwh"]
    assert float(values["zigbee:CurrentSummationReceived"]) == totals["received_kwh"]
    assert float(values["zigbee:Price"]) == price["price"]
    assert details["ConnectionStatus"] == "Connected"
    # One LastContact for the device: the newest reading the gateway holds.
    newest = max(t.meter_timestamp for t in sim.ground_truth(meter.cloud_id) if t.served)
    assert int(details["LastContact"], 16) == newest


def test_aioeagle_is_refused_with_wrong_credentials(sim: Simulator) -> None:
    meter = next(iter(sim.gateways.values())).meter

    async def list_devices() -> None:
        async with aiohttp.ClientSession() as session:
            hub = aioeagle.EagleHub(
                session, meter.cloud_id, "wrong", host=host(sim, meter.cloud_id, "eagle200")
            )
            await hub.get_device_list()

    with pytest.raises(aioeagle.BadAuth):
        asyncio.run(list_devices())


def test_eagle100_reads_the_ground_truth_from_a_simulated_legacy_eagle(sim: Simulator) -> None:
    for cloud_id, gateway in sim.gateways.items():
        reader = Eagle100(cloud_id, gateway.meter.password, host(sim, cloud_id, "legacy"))

        # What Home Assistant's coordinator reads of a legacy EAGLE.
        demand = reader.get_instantaneous_demand()["InstantaneousDemand"]
        totals = reader.get_current_summation()["CurrentSummation"]

        truth = served(sim, cloud_id, "demand")
        assert truth["demand_kw"] > 0
        assert demand["Demand"] == truth["demand_kw"]
        assert totals["SummationDelivered"] == served(sim, cloud_id, "summation")["delivered_kwh"]
        assert totals["SummationReceived"] == served(sim, cloud_id, "summation")["received_kwh"]
