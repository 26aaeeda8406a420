"""Hour files for operators: one `HourFile` row each, what was shipped where, what waits.

GET  /api/logfiles/                      the hour files; ?cloud_id=, ?hour_after=, ?hour_before=, ?state=
GET  /api/logfiles/{id}/                 one hour file
GET  /api/logfiles/{id}/download         its bytes, from disk or the archive; ?presigned=1 for a
                                         short-lived S3 URL instead
"""

from __future__ import annotations

from typing import Any

from django.http import StreamingHttpResponse
from django.urls import reverse
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import generics, serializers
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api.exceptions import Conflict, get_or_404
from api.params import UTCIsoDateTimeFilter, parse_flag
from api.readings import ServiceUnavailable
from api.schema import FIELD_ERRORS, READ_ERRORS, UNAUTHENTICATED, error
from ingestion import retrieval
from ingestion.archive.store import CONTENT_TYPE_GZIP, CONTENT_TYPE_JSONL
from ingestion.models import (
    HourFile,
    HourFileState,
)
from ingestion.records import iso_utc


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
    summary="Hour files",
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

    def render(
        self, data: Any, accepted_media_type: Any = None, renderer_context: Any = None
    ) -> Any:
        return data


class PresignedURLSerializer(serializers.Serializer[Any]):
    url = serializers.URLField()
    expires_at = serializers.DateTimeField()
    key = serializers.CharField()
    compressed = serializers.BooleanField()


class HourFileDownloadView(APIView):
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
            (200, CONTENT_TYPE_JSONL): OpenApiResponse(
                OpenApiTypes.BINARY, description="The hour file, JSON lines."
            ),
            (200, CONTENT_TYPE_GZIP): OpenApiResponse(
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
        hour_file = get_or_404(HourFile, "pk", pk)
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
