"""The console's fleet demand curve: measured from the Parquet dataset for exported hours (every
household counted), estimated from the sample only after them."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine

from ingestion import parquet_export
from ingestion.archive import rotation
from ingestion.console import dashboard
from tests.hour_files import demand_readings, write

NOON = datetime(2026, 3, 8, 12, tzinfo=UTC)
NOW = datetime(2026, 3, 8, 13, 20, tzinfo=UTC)

pytestmark = pytest.mark.django_db


def test_exported_hours_are_measured_from_the_dataset(any_archive: Any) -> None:
    # Three households at 1, 2 and 4 kW from noon; only noon's hour is shipped and exported.
    for cloud_id, kw in (("00a1", 1.0), ("00a2", 2.0), ("00a3", 4.0)):
        write(demand_readings(cloud_id, NOON, 800, demand_kw=lambda n, kw=kw: kw))
    with time_machine.travel(NOON + timedelta(hours=1, minutes=5), tick=False):
        assert rotation.rotate().ok
        assert parquet_export.export().exported == 1

    series = dashboard.fleet_demand(NOW)

    noon = series.times.index(int(NOON.timestamp()))
    assert series.measured[noon : noon + 4] == [True] * 4
    assert series.fleet_kw[noon : noon + 4] == [7.0] * 4
    # 13:00 is not exported yet: left to the sample (no logging household here, so no value).
    assert series.measured[noon + 4 :] == [False, False]
    assert series.fleet_kw[noon + 4 :] == [None, None]
    assert not any(series.measured[:noon])
