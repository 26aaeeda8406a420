"""Admin for hour files (HourFile rows): what was shipped where, what waits, what failed."""

from __future__ import annotations

import posixpath
from datetime import timedelta
from typing import Any

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html

from ingestion.archive import audit, store
from ingestion.models import RETRYABLE_STATES, HourFile, HourFileState
from rainlog import display

# Users offered in the "user" filter: the most overdue ones (any cloud_id works in the URL).
USERS_IN_FILTER = 20
# Users listed in the freshness box above the list.
USERS_IN_FRESHNESS = 10


class CappedCountPaginator(Paginator):
    """Counts at most CAP rows, so a list of millions of rows costs no full count.

    Pages past the cap are not offered; filters narrow the list to what matters.
    """

    CAP = 10_000

    object_list: QuerySet[Any]

    @cached_property
    def count(self) -> int:
        return self.object_list.order_by()[: self.CAP].count()


class HourRangeFilter(admin.SimpleListFilter):
    title = "hour"
    parameter_name = "hour_range"
    RANGES = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("24h", "Last 24 hours"),
            ("7d", "Last 7 days"),
            ("30d", "Last 30 days"),
            ("older", "Older than 30 days"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[HourFile]) -> QuerySet[HourFile]:
        now = timezone.now()
        value = self.value()
        if value in self.RANGES:
            return queryset.filter(hour__gte=now - self.RANGES[value])
        if self.value() == "older":
            return queryset.filter(hour__lt=now - self.RANGES["30d"])
        return queryset


class UserFilter(admin.SimpleListFilter):
    """By cloud_id; offers the most overdue users (linked to as ?cloud_id__exact=…)."""

    title = "user"
    parameter_name = "cloud_id__exact"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        overdue = [
            cloud_id
            for cloud_id, _ in HourFile.objects.oldest_unshipped_by_user(limit=USERS_IN_FILTER)
        ]
        selected = self.value()
        if selected and selected not in overdue:
            overdue.insert(0, selected)
        return [(cloud_id, cloud_id) for cloud_id in overdue]

    def queryset(self, request: HttpRequest, queryset: QuerySet[HourFile]) -> QuerySet[HourFile]:
        if self.value():
            return queryset.filter(cloud_id=self.value())
        return queryset


HOUR_FILE_FIELDS = (
    "cloud_id",
    "user",
    "hour",
    "part",
    "state",
    "key",
    "compressed",
    "content_type",
    "size",
    "sha256",
    "data_size",
    "data_sha256",
    "line_count",
    "malformed_lines",
    "first_reading_at",
    "last_reading_at",
    "attempts",
    "last_error",
    "next_attempt_at",
    "claimed_until",
    "local_path",
    "sealed_at",
    "verified_at",
    "local_deleted_at",
    "created_at",
    "updated_at",
)


@admin.register(HourFile)
class HourFileAdmin(admin.ModelAdmin):
    list_display = [
        "hour_label",
        "cloud_id",
        "part",
        "state",
        "human_size",
        "line_count",
        "attempts",
        "next_attempt_at",
        "short_error",
        "on_disk",
        "download",
    ]
    list_filter = ["state", HourRangeFilter, UserFilter]
    search_fields = ["cloud_id", "key"]
    search_help_text = "An exact cloud_id or archive key."
    ordering = ["-hour", "cloud_id", "part"]
    paginator = CappedCountPaginator
    show_full_result_count = False
    list_per_page = 100
    actions = ["retry"]
    fields = HOUR_FILE_FIELDS
    readonly_fields = HOUR_FILE_FIELDS
    raw_id_fields = ["user"]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[HourFile], search_term: str
    ) -> tuple[QuerySet[HourFile], bool]:
        # Exact matches only: both columns are indexed, a substring search would read them all.
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(cloud_id=term) | queryset.filter(key=term), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: HourFile | None = None) -> bool:
        # The manifest is the record of what is archived where: rows are never removed by hand.
        return False

    @admin.display(description="hour (UTC)", ordering="hour")
    def hour_label(self, row: HourFile) -> str:
        return row.hour.strftime("%Y-%m-%d %H:00")

    @admin.display(description="size", ordering="size")
    def human_size(self, row: HourFile) -> str:
        return display.size(row.size)

    @admin.display(description="last error")
    def short_error(self, row: HourFile) -> str:
        return row.last_error[:80]

    @admin.display(description="local file")
    def on_disk(self, row: HourFile) -> str:
        if row.local_deleted_at:
            return "removed"
        if row.state == HourFileState.MISSING:
            return "gone"
        return "on disk" if row.state != HourFileState.VERIFIED else "to remove"

    @admin.display(description="archive")
    def download(self, row: HourFile) -> str:
        if row.state != HourFileState.VERIFIED:
            return "-"
        url = reverse("admin:ingestion_hourfile_download", args=[row.pk])
        return format_html('<a href="{}">download</a>', url)

    @admin.action(
        description="Retry shipping (failed, conflicting or missing files)", permissions=["change"]
    )
    def retry(self, request: HttpRequest, queryset: QuerySet[HourFile]) -> None:
        retried = sum(row.retry() for row in queryset.filter(state__in=RETRYABLE_STATES))
        self.message_user(
            request,
            f"{retried} file(s) will be shipped by the next rotation "
            "(manage.py rotate_logs ships them now). Resolve a conflict in the bucket first; "
            "put a missing file back at its path first.",
            messages.SUCCESS,
        )

    def get_urls(self) -> list[URLPattern]:
        download = path(
            "<int:pk>/download/",
            self.admin_site.admin_view(self.download_view),
            name="ingestion_hourfile_download",
        )
        return [download, *super().get_urls()]

    def download_view(self, request: HttpRequest, pk: int) -> FileResponse:
        row = HourFile.objects.filter(pk=pk, state=HourFileState.VERIFIED).first()
        if row is None or not self.has_view_permission(request, row):
            raise Http404("No archived hour file with that id.")
        try:
            body = store.open_archive().open(row.key)
        except FileNotFoundError:
            raise Http404(
                f"{row.key} is not in the archive: run manage.py verify_archive."
            ) from None
        return FileResponse(
            body,
            as_attachment=True,
            filename=posixpath.basename(row.key),
            content_type=row.content_type or "application/octet-stream",
        )

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        context = {
            "freshness": audit.freshness(timezone.now(), users=USERS_IN_FRESHNESS),
            **(extra_context or {}),
        }
        return super().changelist_view(request, context)
