"""GET /api/status/: the fleet at a glance (ingestion.console.dashboard.fleet_summary)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import (
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api.schema import UNAUTHENTICATED
from ingestion.console import dashboard
from ingestion.records import iso_utc


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
