"""Admin for the SQL readings store's loads: each hour's loads, the lag, and the failures."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from ingestion import readings_store
from ingestion.admin.hour_files import CappedCountPaginator
from ingestion.archive.audit import describe_age
from ingestion.models import ReadingsLoad


class FailedFilter(admin.SimpleListFilter):
    title = "outcome"
    parameter_name = "failed"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Failed"), ("no", "Loaded")]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[ReadingsLoad]
    ) -> QuerySet[ReadingsLoad]:
        if self.value() == "yes":
            return queryset.exclude(error="")
        if self.value() == "no":
            return queryset.filter(error="")
        return queryset


@admin.register(ReadingsLoad)
class ReadingsLoadAdmin(admin.ModelAdmin):
    list_display = [
        "hour",
        "started_at",
        "files",
        "rows_read",
        "rows_inserted",
        "malformed_lines",
        "files_failed",
        "duration",
        "outcome",
    ]
    list_filter = [FailedFilter]
    date_hierarchy = "hour"
    paginator = CappedCountPaginator
    show_full_result_count = False
    readonly_fields = [field.name for field in ReadingsLoad._meta.fields]

    @admin.display(description="duration (s)", ordering="duration_seconds")
    def duration(self, load: ReadingsLoad) -> str:
        return f"{load.duration_seconds:.2f}"

    @admin.display(description="outcome")
    def outcome(self, load: ReadingsLoad) -> str:
        return f"failed: {load.error[:120]}" if load.failed else "loaded"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        context: dict[str, Any] = {"store_off": readings_store.off_reason()}
        if not context["store_off"]:
            lag = readings_store.lag(timezone.now())
            context.update(lag=lag, lag_text=describe_age(lag.seconds))
        return super().changelist_view(request, {**context, **(extra_context or {})})
