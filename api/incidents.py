"""Incidents for operators.

GET  /api/incidents/                     ?cloud_id=, ?failure_class=, ?state=, ?since=, ?until=
GET  /api/incidents/{id}/                one incident
POST /api/incidents/{id}/resolve         staff operators close an open incident by hand
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models import Q, QuerySet
from django_filters import rest_framework as filters
from drf_spectacular.utils import (
    extend_schema,
)
from rest_framework import generics, serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api.exceptions import Conflict, get_or_404
from api.params import UTCIsoDateTimeFilter
from api.schema import FIELD_ERRORS, FORBIDDEN, READ_ERRORS, UNAUTHENTICATED, error
from ingestion.models import (
    FAILURE_CLASS_CHOICES,
    Incident,
    IncidentState,
)


class IncidentSerializer(serializers.ModelSerializer[Incident]):
    cloud_id = serializers.CharField(
        source="user.cloud_id",
        read_only=True,
        allow_null=True,
        default=None,
        help_text="The user's cloud id; null for an incident of a shard (over capacity).",
    )
    shard = serializers.IntegerField(
        read_only=True,
        allow_null=True,
        help_text="The shard of an over-capacity incident; null for a user's incident.",
    )
    resolved_by = serializers.CharField(
        source="resolved_by.username", read_only=True, allow_null=True, default=None
    )

    class Meta:
        model = Incident
        fields = [
            "id",
            "cloud_id",
            "shard",
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


# Newest first, with what the serializer shows of the user and the operator who resolved it.
INCIDENTS = Incident.objects.select_related("user", "resolved_by").order_by("-last_seen_at", "-id")


@extend_schema(
    summary="Incidents (runs of fetch failures)",
    responses={200: IncidentSerializer(many=True), 400: FIELD_ERRORS, 401: UNAUTHENTICATED},
)
class IncidentListView(generics.ListAPIView[Incident]):
    queryset = INCIDENTS
    serializer_class = IncidentSerializer
    filterset_class = IncidentFilter


@extend_schema(summary="One incident", responses={200: IncidentSerializer, **READ_ERRORS})
class IncidentDetailView(generics.RetrieveAPIView[Incident]):
    queryset = INCIDENTS
    serializer_class = IncidentSerializer


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
        incident = get_or_404(Incident, "pk", pk)
        resolution = body.validated_data.get("resolution", "")
        operator = request.user if isinstance(request.user, AbstractBaseUser) else None
        if not Incident.objects.filter(pk=incident.pk).resolve(operator, resolution):
            raise Conflict(f"Incident {incident.pk} is already resolved.")
        incident = INCIDENTS.get(pk=incident.pk)
        return Response(IncidentSerializer(incident).data)
