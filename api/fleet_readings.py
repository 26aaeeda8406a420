"""Fleet-wide readings from the Parquet dataset, or from the readings table where it holds them.

GET /api/fleet/readings/aggregate?start=&end=&interval=1m|15m|1h|1d

Per interval, each household's mean demand first, then across the households that reported:
how many, their mean, percentiles and total (the fleet's demand). Computed by DuckDB over the
dataset (ingestion.parquet_query): hours not exported yet (the current one, or one waiting for
its hour files) are not in it, which `hours_exported` and `hours_in_range` show. When the SQL
readings store holds every hour of the range (ingestion.readings_store.fleet_loaded), the same
figures come from the table in one query instead (`source`: `table`).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api.readings import AggregateQuerySerializer, iso_local, parse_query
from api.schema import READ_ERRORS, error
from ingestion import hourfiles, parquet_query, readings_store, retrieval
from ingestion.models import DatasetHour
from ingestion.records import iso_utc


class FleetAggregateQuerySerializer(AggregateQuerySerializer):
    interval = serializers.ChoiceField(
        choices=list(retrieval.INTERVALS),
        default="15m",
        help_text="Length of each interval, aligned in UTC (1d: UTC days).",
    )


class FleetBucketSerializer(serializers.Serializer[Any]):
    start = serializers.DateTimeField(help_text="Start of the interval (clipped to the range).")
    end = serializers.DateTimeField(help_text="End of the interval, excluded.")
    start_local = serializers.CharField(required=False, help_text="With `tz`.")
    households = serializers.IntegerField(help_text="Households with a demand reading in it.")
    readings = serializers.IntegerField()
    mean_kw = serializers.FloatField(
        allow_null=True, help_text="Mean of the households' mean demands."
    )
    total_kw = serializers.FloatField(
        allow_null=True, help_text="Sum of the households' mean demands: the fleet's demand."
    )
    p5_kw = serializers.FloatField(allow_null=True, help_text="5th percentile.")
    p25_kw = serializers.FloatField(allow_null=True, help_text="25th percentile.")
    p50_kw = serializers.FloatField(allow_null=True, help_text="Median.")
    p75_kw = serializers.FloatField(allow_null=True, help_text="75th percentile.")
    p95_kw = serializers.FloatField(allow_null=True, help_text="95th percentile.")


class FleetAggregateSerializer(serializers.Serializer[Any]):
    interval = serializers.CharField()
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    # A field named like Field.source (what DRF reads a value from): DRF keeps the two apart.
    source = serializers.CharField(  # type: ignore[assignment]
        help_text="`table` when the readings table (READINGS_STORE) holds every hour of the range, "
        "else `parquet`: the dataset."
    )
    hours_in_range = serializers.IntegerField()
    hours_exported = serializers.IntegerField(
        help_text="Hours of the range in the dataset; the others are not counted."
    )
    results = FleetBucketSerializer(many=True)


def fleet_demand(
    start: datetime, end: datetime, step: timedelta
) -> tuple[str, list[parquet_query.FleetBucket]]:
    """(source, buckets): from the readings table, in one query, when the store holds every hour
    of the range; else from the Parquet dataset."""
    if readings_store.fleet_loaded(start, end):
        return "table", readings_store.fleet_demand(start, end, step)
    return "parquet", parquet_query.fleet_demand(start, end, step)


def fleet_document(start: datetime, end: datetime, interval: str, tz: Any) -> dict[str, Any]:
    step = retrieval.INTERVALS[interval]
    source, buckets = fleet_demand(start, end, step)
    boundaries = retrieval.interval_boundaries(start, end, step)
    found = {bucket.start: bucket for bucket in buckets}
    results = []
    for low, high in zip(boundaries, boundaries[1:], strict=False):
        aligned = datetime.fromtimestamp(
            low.timestamp() // step.total_seconds() * step.total_seconds(), UTC
        )
        bucket = found.get(aligned)
        document: dict[str, Any] = {"start": iso_utc(low), "end": iso_utc(high)}
        if tz is not None:
            document["start_local"] = iso_local(low, tz)
        document.update(
            households=bucket.households if bucket else 0,
            readings=bucket.readings if bucket else 0,
            mean_kw=_rounded(bucket.mean_kw) if bucket else None,
            total_kw=_rounded(bucket.total_kw) if bucket else None,
        )
        for p in parquet_query.PERCENTILES:
            document[f"p{p}_kw"] = _rounded(bucket.percentiles_kw[p]) if bucket else None
        results.append(document)
    first_hour = hourfiles.hour_floor(start)
    hours = math.ceil((end - first_hour) / hourfiles.HOUR)
    exported = DatasetHour.objects.filter(hour__gte=first_hour, hour__lt=end, version__gt=0)
    return {
        "interval": interval,
        "start": iso_utc(start),
        "end": iso_utc(end),
        "source": source,
        "hours_in_range": hours,
        "hours_exported": exported.count(),
        "results": results,
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


class FleetAggregateView(APIView):
    renderer_classes = [JSONRenderer]

    @extend_schema(
        operation_id="fleet_readings_aggregate",
        summary="Fleet demand per interval: households reporting, mean, percentiles, total",
        description=(
            "Every interval of [start, end) in order, empty ones included (households 0, demand "
            "null). Per interval each household's readings are averaged first; `mean_kw` and "
            "the percentiles are over those household means, and `total_kw` is their sum, the "
            "fleet's demand. Read from the Parquet dataset (hours not exported yet are missing), or "
            "from the readings table when it holds every hour of the range."
        ),
        parameters=[FleetAggregateQuerySerializer],
        responses={
            200: FleetAggregateSerializer,
            400: error("Bad time, zone or interval, end not after start, or over 31 days."),
            401: READ_ERRORS[401],
        },
    )
    def get(self, request: Request) -> Response:
        query = parse_query(FleetAggregateQuerySerializer(data=request.query_params))
        return Response(
            fleet_document(query["start"], query["end"], query["interval"], query["tz"])
        )
