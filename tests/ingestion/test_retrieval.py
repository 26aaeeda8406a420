"""Reading records back over a range, from local hour files and the archive on moto's S3."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine

from ingestion import hourfiles, retrieval
from ingestion.archive import rotation
from ingestion.models import HourFile, HourFileState, Incident, IncidentState
from ingestion.records import FailureClass
from tests.factories import logged_since
from tests.hour_files import demand_readings, manifest_row, ship_hour, write

CLOUD_ID = "002738"
NINE = datetime(2026, 3, 8, 9, tzinfo=UTC)


def timestamps(records: list[dict]) -> list[int]:
    return [record["meter_timestamp"] for record in records]


@pytest.mark.django_db
def test_it_returns_what_was_written_across_archived_gzip_and_local_hours(s3_archive) -> None:
    written = demand_readings(CLOUD_ID, NINE, count=1800)  # 09:00 to 12:00 every 6 s
    write(written)
    ship_hour(CLOUD_ID, NINE)
    ship_hour(CLOUD_ID, NINE + timedelta(hours=1), compressed=True)
    assert not hourfiles.local_path(CLOUD_ID, NINE).exists()

    records = list(retrieval.iter_readings(CLOUD_ID, NINE, NINE + timedelta(hours=3)))

    assert timestamps(records) == [r.meter_timestamp for r in written]
    assert [r["demand_kw"] for r in records] == [r.values["demand_kw"] for r in written]
    assert records[0]["raw"] == {"Demand": "0x000000"}


@pytest.mark.django_db
def test_hours_shipped_by_the_rotation_read_back_with_the_hour_still_on_disk(
    s3_archive, settings
) -> None:
    settings.ARCHIVE_COMPRESS = "gzip"
    written = demand_readings(CLOUD_ID, NINE, count=1200)
    write(written)

    report = rotation.rotate(hour=NINE, cloud_id=CLOUD_ID)

    assert report.ok
    row = HourFile.objects.get(cloud_id=CLOUD_ID, hour=NINE)
    assert row.state == HourFileState.VERIFIED and row.key.endswith(".jl.gz")
    assert not hourfiles.local_path(CLOUD_ID, NINE).exists()
    records = list(retrieval.iter_readings(CLOUD_ID, NINE, NINE + timedelta(hours=2)))
    assert timestamps(records) == [r.meter_timestamp for r in written]


@pytest.mark.django_db
def test_it_never_lists_the_bucket_an_unrecorded_object_stays_unseen(s3_archive, s3_client):
    write(demand_readings(CLOUD_ID, NINE, count=10))
    ship_hour(CLOUD_ID, NINE)
    stray_hour = NINE + timedelta(hours=1)
    s3_client.put_object(
        Bucket=s3_archive,
        Key=hourfiles.archive_key(CLOUD_ID, stray_hour),
        Body=demand_readings(CLOUD_ID, stray_hour, count=1)[0].to_line(),
    )

    records = list(retrieval.iter_readings(CLOUD_ID, NINE, NINE + timedelta(hours=2)))

    assert len(records) == 10


@pytest.mark.django_db
def test_an_hour_both_local_and_archived_with_a_late_part_comes_back_once_in_order(
    s3_archive,
) -> None:
    first_half = demand_readings(CLOUD_ID, NINE, count=300)
    write(first_half)
    main = hourfiles.local_path(CLOUD_ID, NINE)
    hourfiles.seal(main)
    # Verified in the archive, local copy not yet removed: the window both copies exist.
    ship_hour(CLOUD_ID, NINE, compressed=True, delete_local=False)
    late = demand_readings(CLOUD_ID, NINE + timedelta(minutes=30), count=300, step_seconds=6)
    # A repeat of a reading already in the main file arrives late too.
    write([*late, first_half[-1]])
    assert hourfiles.local_path(CLOUD_ID, NINE, part=1).exists()

    records = list(retrieval.iter_readings(CLOUD_ID, NINE, NINE + timedelta(hours=1)))

    assert timestamps(records) == [r.meter_timestamp for r in [*first_half, *late]]


@pytest.mark.django_db
def test_it_sorts_out_of_order_lines_skips_malformed_ones_and_honours_the_range() -> None:
    readings = demand_readings(CLOUD_ID, NINE, count=20)
    write(reversed(readings))
    with open(hourfiles.local_path(CLOUD_ID, NINE), "ab") as handle:
        handle.write(b'{"torn": \n')

    start, end = readings[5].meter_time, readings[15].meter_time
    records = list(retrieval.iter_readings(CLOUD_ID, start, end))

    assert timestamps(records) == [r.meter_timestamp for r in readings[5:15]]


@pytest.mark.django_db
def test_it_filters_by_record_type() -> None:
    demand = demand_readings(CLOUD_ID, NINE, count=3)
    summation = [replace(r, record_type="summation") for r in demand]
    write([*demand, *summation])

    everything = list(retrieval.iter_readings(CLOUD_ID, NINE, NINE + timedelta(hours=1)))
    only = list(retrieval.iter_readings(CLOUD_ID, NINE, NINE + timedelta(hours=1), "summation"))

    assert len(everything) == 6
    assert [r["record_type"] for r in everything[:2]] == ["demand", "summation"]
    assert {r["record_type"] for r in only} == {"summation"}


@pytest.mark.django_db
def test_a_verified_hour_missing_from_the_archive_raises_instead_of_looking_empty(
    s3_archive, s3_client
) -> None:
    write(demand_readings(CLOUD_ID, NINE, count=5))
    row = ship_hour(CLOUD_ID, NINE)
    s3_client.delete_object(Bucket=s3_archive, Key=row.key)

    with pytest.raises(retrieval.ArchiveReadError, match=row.key):
        list(retrieval.iter_readings(CLOUD_ID, NINE, NINE + timedelta(hours=1)))


@pytest.mark.django_db
def test_an_unverified_manifest_row_is_read_from_disk_only(s3_archive) -> None:
    write(demand_readings(CLOUD_ID, NINE, count=5))
    manifest_row(CLOUD_ID, NINE, state=HourFileState.FAILED)

    assert len(list(retrieval.iter_readings(CLOUD_ID, NINE, NINE + timedelta(hours=1)))) == 5


# --- Aggregates ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_energy_of_a_constant_demand_is_demand_times_time_in_every_interval() -> None:
    # Two hours at 2 kW, a reading every 6 s, starting a little before the range.
    write(demand_readings(CLOUD_ID, NINE - timedelta(minutes=1), 1300, demand_kw=lambda n: 2.0))

    hourly = retrieval.aggregate_demand(
        CLOUD_ID, NINE, NINE + timedelta(hours=2), retrieval.INTERVALS["1h"]
    )
    minutes = retrieval.aggregate_demand(
        CLOUD_ID, NINE, NINE + timedelta(hours=1), retrieval.INTERVALS["1m"]
    )

    assert [b.start for b in hourly] == [NINE, NINE + timedelta(hours=1)]
    assert hourly[0].energy_kwh == pytest.approx(2.0)
    assert hourly[0].readings == 600
    assert (hourly[0].avg_kw, hourly[0].min_kw, hourly[0].max_kw) == (2.0, 2.0, 2.0)
    assert len(minutes) == 60
    assert sum(b.energy_kwh for b in minutes) == pytest.approx(hourly[0].energy_kwh)
    assert all(b.covered_seconds == pytest.approx(60) for b in minutes)


@pytest.mark.django_db
def test_energy_integrates_a_ramp_by_trapezoids_split_at_interval_boundaries() -> None:
    # Demand rises 0.01 kW per 6-s reading: 0 kW at 09:00, 1 kW at 09:10, 2 kW at 09:20.
    write(demand_readings(CLOUD_ID, NINE, 201, demand_kw=lambda n: n / 100))

    buckets = retrieval.aggregate_demand(
        CLOUD_ID, NINE, NINE + timedelta(minutes=20), retrieval.INTERVALS["15m"]
    )

    # 0→1.5 kW over 15 min, then 1.5→2 kW over 5 min (the last reading sits on the range end).
    assert buckets[0].energy_kwh == pytest.approx(0.75 / 4)
    assert buckets[1].energy_kwh == pytest.approx(1.75 / 12)
    assert buckets[1].end == NINE + timedelta(minutes=20)


@pytest.mark.django_db
def test_energy_is_not_estimated_across_a_gap() -> None:
    before = demand_readings(CLOUD_ID, NINE, 100, demand_kw=lambda n: 3.0)
    after = demand_readings(CLOUD_ID, NINE + timedelta(minutes=30), 100, demand_kw=lambda n: 3.0)
    write([*before, *after])

    (bucket,) = retrieval.aggregate_demand(
        CLOUD_ID, NINE, NINE + timedelta(hours=1), retrieval.INTERVALS["1h"]
    )

    assert bucket.covered_seconds == pytest.approx(2 * 99 * 6)
    assert bucket.energy_kwh == pytest.approx(3.0 * 2 * 99 * 6 / 3600)


def test_days_start_at_local_midnight_and_last_23_hours_when_clocks_go_forward() -> None:
    paris = ZoneInfo("Europe/Paris")
    start = datetime(2026, 3, 28, tzinfo=paris).astimezone(UTC)
    end = datetime(2026, 3, 31, tzinfo=paris).astimezone(UTC)

    edges = retrieval.interval_boundaries(start, end, retrieval.INTERVALS["1d"], paris)

    lengths = [(b - a) / timedelta(hours=1) for a, b in zip(edges, edges[1:], strict=False)]
    assert lengths == [24, 23, 24]
    assert edges[1] == datetime(2026, 3, 28, 23, tzinfo=UTC)


# --- Coverage -----------------------------------------------------------------------------------


@pytest.mark.django_db
@time_machine.travel(datetime(2026, 3, 8, 12, tzinfo=UTC), tick=False)
def test_coverage_shows_an_outage_as_a_gap_with_the_failure_class_behind_it() -> None:
    user = logged_since(CLOUD_ID, NINE - timedelta(days=1))
    outage_start, outage_end = NINE + timedelta(minutes=20), NINE + timedelta(minutes=50)
    readings = [
        r
        for r in demand_readings(CLOUD_ID, NINE, count=1200, step_seconds=6)
        if not outage_start < r.meter_time < outage_end
    ]
    write(readings)
    Incident.objects.create(
        user=user,
        failure_class=FailureClass.GATEWAY_UNREACHABLE,
        state=IncidentState.RESOLVED,
        opened_at=outage_start + timedelta(seconds=6),
        resolved_at=outage_end,
    )
    Incident.objects.create(
        user=user,
        failure_class=FailureClass.TIMEOUT,
        state=IncidentState.RESOLVED,
        opened_at=NINE - timedelta(days=1),
        resolved_at=NINE - timedelta(days=1, minutes=-5),
    )

    result = retrieval.coverage(CLOUD_ID, NINE, NINE + timedelta(hours=3))

    (gap, tail) = result.gaps
    assert (gap.start, gap.end) == (outage_start, outage_end)
    assert gap.failure_classes == [FailureClass.GATEWAY_UNREACHABLE]
    # Readings stop at 11:00 and "now" is 12:00: the last hour is one gap, without a cause.
    assert (tail.start, tail.end) == (NINE + timedelta(hours=2) - timedelta(seconds=6), result.end)
    assert tail.failure_classes == []
    nine, ten, eleven = result.hours
    # Polled every 6 s, a meter publishing every 10 s has 360 readings an hour.
    assert (nine.expected, nine.present) == (360, 600 - 299)
    assert nine.covered_seconds == pytest.approx(3600 - 30 * 60)
    assert (ten.present, ten.covered_seconds) == (600, 3600 - 6)
    assert (eleven.present, eleven.covered_seconds) == (0, 0)


@pytest.mark.django_db
@time_machine.travel(datetime(2026, 3, 8, 9, 30, tzinfo=UTC), tick=False)
def test_coverage_expects_nothing_after_now() -> None:
    logged_since(CLOUD_ID, NINE - timedelta(days=1))
    write(demand_readings(CLOUD_ID, NINE, count=180, step_seconds=10))

    result = retrieval.coverage(CLOUD_ID, NINE, NINE + timedelta(hours=2))

    assert result.end == NINE + timedelta(minutes=30)
    assert [(h.expected, h.present) for h in result.hours] == [(180, 180)]
    assert result.gaps == []
