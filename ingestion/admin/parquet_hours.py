"""Admin for the Parquet dataset: each exported hour, its version, files and sources; read-only
(the export and verify_archive change and check it)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from ingestion.models import DatasetFile, DatasetHour


class DatasetFileInline(admin.TabularInline):
    model = DatasetFile
    fields = ("record_type", "content", "version", "state", "key", "rows", "size", "sha256")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(DatasetHour)
class DatasetHourAdmin(admin.ModelAdmin):
    list_display = (
        "hour",
        "state",
        "version",
        "rows",
        "households",
        "source_files",
        "duplicates",
        "skipped",
        "attempts",
        "exported_at",
        "last_error",
    )
    list_filter = ("state",)
    date_hierarchy = "hour"
    ordering = ("-hour",)
    inlines = [DatasetFileInline]
    readonly_fields = [field.name for field in DatasetHour._meta.fields]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
