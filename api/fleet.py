"""Operators' endpoints: hour files, fleet status and incidents.

GET  /api/logfiles/                      the manifest; ?cloud_id=, ?hour_after=, ?hour_before=, ?state=
GET  /api/logfiles/{id}/                 one hour file
GET  /api/logfiles/{id}/download         its bytes, from disk or the archive; ?presigned=1 for a
                                         short-lived S3 URL instead
GET  /api/status/                        the fleet at a glance (ingestion.console.dashboard.fleet_summary)
GET  /api/incidents/                     ?cloud_id=, ?failure_class=, ?state=, ?since=, ?until=
GET  /api/incidents/{id}/                one incident
POST /api/incidents/{id}/resolve         staff operators close an open incident by hand
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django_filters import rest_framework as filters
from django_filters.fields import IsoDateTimeField
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import generics, serializers, status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api.readings import JSONErrorsMixin, ServiceUnavailable
from api.schema import FIELD_ERRORS, FORBIDDEN, READ_ERRORS, UNAUTHENTICATED, error
from ingestion import retrieval
from ingestion.console import dashboard
from ingestion.models import (
    FAILURE_CLASS_CHOICES,
    HourFile,
    HourFileState,
    Incident,
    IncidentState,
)
from ingestion.records import iso_utc

TRUE_VALUES = {"1", "true", "yes", "on"}
FALSE_VALUES = {"", "0", "false", "no", "off"}


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The object is not in a state that allows this."


class UTCIsoDateTimeField(IsoDateTimeField):
    """ISO 8601 times, turned to UTC: PostgreSQL refuses UTC offsets past 15:59, which Python
    accepts (+23:45 made a server error)."""

    def to_python(self, value: Any) -> datetime | None:
        moment = super().to_python(value)
        if moment is None:
            return None
        try:
            return moment.astimezone(UTC)
        except OverflowError:
            raise ValidationError("This time is out of range.", code="invalid") from None


class UTCIsoDateTimeFilter(filters.IsoDateTimeFilter):
    field_class = UTCIsoDateTimeField


# --- Hour files ---------------------------------------------------------------------------------


class HourFileSerializer(serializers.ModelSerializer[HourFile]):
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = HourFile
        fields = [
            "id",
            "cloud_id",
            "hour",
            "part",
            "state",
            "key",
            "compressed",
            "size",
            "sha256",
            "line_count",
            "first_reading_at",
            "last_reading_at",
            "attempts",
            "last_error",
            "next_attempt_at",
            "sealed_at",
            "verified_at",
            "local_deleted_at",
            "created_at",
            "updated_at",
            "download_url",
        ]
        read_only_fields = fields

    def get_download_url(self, hour_file: HourFile) -> str:
        path = reverse("api:logfile-download", args=[hour_file.id])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


class HourFileFilter(filters.FilterSet):
    cloud_id = filters.CharFilter(help_text="Only this user's hour files.")
    hour_after = UTCIsoDateTimeFilter(
        field_name="hour", lookup_expr="gte", help_text="Hours starting at or after (ISO 8601)."
    )
    hour_before = UTCIsoDateTimeFilter(
        field_name="hour", lookup_expr="lt", help_text="Hours starting before (ISO 8601)."
    )
    state = filters.MultipleChoiceFilter(
        choices=HourFileState.choices, help_text="One or more states (repeat the parameter)."
    )

    class Meta:
        model = HourFile
        fields = ["cloud_id", "hour_after", "hour_before", "state"]


@extend_schema(
    summary="The manifest of hour files",
    responses={200: HourFileSerializer(many=True), 400: FIELD_ERRORS, 401: UNAUTHENTICATED},
)
class HourFileListView(generics.ListAPIView[HourFile]):
    serializer_class = HourFileSerializer
    filterset_class = HourFileFilter
    queryset = HourFile.objects.order_by("-hour", "cloud_id", "part")


@extend_schema(summary="One hour file", responses={200: HourFileSerializer, **READ_ERRORS})
class HourFileDetailView(generics.RetrieveAPIView[HourFile]):
    serializer_class = HourFileSerializer
    queryset = HourFile.objects.all()


class PassthroughRenderer(BaseRenderer):
    """Lets any Accept header reach a view that answers with the file's own content type."""

    media_type = "*/*"
    format = "file"

    def render(self, data: Any, accepted_media_type: Any = None, renderer_context: Any = None):  # type: ignore[no-untyped-def]
        return data


class PresignedURLSerializer(serializers.Serializer[Any]):
    url = serializers.URLField()
    expires_at = serializers.DateTimeField()
    key = serializers.CharField()
    compressed = serializers.BooleanField()


def parse_flag(name: str, raw: str | None) -> bool:
    value = (raw or "").strip().lower()
    if value in TRUE_VALUES:
        return True
    if value in FALSE_VALUES:
        return False
    raise ParseError(f"{name}: use 1 or 0 (true/false).")


class HourFileDownloadView(JSONErrorsMixin, APIView):
    renderer_classes = [JSONRenderer, PassthroughRenderer]

    @extend_schema(
        operation_id="logfile_download",
        summary="Download one hour file, or get a presigned URL to it",
        description=(
            "Streams the file from local disk while it is there, else the archived object "
            "(gzip objects stay gzip, Content-Type application/gzip). With ?presigned=1, "
            "answers with a short-lived URL of the archived object instead (S3 archives only)."
        ),
        parameters=[
            OpenApiParameter(
                "presigned",
                OpenApiTypes.BOOL,
                description="1 for a presigned S3 URL instead of the bytes.",
            )
        ],
        responses={
            (200, "application/x-ndjson"): OpenApiResponse(
                OpenApiTypes.BINARY, description="The hour file, JSON lines."
            ),
            (200, "application/gzip"): OpenApiResponse(
                OpenApiTypes.BINARY, description="An archived gzip object, as stored."
            ),
            (200, "application/json"): PresignedURLSerializer,
            400: error("Bad presigned flag."),
            **READ_ERRORS,
            409: error("No copy can be served that way: not archived, or not an S3 archive."),
            503: error("The archive cannot be read right now."),
        },
    )
    def get(self, request: Request, pk: int) -> Any:
        hour_file = get_object_or_404(HourFile, pk=pk)
        try:
            if parse_flag("presigned", request.query_params.get("presigned")):
                url, expires_at = retrieval.presigned_url(hour_file)
                request.accepted_renderer = JSONRenderer()
                request.accepted_media_type = JSONRenderer.media_type
                return Response(
                    {
                        "url": url,
                        "expires_at": iso_utc(expires_at),
                        "key": hour_file.key,
                        "compressed": hour_file.compressed,
                    }
                )
            stream = retrieval.open_hour_file(hour_file)
        except retrieval.HourFileUnavailableError as exc:
            raise Conflict(str(exc)) from exc
        except retrieval.ArchiveReadError as exc:
            raise ServiceUnavailable(str(exc)) from exc
        response = StreamingHttpResponse(stream.chunks, content_type=stream.content_type)
        response["Content-Length"] = str(stream.size)
        response["Content-Disposition"] = f'attachment; filename="{stream.filename}"'
        return response


# --- Fleet status -------------------------------------------------------------------------------


class OldestUnshippedSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    cloud_id = serializers.CharField()
    hour = serializers.DateTimeField()
    part = serializers.IntegerField()
    state = serializers.CharField()
    age_seconds = serializers.IntegerField(help_text="Seconds since the hour began.")


@extend_schema_field({"type": "object", "additionalProperties": {"type": "integer"}})
class CountsField(serializers.DictField):
    child = serializers.IntegerField()


class UserCountsSerializer(serializers.Serializer[Any]):
    total = serializers.IntegerField()
    polled = serializers.IntegerField(help_text="Active users that rainlog polls (not push).")
    logging = serializers.IntegerField()
    waiting = serializers.IntegerField(help_text="Active, no successful fetch yet.")
    suspended = serializers.IntegerField()
    failing = CountsField(help_text="Failing users by failure class.")


class FleetStatusSerializer(serializers.Serializer[Any]):
    generated_at = serializers.DateTimeField()
    users = UserCountsSerializer()
    readings_last_hour = serializers.IntegerField(help_text="Written by the poll ticks.")
    readings_expected_last_hour = serializers.IntegerField(
        help_text="One reading per INGEST_METER_SECONDS of each active polled user, from when it "
        "was added and polling began, outside its pauses (as coverage counts them)."
    )
    ticks_last_hour = CountsField(
        help_text="expected (slots over since the poller's first tick), recorded, on_time, late, "
        "missing."
    )
    open_incidents_by_class = CountsField()
    oldest_unshipped_hour = OldestUnshippedSerializer(allow_null=True)


def status_document(summary: dashboard.FleetSummary) -> dict[str, Any]:
    oldest = summary.oldest_unshipped
    age = summary.oldest_unshipped_age
    return {
        "generated_at": iso_utc(summary.now),
        "users": {
            "total": summary.users_total,
            "polled": summary.users_polled,
            "logging": summary.users_logging,
            "waiting": summary.users_waiting,
            "suspended": summary.users_suspended,
            "failing": {figure.key: figure.count for figure in summary.users_failing},
        },
        "readings_last_hour": summary.readings_last_hour,
        "readings_expected_last_hour": summary.readings_expected,
        "ticks_last_hour": {
            "expected": summary.ticks_expected,
            "recorded": summary.ticks_recorded,
            "on_time": summary.ticks_on_time,
            "late": summary.ticks_late,
            "missing": summary.ticks_missing,
        },
        "open_incidents_by_class": {figure.key: figure.count for figure in summary.open_incidents},
        "oldest_unshipped_hour": None
        if oldest is None or age is None
        else {
            "id": oldest.id,
            "cloud_id": oldest.cloud_id,
            "hour": iso_utc(oldest.hour),
            "part": oldest.part,
            "state": oldest.state,
            "age_seconds": int(age.total_seconds()),
        },
    }


class FleetStatusView(APIView):
    renderer_classes = [JSONRenderer]

    @extend_schema(
        operation_id="fleet_status",
        summary="The fleet at a glance",
        description=(
            "Users by state, readings and poll ticks of the last hour, open incidents by "
            "failure class, and the oldest hour file not yet verified in the archive."
        ),
        responses={200: FleetStatusSerializer, 401: UNAUTHENTICATED},
    )
    def get(self, request: Request) -> Response:
        return Response(status_document(dashboard.fleet_summary()))


# --- Incidents ----------------------------------------------------------------------------------


class IncidentSerializer(serializers.ModelSerializer[Incident]):
    cloud_id = serializers.CharField(source="user.cloud_id", read_only=True)
    resolved_by = serializers.CharField(
        source="resolved_by.username", read_only=True, allow_null=True, default=None
    )

    class Meta:
        model = Incident
        fields = [
            "id",
            "cloud_id",
            "failure_class",
            "state",
            "opened_at",
            "last_seen_at",
            "resolved_at",
            "occurrences",
            "message",
            "raw_reply",
            "resolved_by",
            "resolution",
        ]
        read_only_fields = fields


class IncidentFilter(filters.FilterSet):
    cloud_id = filters.CharFilter(field_name="user__cloud_id", help_text="One user's incidents.")
    failure_class = filters.MultipleChoiceFilter(
        choices=FAILURE_CLASS_CHOICES,
        help_text="One or more failure classes (repeat the parameter).",
    )
    state = filters.ChoiceFilter(choices=IncidentState.choices)
    since = UTCIsoDateTimeFilter(
        method="filter_since", help_text="Incidents still open at or after this time."
    )
    until = UTCIsoDateTimeFilter(
        field_name="opened_at", lookup_expr="lt", help_text="Incidents opened before this time."
    )

    class Meta:
        model = Incident
        fields = ["cloud_id", "failure_class", "state", "since", "until"]

    def filter_since(self, queryset: QuerySet[Incident], name: str, value: Any) -> Any:
        return queryset.filter(Q(resolved_at__isnull=True) | Q(resolved_at__gte=value))


class IncidentQuerysetMixin:
    queryset = Incident.objects.select_related("user", "resolved_by").order_by(
        "-last_seen_at", "-id"
    )
    serializer_class = IncidentSerializer


@extend_schema(
    summary="Incidents (runs of fetch failures)",
    responses={200: IncidentSerializer(many=True), 400: FIELD_ERRORS, 401: UNAUTHENTICATED},
)
class IncidentListView(IncidentQuerysetMixin, generics.ListAPIView[Incident]):
    filterset_class = IncidentFilter


@extend_schema(summary="One incident", responses={200: IncidentSerializer, **READ_ERRORS})
class IncidentDetailView(IncidentQuerysetMixin, generics.RetrieveAPIView[Incident]):
    pass


class ResolveSerializer(serializers.Serializer[Any]):
    resolution = serializers.CharField(
        required=False, allow_blank=True, max_length=2000, help_text="What was done, and why."
    )


class IncidentResolveView(APIView):
    renderer_classes = [JSONRenderer]

    @extend_schema(
        operation_id="incident_resolve",
        summary="Resolve an open incident by hand (staff operators)",
        request=ResolveSerializer,
        responses={
            200: IncidentSerializer,
            400: FIELD_ERRORS,
            401: UNAUTHENTICATED,
            403: FORBIDDEN,
            404: error("No such incident."),
            409: error("The incident is already resolved."),
        },
    )
    def post(self, request: Request, pk: int) -> Response:
        body = ResolveSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        incident = get_object_or_404(Incident, pk=pk)
        resolution = body.validated_data.get("resolution", "")
        if not Incident.objects.filter(pk=incident.pk).resolve(request.user, resolution):
            raise Conflict(f"Incident {incident.pk} is already resolved.")
        incident = IncidentQuerysetMixin.queryset.get(pk=incident.pk)
        return Response(IncidentSerializer(incident).data)
