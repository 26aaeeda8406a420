"""GET /api/event/{cloud_id}: a user's latest reading (the seed's route, now authenticated).

Without parameters: the newest demand reading in the user's newest local hour file, with its age
in seconds (now minus the meter's time of the reading); where REDIS_URL is set, the same reading as
the poller cached it when it wrote it (ingestion/polling/latest.py), without reading the file. `?fresh=1` asks the user's EAGLE now
instead and returns what it said: the reading (200), or the classified failure (502). `?type=`
picks another record type (summation, price). Nothing fetched here is written to the hour files:
the poller logs every reading.

Each live fetch sends the household's stored credentials, so they are limited per household
(LIVE_FETCH_THROTTLE, whoever asks) and refused while the user is suspended or while polling
backs off from its gateway: a burst of them could get the account locked.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import Throttled, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from api.exceptions import Problem, get_or_404, no_such
from api.params import parse_flag
from api.schema import FIELD_ERRORS, UNAUTHENTICATED, error
from ingestion.eagle.client import fetch_now
from ingestion.eagle.record_types import DEMAND, RECORD_TYPES
from ingestion.polling.failures import live_fetch_refusal
from ingestion.polling.latest import cached_record, latest_record
from ingestion.records import FetchFailure, iso_utc
from users.models import ConnectionType, EagleUser


class LiveFetchThrottle(SimpleRateThrottle):
    """Live fetches per household, whoever asks (LIVE_FETCH_THROTTLE, in the shared cache)."""

    scope = "live_fetch"

    def get_cache_key(self, request: Request, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": view.kwargs["cloud_id"]}


def _age_seconds(record: dict[str, Any]) -> float:
    return round(timezone.now().timestamp() - record["meter_timestamp"], 3)


class EventView(APIView):
    @extend_schema(
        operation_id="user_event",
        summary="A user's latest reading, logged or fetched now",
        parameters=[
            OpenApiParameter(
                "fresh",
                OpenApiTypes.BOOL,
                description="Fetch from the user's EAGLE now instead of reading the log.",
            ),
            OpenApiParameter(
                "type",
                OpenApiTypes.STR,
                enum=sorted(RECORD_TYPES),
                description="Record type (default demand).",
            ),
        ],
        responses={
            200: OpenApiResponse(
                OpenApiTypes.OBJECT,
                description="{cloud_id, source (log or gateway), age_seconds, reading}",
            ),
            400: FIELD_ERRORS,
            401: UNAUTHENTICATED,
            404: error("No such user (code not_found), or no reading of it on disk (no_reading)."),
            409: error(
                "?fresh=1 of a push user (code push_user: its gateway sends readings, it is never "
                "fetched), of a suspended user, or of one whose gateway polling backs off from "
                "(code not_fetched)."
            ),
            429: error("Too many live fetches of this household (LIVE_FETCH_THROTTLE): wait."),
            502: error(
                "The EAGLE gave no reading (code fetch_failed); the problem adds cloud_id, "
                "source, fetched_at and failure: {failure_class, label, message, http_status}."
            ),
        },
    )
    def get(self, request: Request, cloud_id: str) -> Response:
        record_type = request.query_params.get("type", DEMAND)
        if record_type not in RECORD_TYPES:
            raise ValidationError({"type": [f"Choose one of: {', '.join(sorted(RECORD_TYPES))}."]})
        if parse_flag("fresh", request.query_params.get("fresh")):
            return self.fetched(request, get_or_404(EagleUser, "cloud_id", cloud_id), record_type)
        # Dashboards ask for this many times a second: what the poller cached costs no query.
        record = cached_record(cloud_id, record_type)
        if record is None:
            if not EagleUser.objects.filter(cloud_id=cloud_id).values_list("pk").exists():
                raise no_such(EagleUser, "cloud_id", cloud_id)
            record = latest_record(cloud_id, record_type)
        if record is None:
            raise Problem(
                status.HTTP_404_NOT_FOUND,
                f"No {record_type} reading of {cloud_id} is on local disk.",
                "no_reading",
            )
        return Response(
            {
                "cloud_id": cloud_id,
                "source": "log",
                "age_seconds": _age_seconds(record),
                "reading": record,
            }
        )

    def fetched(self, request: Request, user: EagleUser, record_type: str) -> Response:
        if user.connection_type == ConnectionType.PUSH:
            raise Problem(
                status.HTTP_409_CONFLICT,
                f"{user.cloud_id} pushes its readings: there is nothing to fetch.",
                "push_user",
            )
        refusal = live_fetch_refusal(user, timezone.now())
        if refusal:
            raise Problem(status.HTTP_409_CONFLICT, refusal, "not_fetched")
        throttle = LiveFetchThrottle()
        if not throttle.allow_request(request, self):
            raise Throttled(throttle.wait())
        result = fetch_now(user, record_type)
        if isinstance(result, FetchFailure):
            raise Problem(
                status.HTTP_502_BAD_GATEWAY,
                f"The EAGLE of {user.cloud_id} gave no reading: {result.failure_class.label}.",
                "fetch_failed",
                cloud_id=user.cloud_id,
                source="gateway",
                fetched_at=iso_utc(timezone.now()),
                failure={
                    "failure_class": result.failure_class.value,
                    "label": result.failure_class.label,
                    "message": result.message,
                    "http_status": result.http_status,
                },
            )
        record = result.to_record()
        return Response(
            {
                "cloud_id": user.cloud_id,
                "source": "gateway",
                "age_seconds": _age_seconds(record),
                "reading": record,
            }
        )
