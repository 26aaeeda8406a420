"""A realistic EAGLE simulator: many gateways, the cloud and local protocols, injectable faults.

    from ingestion.eagle.simulator import Simulator
    with Simulator(users=100, latency=0.2, seed=1) as sim:
        ...  # EAGLE_CLOUD_URL = sim.cloud_url; local gateways at sim.gateway_address(cloud_id)

See server.py for the routes and the meaning of ground truth, meters.py for the meters and
faults.py for fault kinds and plans. `manage.py run_simulator` runs one in the foreground.
"""

from ingestion.eagle.simulator.faults import Fault, FaultKind, FaultPlan, FaultSpec
from ingestion.eagle.simulator.server import GroundTruthReading, Simulator

__all__ = ["Fault", "FaultKind", "FaultPlan", "FaultSpec", "GroundTruthReading", "Simulator"]
