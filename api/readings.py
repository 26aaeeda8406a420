"""A user's readings over a time range, their aggregates and their coverage.

GET /api/users/{cloud_id}/readings?start=&end=              paged JSON (default), JSON lines, CSV, Parquet
GET /api/users/{cloud_id}/readings/aggregate?start=&end=&interval=1m|15m|1h|1d
GET /api/users/{cloud_id}/coverage?start=&end=&gap=

Times are ISO 8601 (an instant without an offset is read in `tz`, else UTC) or Unix seconds; a
range is [start, end). `tz=` (an IANA zone such as Europe/Paris) adds local times next to the UTC
ones in JSON, each converted from its own instant, so they are right on both sides of a DST change;
CSV keeps its one layout (ingestion.readings_csv) and writes its times with the zone's offset.
The reading logic is in ingestion.retrieval; these views parse, check and render.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from itertools import chain
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from django.http import HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import APIException, NotFound
from rest_framework.pagination import BasePagination
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from api.schema import READ_ERRORS, error
from ingestion import parquet, parquet_readings, readings_csv, retrieval
from ingestion.archive.store import CONTENT_TYPE_JSONL
from ingestion.records import iso_local, iso_utc
from ingestion.retrieval import EARLIEST, LATEST

UNENCODED_OFFSET = re.compile(r"(\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}(?::?\d{2})?)$")
# The paged JSON form materialises its range to count it; longer ranges must stream.
JSON_MAX_RANGE = timedelta(days=1)
# Aggregates and coverage read every reading of their range before answering.
SUMMARY_MAX_RANGE = timedelta(days=31)


class ServiceUnavailable(APIException):
    status_code = 503
    default_detail = "The archive cannot be read right now; try again later."


# --- Renderers (content negotiation by ?format= or Accept) --------------------------------------


class JSONLinesRenderer(BaseRenderer):
    media_type = CONTENT_TYPE_JSONL
    format = "jsonl"
    charset = None

    def render(
        self, data: Any, accepted_media_type: Any = None, renderer_context: Any = None
    ) -> Any:
        return orjson.dumps(data, option=orjson.OPT_APPEND_NEWLINE)


class CSVRenderer(BaseRenderer):
    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: Any = None, renderer_context: Any = None
    ) -> Any:
        return orjson.dumps(data)


class ParquetRenderer(BaseRenderer):
    media_type = parquet.CONTENT_TYPE
    format = "parquet"
    charset = None

    def render(
        self, data: Any, accepted_media_type: Any = None, renderer_context: Any = None
    ) -> Any:
        return orjson.dumps(data)


# --- Query parameters ---------------------------------------------------------------------------


def parse_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise serializers.ValidationError(
            f"{name!r} is not a known IANA time zone (such as Europe/Paris or UTC)."
        ) from None


def parse_instant(text: str, tz: tzinfo) -> datetime:
    """ISO 8601 or Unix seconds as an aware UTC datetime; a naive ISO time is read in `tz`."""
    # An unencoded "+" of a UTC offset arrives as a space: 10:00:00+02:00 -> "10:00:00 02:00".
    text = UNENCODED_OFFSET.sub(r"\1+\2", text.strip())
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise serializers.ValidationError(
                f"{text!r} is neither ISO 8601 (2026-03-08T10:00:00Z) nor Unix seconds."
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=tz)
    else:
        if not math.isfinite(seconds) or not -1e11 < seconds < 1e11:
            raise serializers.ValidationError(
                f"{text!r} is out of range for Unix seconds (milliseconds, perhaps?)."
            )
        try:
            moment = datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise _out_of_range(text) from None
    try:
        moment = moment.astimezone(UTC)
    except (OverflowError, ValueError):
        # Within a day of year 1 or 9999, the offset takes the instant past what Python holds.
        raise _out_of_range(text) from None
    if not EARLIEST <= moment < LATEST:
        raise serializers.ValidationError(
            f"{text!r} is {iso_utc(moment)}, outside 2000-01-01 to 2100-01-01"
            " (Unix milliseconds instead of seconds, perhaps?)."
        )
    return moment


def _out_of_range(text: str) -> serializers.ValidationError:
    return serializers.ValidationError(f"{text!r} is outside 2000-01-01 to 2100-01-01.")


class RangeQuerySerializer(serializers.Serializer[Any]):
    start = serializers.CharField(
        help_text="Start of the range, included: ISO 8601 (2026-03-08T10:00:00Z; without an "
        "offset it is read in `tz`, or UTC) or Unix seconds (1772964000)."
    )
    end = serializers.CharField(help_text="End of the range, excluded; same forms as `start`.")
    tz = serializers.CharField(
        required=False,
        help_text="IANA time zone (Europe/Paris): adds local times to the output and is the zone "
        "of `start`/`end` given without an offset. UTC when absent.",
    )
    max_range: timedelta | None = None
    too_long = ""

    def validate_tz(self, value: str) -> ZoneInfo:
        return parse_zone(value)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        tz = attrs.get("tz") or UTC
        errors = {}
        for name in ("start", "end"):
            try:
                attrs[name] = parse_instant(attrs[name], tz)
            except serializers.ValidationError as exc:
                errors[name] = exc.detail
        if errors:
            raise serializers.ValidationError(errors)
        if attrs["end"] <= attrs["start"]:
            raise serializers.ValidationError("end must be after start.")
        if self.max_range and attrs["end"] - attrs["start"] > self.max_range:
            raise serializers.ValidationError(self.too_long)
        attrs["tz"] = attrs.get("tz")
        return attrs


def parse_query(serializer: serializers.Serializer[Any]) -> dict[str, Any]:
    """The validated query, or a 400 problem listing every value that does not validate."""
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def check_cloud_id(cloud_id: str) -> None:
    if not retrieval.has_records(cloud_id):
        raise NotFound(f"No user and no hour files with cloud_id {cloud_id}.")


# --- Readings -----------------------------------------------------------------------------------


class ReadingsQuerySerializer(RangeQuerySerializer):
    record_type = serializers.CharField(
        required=False, help_text="Only records of this type (demand, summation, price, …)."
    )
    format = serializers.ChoiceField(
        choices=["jsonl", "csv", "json", "parquet"],
        required=False,
        help_text="json (the default: paged, ranges up to one day), jsonl or csv (streamed, any "
        "range) or parquet (one file in the dataset's columns, ranges up to 31 days). The Accept "
        "header works too: application/json, application/x-ndjson, text/csv, "
        "application/vnd.apache.parquet.",
    )
    page = serializers.IntegerField(
        required=False, min_value=1, help_text="Page number of the json form."
    )


class JSONReadingsQuerySerializer(ReadingsQuerySerializer):
    max_range = JSON_MAX_RANGE
    too_long = (
        f"The range is longer than {JSON_MAX_RANGE.days} day, the most the paged JSON form "
        "serves: ask for format=jsonl or format=csv (Accept: application/x-ndjson or text/csv), "
        "which stream any range."
    )


class ParquetReadingsQuerySerializer(ReadingsQuerySerializer):
    max_range = SUMMARY_MAX_RANGE
    too_long = (
        f"The range is longer than {SUMMARY_MAX_RANGE.days} days, the most one Parquet file "
        "serves: ask for less at a time, or query the dataset (manage.py query)."
    )


def localized(record: dict[str, Any], tz: tzinfo | None) -> dict[str, Any]:
    if tz is None:
        return record
    record["meter_time_local"] = iso_local(
        datetime.fromtimestamp(record["meter_timestamp"], UTC), tz
    )
    received = record.get("received_at")
    if isinstance(received, str):
        try:
            record["received_at_local"] = iso_local(datetime.fromisoformat(received), tz)
        except ValueError:
            pass
    return record


def jsonl_chunks(hours: Iterable[list[dict[str, Any]]], tz: tzinfo | None) -> Iterator[bytes]:
    for records in hours:
        yield b"".join(
            orjson.dumps(localized(record, tz), option=orjson.OPT_APPEND_NEWLINE)
            for record in records
        )


def csv_chunks(hours: Iterator[list[dict[str, Any]]], tz: tzinfo | None) -> Iterator[bytes]:
    """The layout of ingestion.readings_csv, one chunk per hour; the header goes with the first
    hour, so that reading it decides between a 200 and a 503."""
    header = readings_csv.header_line()
    for records in hours:
        yield (
            header + "".join(readings_csv.record_line(record, tz) for record in records)
        ).encode()
        header = ""
    if header:
        yield header.encode()


READING_EXAMPLE = {
    "format_version": 1,
    "record_type": "demand",
    "cloud_id": "002738",
    "meter_timestamp": 1772964004,
    "meter_time": "2026-03-08T10:00:04Z",
    "received_at": "2026-03-08T10:00:05.120Z",
    "source": "cloud",
    "demand_kw": 1.25,
    "raw": {"Demand": "0x0004e2", "Multiplier": "0x00000001", "Divisor": "0x000003e8"},
}


class ReadingSerializer(serializers.Serializer[Any]):
    """One record as stored (docs/record-format.md), plus local times when `tz` is given."""

    format_version = serializers.IntegerField()
    record_type = serializers.CharField()
    cloud_id = serializers.CharField()
    meter_timestamp = serializers.IntegerField(help_text="Unix seconds of the meter's time.")
    meter_time = serializers.DateTimeField()
    received_at = serializers.DateTimeField()
    # A field named like Field.source (what DRF reads a value from): DRF keeps the two apart.
    source = serializers.CharField()  # type: ignore[assignment]
    demand_kw = serializers.FloatField(
        required=False, help_text="Demand records; other record types carry their own values."
    )
    raw = serializers.DictField(help_text="The meter's fields as received.")
    meter_time_local = serializers.CharField(required=False, help_text="With `tz`.")
    received_at_local = serializers.CharField(required=False, help_text="With `tz`.")


class UserReadingsView(APIView):
    renderer_classes = [JSONRenderer, JSONLinesRenderer, CSVRenderer, ParquetRenderer]

    @extend_schema(
        operation_id="user_readings",
        summary="A user's readings over a time range",
        description=(
            "Readings with meter time in [start, end), in time order, each (record_type, "
            "meter_timestamp) once, found through the hour files table, from local hour files and the "
            "archive alike. JSON lines and CSV stream any range; paged JSON serves up to one "
            "day. A failure to read the archive after streaming began ends the response early "
            "(an incomplete chunked body), never silently."
        ),
        parameters=[ReadingsQuerySerializer],
        responses={
            (200, "application/json"): inline_serializer(
                "PaginatedReadingList",
                {
                    "count": serializers.IntegerField(),
                    "next": serializers.URLField(allow_null=True),
                    "previous": serializers.URLField(allow_null=True),
                    "results": ReadingSerializer(many=True),
                },
            ),
            (200, CONTENT_TYPE_JSONL): OpenApiResponse(
                OpenApiTypes.STR,
                description="One Reading object per line.",
                examples=[OpenApiExample("demand", value=READING_EXAMPLE)],
            ),
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR,
                description="A header row, then one reading per row, in the one CSV layout "
                "of docs/record-format.md (the same columns whatever `tz`); with `tz`, times "
                "carry that zone's offset.",
            ),
            (200, parquet.CONTENT_TYPE): OpenApiResponse(
                OpenApiTypes.BINARY,
                description="One Parquet file: record_type, then the columns of the Parquet "
                "dataset (docs/record-format.md), every record type's value columns included; "
                "read from the dataset for the hours it holds, from JSON lines for the others.",
            ),
            400: error(
                "Bad time, zone or format, end not after start, or a range too long "
                "for the paged JSON form."
            ),
            **READ_ERRORS,
            406: error("The Accept header asks for a format not served here."),
            503: error("A verified hour could not be read from the archive."),
        },
    )
    def get(self, request: Request, cloud_id: str) -> Any:
        fmt = request.accepted_renderer.format
        serializer_class = {
            "json": JSONReadingsQuerySerializer,
            "parquet": ParquetReadingsQuerySerializer,
        }.get(fmt, ReadingsQuerySerializer)
        query = parse_query(serializer_class(data=request.query_params))
        check_cloud_id(cloud_id)
        hours = retrieval.iter_hours(
            cloud_id, query["start"], query["end"], query.get("record_type") or None
        )
        tz = query["tz"]
        name = f"{cloud_id}-{query['start']:%Y%m%dT%H%M%SZ}-{query['end']:%Y%m%dT%H%M%SZ}"
        if fmt == "parquet":
            try:
                table = parquet_readings.household_readings(
                    cloud_id, query["start"], query["end"], query.get("record_type") or None
                )
            except retrieval.ArchiveReadError as exc:
                raise ServiceUnavailable(str(exc)) from exc
            response: HttpResponseBase = HttpResponse(
                parquet.parquet_bytes(table), content_type=parquet.CONTENT_TYPE
            )
            response["Content-Disposition"] = f'attachment; filename="{name}.parquet"'
            return response
        if fmt == "json":
            try:
                records = [record for records in hours for record in records]
            except retrieval.ArchiveReadError as exc:
                raise ServiceUnavailable(str(exc)) from exc
            # The setting names a class; DRF imports it (the stubs see the dotted string).
            paginator = cast(type[BasePagination], api_settings.DEFAULT_PAGINATION_CLASS)()
            # Django's Paginator pages any sequence; the stubs ask for a QuerySet.
            page: list[dict[str, Any]] = paginator.paginate_queryset(records, request, view=self)  # type: ignore[arg-type, assignment]
            return paginator.get_paginated_response([localized(r, tz) for r in page])
        chunks = csv_chunks(hours, tz) if fmt == "csv" else jsonl_chunks(hours, tz)
        try:
            # The first hour is read before answering, so that an unreadable archive is a 503.
            first = next(chunks, b"")
        except retrieval.ArchiveReadError as exc:
            raise ServiceUnavailable(str(exc)) from exc
        response = StreamingHttpResponse(
            chain([first], chunks), content_type=request.accepted_renderer.media_type
        )
        if fmt == "csv":
            response["Content-Disposition"] = f'attachment; filename="{name}.csv"'
        return response


# --- Aggregates ---------------------------------------------------------------------------------


class AggregateQuerySerializer(RangeQuerySerializer):
    interval = serializers.ChoiceField(
        choices=list(retrieval.INTERVALS),
        default="1h",
        help_text="Length of each interval. 1m, 15m and 1h are aligned on UTC minutes and "
        "hours; 1d starts at midnight in `tz` (23 or 25 hours across DST changes).",
    )
    max_range = SUMMARY_MAX_RANGE
    too_long = f"The range is longer than {SUMMARY_MAX_RANGE.days} days: ask for less at a time."


class DemandBucketSerializer(serializers.Serializer[Any]):
    start = serializers.DateTimeField(help_text="Start of the interval (clipped to the range).")
    end = serializers.DateTimeField(help_text="End of the interval, excluded.")
    start_local = serializers.CharField(required=False, help_text="With `tz`.")
    end_local = serializers.CharField(required=False, help_text="With `tz`.")
    readings = serializers.IntegerField(help_text="Demand readings in the interval.")
    avg_demand_kw = serializers.FloatField(allow_null=True, help_text="Mean of the readings.")
    min_demand_kw = serializers.FloatField(allow_null=True)
    max_demand_kw = serializers.FloatField(allow_null=True)
    energy_kwh = serializers.FloatField(
        help_text="Net energy by trapezoid integration of demand over the covered time."
    )
    covered_seconds = serializers.FloatField(
        help_text="Time of the interval between readings no further apart than gap_seconds."
    )


class AggregateSerializer(serializers.Serializer[Any]):
    cloud_id = serializers.CharField()
    interval = serializers.CharField()
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    tz = serializers.CharField(allow_null=True)
    energy_method = serializers.CharField(help_text="Always `trapezoid`.")
    gap_seconds = serializers.FloatField(help_text="Longer gaps are not integrated over.")
    results = DemandBucketSerializer(many=True)


def _number(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


def bucket_document(bucket: retrieval.DemandBucket, tz: tzinfo | None) -> dict[str, Any]:
    document: dict[str, Any] = {"start": iso_utc(bucket.start), "end": iso_utc(bucket.end)}
    if tz is not None:
        document["start_local"] = iso_local(bucket.start, tz)
        document["end_local"] = iso_local(bucket.end, tz)
    document.update(
        readings=bucket.readings,
        avg_demand_kw=_number(bucket.avg_kw),
        min_demand_kw=bucket.min_kw,
        max_demand_kw=bucket.max_kw,
        energy_kwh=_number(bucket.energy_kwh),
        covered_seconds=_number(bucket.covered_seconds, 3),
    )
    return document


class UserAggregateView(APIView):
    renderer_classes = [JSONRenderer]

    @extend_schema(
        operation_id="user_readings_aggregate",
        summary="Demand per interval: mean, min, max, energy, readings",
        description=(
            "Every interval of [start, end) in order, empty ones included (readings 0, demand "
            "null). Energy is estimated by trapezoid integration of demand over time, bridging "
            "readings at most gap_seconds apart, split at interval boundaries, with the readings "
            "just outside the range used up to its edges; export counts negative."
        ),
        parameters=[AggregateQuerySerializer],
        responses={
            200: AggregateSerializer,
            400: error("Bad time, zone or interval, end not after start, or over 31 days."),
            **READ_ERRORS,
            503: error("A verified hour could not be read from the archive."),
        },
    )
    def get(self, request: Request, cloud_id: str) -> Response:
        query = parse_query(AggregateQuerySerializer(data=request.query_params))
        check_cloud_id(cloud_id)
        tz = query["tz"]
        try:
            buckets = retrieval.aggregate_demand(
                cloud_id,
                query["start"],
                query["end"],
                retrieval.INTERVALS[query["interval"]],
                tz or UTC,
            )
        except retrieval.ArchiveReadError as exc:
            raise ServiceUnavailable(str(exc)) from exc
        return Response(
            {
                "cloud_id": cloud_id,
                "interval": query["interval"],
                "start": iso_utc(query["start"]),
                "end": iso_utc(query["end"]),
                "tz": str(tz) if tz else None,
                "energy_method": "trapezoid",
                "gap_seconds": retrieval.DEFAULT_GAP_SECONDS,
                "results": [bucket_document(bucket, tz) for bucket in buckets],
            }
        )


# --- Coverage -----------------------------------------------------------------------------------


class CoverageQuerySerializer(RangeQuerySerializer):
    gap = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=86400,
        default=retrieval.DEFAULT_GAP_SECONDS,
        help_text="Seconds without any reading that make a gap.",
    )
    max_range = SUMMARY_MAX_RANGE
    too_long = f"The range is longer than {SUMMARY_MAX_RANGE.days} days: ask for less at a time."


class HourCoverageSerializer(serializers.Serializer[Any]):
    hour = serializers.DateTimeField(help_text="Start of the UTC hour.")
    hour_local = serializers.CharField(required=False, help_text="With `tz`.")
    expected = serializers.IntegerField(
        help_text="Readings expected at the meter's cadence in the part of the hour in range and "
        "past, from when the user was added and polling began, outside its pauses."
    )
    present = serializers.IntegerField(help_text="Distinct meter timestamps recorded.")
    covered_seconds = serializers.FloatField(help_text="Expected time not inside a gap.")
    coverage = serializers.FloatField(
        allow_null=True, help_text="covered_seconds over the hour's expected time."
    )


class GapSerializer(serializers.Serializer[Any]):
    start = serializers.DateTimeField(help_text="Last reading before the gap, or range start.")
    end = serializers.DateTimeField(help_text="First reading after the gap, or range end.")
    seconds = serializers.FloatField()
    failure_classes = serializers.ListField(
        child=serializers.CharField(), help_text="Of the incidents overlapping the gap."
    )
    incident_ids = serializers.ListField(child=serializers.IntegerField())


class CoverageSerializer(serializers.Serializer[Any]):
    cloud_id = serializers.CharField()
    start = serializers.DateTimeField()
    end = serializers.DateTimeField(help_text="The range end, or now if earlier.")
    cadence_seconds = serializers.FloatField()
    gap_seconds = serializers.FloatField()
    expected = serializers.IntegerField()
    present = serializers.IntegerField()
    covered_seconds = serializers.FloatField()
    coverage = serializers.FloatField(allow_null=True)
    hours = HourCoverageSerializer(many=True)
    gaps = GapSerializer(many=True)


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole > 0 else None


def coverage_document(
    cloud_id: str, result: retrieval.Coverage, tz: tzinfo | None
) -> dict[str, Any]:
    hours = []
    for hour in result.hours:
        document: dict[str, Any] = {"hour": iso_utc(hour.hour)}
        if tz is not None:
            document["hour_local"] = iso_local(hour.hour, tz)
        document.update(
            expected=hour.expected,
            present=hour.present,
            covered_seconds=round(hour.covered_seconds, 3),
            coverage=_ratio(hour.covered_seconds, hour.expected_seconds),
        )
        hours.append(document)
    return {
        "cloud_id": cloud_id,
        "start": iso_utc(result.start),
        "end": iso_utc(result.end),
        "cadence_seconds": result.cadence_seconds,
        "gap_seconds": result.gap_seconds,
        "expected": result.expected,
        "present": result.present,
        "covered_seconds": round(result.covered_seconds, 3),
        "coverage": _ratio(result.covered_seconds, result.expected_seconds),
        "hours": hours,
        "gaps": [
            {
                "start": iso_utc(gap.start),
                "end": iso_utc(gap.end),
                "seconds": round(gap.seconds, 3),
                "failure_classes": gap.failure_classes,
                "incident_ids": gap.incident_ids,
            }
            for gap in result.gaps
        ],
    }


class UserCoverageView(APIView):
    renderer_classes = [JSONRenderer]

    @extend_schema(
        operation_id="user_coverage",
        summary="Readings expected and present per hour, and the gaps with their causes",
        description=(
            "`expected` counts one reading per INGEST_METER_SECONDS (`cadence_seconds`) of the "
            "time the user is expected to be logged: from when it was added and polling began, "
            "outside its pauses (suspensions), as the console and /api/status/ count them. "
            "`coverage` is the share of that time not inside a gap. A gap is a stretch of it "
            "longer than `gap` seconds with no reading; it lists the failure classes of "
            "incidents overlapping it. Time after now is neither expected nor a gap."
        ),
        parameters=[CoverageQuerySerializer],
        responses={
            200: CoverageSerializer,
            400: error("Bad time, zone or gap, end not after start, or over 31 days."),
            **READ_ERRORS,
            503: error("A verified hour could not be read from the archive."),
        },
    )
    def get(self, request: Request, cloud_id: str) -> Response:
        query = parse_query(CoverageQuerySerializer(data=request.query_params))
        check_cloud_id(cloud_id)
        try:
            result = retrieval.coverage(cloud_id, query["start"], query["end"], query["gap"])
        except retrieval.ArchiveReadError as exc:
            raise ServiceUnavailable(str(exc)) from exc
        return Response(coverage_document(cloud_id, result, query["tz"]))
