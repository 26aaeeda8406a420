"""/api/users/: the monitored EAGLE users, keeping the seed's routes under token authentication.

GET    /api/users/                   list (paginated); ?is_active=, ?failing=, ?connection_type=,
                                     ?search= (part of a cloud_id or email)
GET    /api/users/{cloud_id}         one user, with fetch metadata and open incidents
PUT    /api/users/{cloud_id}         create or replace: the whole record (201 when created)
POST   /api/users/{cloud_id}         create, or update the fields given (the seed's POST)
PATCH  /api/users/{cloud_id}         update the fields given of an existing user
DELETE /api/users/{cloud_id}         delete; ?purge=1 also removes its hour files and archive

A user's fields have the same names here, in import/export (users/jsonlines.py) and in the admin
(docs/api.md, "A user's fields"); bodies may also use the seed's `user_email` and `user_pw` for
`email` and `eagle_password`. A body field that is not one of them is refused (400). The EAGLE
password is write-only: no response ever contains it.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Prefetch, Q, QuerySet
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.exceptions import MethodNotAllowed, ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response

from api.exceptions import Problem, no_such
from api.params import parse_flag
from api.schema import error
from ingestion.models import FAILURE_CLASS_CHOICES, FetchState, Incident, IncidentState
from ingestion.purging import PurgeIncompleteError, remove_user
from ingestion.records import iso_utc
from users.cloud_ids import cloud_id_validator, lower_if_text
from users.fields import SEED_NAMES, FieldConflictError, with_seed_names_replaced
from users.models import EAGLE_PASSWORD_MAX_LENGTH, ConnectionType, EagleUser, EagleUserQuerySet

logger = logging.getLogger(__name__)

CREATE_HINT = (
    "Users are created at their own address: PUT /api/users/{cloud_id} with the whole record "
    "(email, eagle_password, connection_type, ...) or POST /api/users/{cloud_id} with the fields "
    "to set (the seed's form)."
)


class FetchStateSerializer(serializers.ModelSerializer[FetchState]):
    # Declared so that the schema allows "" (no error yet); read-only model fields lose allow_blank.
    last_error_class = serializers.ChoiceField(
        choices=FAILURE_CLASS_CHOICES, allow_blank=True, read_only=True
    )
    first_reading_at = serializers.SerializerMethodField()
    last_reading_at = serializers.SerializerMethodField()

    class Meta:
        model = FetchState
        fields = [
            "total_events_logged",
            "first_timestamp",
            "last_timestamp",
            "first_reading_at",
            "last_reading_at",
            "last_success_at",
            "last_attempt_at",
            "last_error",
            "last_error_class",
            "last_error_at",
            "consecutive_failures",
            "next_attempt_at",
        ]
        read_only_fields = fields

    @staticmethod
    def _iso(unix_seconds: float | None) -> str | None:
        if unix_seconds is None:
            return None
        return iso_utc(datetime.fromtimestamp(unix_seconds, UTC))

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_first_reading_at(self, state: FetchState) -> str | None:
        return self._iso(state.first_timestamp)

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_last_reading_at(self, state: FetchState) -> str | None:
        return self._iso(state.last_timestamp)


class OpenIncidentSerializer(serializers.ModelSerializer[Incident]):
    class Meta:
        model = Incident
        fields = ["id", "failure_class", "opened_at", "last_seen_at", "occurrences", "message"]
        read_only_fields = fields


class IncidentSummarySerializer(serializers.Serializer[Any]):
    open_count = serializers.IntegerField()
    open = OpenIncidentSerializer(many=True)


class EagleUserSerializer(serializers.ModelSerializer[EagleUser]):
    eagle_password = serializers.CharField(
        write_only=True,
        required=False,
        trim_whitespace=False,
        max_length=EAGLE_PASSWORD_MAX_LENGTH,
        style={"input_type": "password"},
        help_text="EAGLE account password, or the install code of a local gateway. Write-only.",
    )
    has_eagle_password = serializers.SerializerMethodField()
    failing = serializers.SerializerMethodField()
    fetch = serializers.SerializerMethodField()
    incidents = serializers.SerializerMethodField()

    class Meta:
        model = EagleUser
        fields = [
            "cloud_id",
            "email",
            "eagle_password",
            "has_eagle_password",
            "connection_type",
            "gateway_address",
            "meter_mac",
            "is_active",
            "suspended_reason",
            "suspended_at",
            "created_at",
            "updated_at",
            "failing",
            "fetch",
            "incidents",
        ]
        read_only_fields = ["cloud_id", "suspended_at", "created_at", "updated_at"]

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            try:
                data = with_seed_names_replaced(data)
            except FieldConflictError as exc:
                raise ValidationError({exc.field: [exc.message]}) from None
            unknown = [name for name in data if name not in self.fields]
            if unknown:
                raise ValidationError({name: [self._unknown(name)] for name in unknown})
        return super().to_internal_value(data)

    def _unknown(self, name: str) -> str:
        writable = [str(field.field_name) for field in self._writable_fields]
        guess = difflib.get_close_matches(name, [*writable, *SEED_NAMES], n=1)
        hint = f"did you mean {guess[0]}?" if guess else f"the fields are {', '.join(writable)}."
        return f"Unknown field: {hint}"

    def get_has_eagle_password(self, user: EagleUser) -> bool:
        return bool(user.eagle_password)

    def _open_incidents(self, user: EagleUser) -> list[Incident]:
        prefetched = getattr(user, "open_incidents", None)
        if prefetched is not None:
            return prefetched
        return list(user.incidents.filter(state=IncidentState.OPEN).order_by("-last_seen_at"))

    def get_failing(self, user: EagleUser) -> bool:
        state = getattr(user, "fetch_state", None)
        return bool(state and state.consecutive_failures) or bool(self._open_incidents(user))

    @extend_schema_field(FetchStateSerializer)
    def get_fetch(self, user: EagleUser) -> dict[str, Any]:
        # A user created outside rainlog's own paths may lack its row: show the empty state.
        state = getattr(user, "fetch_state", None) or FetchState(user=user)
        return FetchStateSerializer(state).data

    @extend_schema_field(IncidentSummarySerializer)
    def get_incidents(self, user: EagleUser) -> dict[str, Any]:
        incidents = self._open_incidents(user)
        return {
            "open_count": len(incidents),
            "open": OpenIncidentSerializer(incidents, many=True).data,
        }


WHOLE_RECORD_FIELDS = (
    "email",
    "connection_type",
    "gateway_address",
    "meter_mac",
    "is_active",
    "suspended_reason",
)


class EagleUserRecordSerializer(EagleUserSerializer):
    """The whole record that PUT stores: every writable field is required, except the EAGLE
    password of an existing user, which is kept when left out (no response shows it)."""

    class Meta(EagleUserSerializer.Meta):
        extra_kwargs = {
            name: {
                "required": True,
                "error_messages": {
                    "required": "Required: PUT stores the whole record (PATCH changes some fields)."
                },
            }
            for name in WHOLE_RECORD_FIELDS
        }


class EagleUserFilter(filters.FilterSet):
    is_active = filters.BooleanFilter(help_text="true: polled users; false: suspended users")
    failing = filters.BooleanFilter(
        method="filter_failing",
        help_text="true: users whose last fetches failed or who have an open incident",
    )
    connection_type = filters.ChoiceFilter(choices=ConnectionType.choices)
    search = filters.CharFilter(method="filter_search", help_text="part of a cloud_id or email")

    class Meta:
        model = EagleUser
        fields = ["is_active", "failing", "connection_type", "search"]

    def filter_failing(self, queryset: QuerySet[EagleUser], name: str, value: bool) -> Any:
        assert isinstance(queryset, EagleUserQuerySet)
        return queryset.failing() if value else queryset.healthy()

    def filter_search(self, queryset: QuerySet[EagleUser], name: str, value: str) -> Any:
        return queryset.filter(Q(cloud_id__icontains=value) | Q(email__icontains=value))


class UserPagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 1000


def _model_errors(exc: DjangoValidationError) -> ValidationError:
    return ValidationError(serializers.as_serializer_error(exc))


class EagleUserViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[EagleUser]
):
    serializer_class = EagleUserSerializer
    lookup_field = "cloud_id"
    filterset_class = EagleUserFilter
    pagination_class = UserPagination

    def get_queryset(self) -> QuerySet[EagleUser]:
        open_incidents = Incident.objects.filter(state=IncidentState.OPEN).order_by("-last_seen_at")
        return (
            EagleUser.objects.select_related("fetch_state")
            .prefetch_related(Prefetch("incidents", open_incidents, to_attr="open_incidents"))
            .order_by("cloud_id")
        )

    def _check_body_cloud_id(self, request: Request, cloud_id: str) -> None:
        if isinstance(request.data, Mapping) and "cloud_id" in request.data:
            if lower_if_text(str(request.data["cloud_id"])) != cloud_id:
                raise ValidationError(
                    {
                        "cloud_id": [
                            "Differs from the cloud_id in the URL; a cloud_id never changes."
                        ]
                    }
                )

    def _save(
        self, request: Request, cloud_id: str, create: bool, whole: bool = False
    ) -> tuple[EagleUser, bool, list[str]]:
        self._check_body_cloud_id(request, cloud_id)
        serializer_class = EagleUserRecordSerializer if whole else EagleUserSerializer
        serializer = serializer_class(
            data=request.data, partial=not whole, context=self.get_serializer_context()
        )
        serializer.is_valid(raise_exception=True)
        try:
            user, created, changed = EagleUser.objects.upsert(
                cloud_id, serializer.validated_data, create=create
            )
        except DjangoValidationError as exc:
            raise _model_errors(exc) from None
        if created or changed:
            verb = "created" if created else f"updated ({', '.join(changed)})"
            logger.info("user %s %s by %s", cloud_id, verb, request.user)
        return user, created, changed

    def _represent(self, user: EagleUser, status_code: int = status.HTTP_200_OK) -> Response:
        fresh = self.get_queryset().get(pk=user.pk)
        return Response(self.get_serializer(fresh).data, status=status_code)

    # DRF calls it with its own Request, which django-stubs does not know as an HttpRequest.
    def http_method_not_allowed(self, request: Request, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if "cloud_id" not in kwargs:
            method = str(request.method)
            raise MethodNotAllowed(method, f"{method} is not allowed. {CREATE_HINT}")
        return super().http_method_not_allowed(request, *args, **kwargs)

    def _create_or_save(self, request: Request, cloud_id: str, whole: bool) -> Response:
        try:
            cloud_id_validator(cloud_id)
        except DjangoValidationError as exc:
            raise ValidationError({"cloud_id": exc.messages}) from None
        user, created, _ = self._save(request, cloud_id, create=True, whole=whole)
        return self._represent(user, status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(
        request=EagleUserSerializer,
        responses={200: EagleUserSerializer, 201: EagleUserSerializer},
        description="Create the user, or update the fields given (the seed's POST).",
    )
    def upsert(self, request: Request, cloud_id: str) -> Response:
        return self._create_or_save(request, cloud_id, whole=False)

    @extend_schema(
        request=EagleUserRecordSerializer,
        responses={200: EagleUserSerializer, 201: EagleUserSerializer},
        description="Create the user, or replace its record: every writable field is required "
        "(the EAGLE password of an existing user may be left out, to keep it).",
    )
    def replace(self, request: Request, cloud_id: str) -> Response:
        return self._create_or_save(request, cloud_id, whole=True)

    def partial_update(self, request: Request, cloud_id: str) -> Response:
        user = self.get_object()
        try:
            user, _, _ = self._save(request, user.cloud_id, create=False)
        except EagleUser.DoesNotExist:
            # Deleted by someone else since get_object().
            raise no_such(EagleUser, "cloud_id", cloud_id) from None
        return self._represent(user)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "purge",
                OpenApiTypes.BOOL,
                description="1 to also remove the user's hour files, archived objects and "
                "hour file rows; the removed files and keys are listed in the response",
            )
        ],
        responses={
            200: OpenApiTypes.OBJECT,
            204: None,
            503: error(
                "The purge stopped part-way (code purge_incomplete); the problem's `removed` "
                "lists what was removed. Send the same request again to finish."
            ),
        },
    )
    def destroy(self, request: Request, cloud_id: str) -> Response:
        purge = parse_flag("purge", request.query_params.get("purge"))
        user = self.get_object()
        try:
            report = remove_user(user, purge=purge)
        except PurgeIncompleteError as exc:
            raise Problem(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "The purge stopped part-way and the user was kept (suspended): "
                f"{exc.cause}. Send the same request again to finish.",
                "purge_incomplete",
                removed=exc.report.as_dict(),
            ) from exc
        if report is None:
            logger.info("user %s deleted by %s; its data was kept", cloud_id, request.user)
            return Response(status=status.HTTP_204_NO_CONTENT)
        logger.info(
            "user %s deleted by %s with its data: %s", cloud_id, request.user, report.summary()
        )
        return Response({"deleted": user.cloud_id, "purged": report.as_dict()})


user_list = EagleUserViewSet.as_view({"get": "list"})
user_detail = EagleUserViewSet.as_view(
    {
        "get": "retrieve",
        "post": "upsert",
        "put": "replace",
        "patch": "partial_update",
        "delete": "destroy",
    }
)
