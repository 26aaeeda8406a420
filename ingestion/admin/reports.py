"""Admin for incident reports: what was sent to ERROR_REPORT_URL, and how delivery went."""

from __future__ import annotations

import orjson
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from ingestion.models import IncidentReport, ReportState

REPORT_FIELDS = (
    "incident",
    "event",
    "event_at",
    "state",
    "attempts",
    "last_attempt_at",
    "next_attempt_at",
    "response_status",
    "last_error",
    "delivered_at",
    "created_at",
    "sent_payload",
)


@admin.register(IncidentReport)
class IncidentReportAdmin(admin.ModelAdmin):
    list_display = [
        "event_at",
        "event",
        "cloud_id",
        "failure_class",
        "state",
        "attempts",
        "response_status",
        "next_attempt_at",
        "delivered_at",
        "short_error",
    ]
    list_filter = ["state", "event"]
    list_select_related = ["incident__user"]
    search_fields = ["incident__user__cloud_id"]
    date_hierarchy = "event_at"
    actions = ["retry_now"]
    fields = REPORT_FIELDS
    readonly_fields = REPORT_FIELDS

    @admin.display(description="cloud id", ordering="incident__user__cloud_id")
    def cloud_id(self, report: IncidentReport) -> str:
        return report.incident.subject

    @admin.display(description="failure class", ordering="incident__failure_class")
    def failure_class(self, report: IncidentReport) -> str:
        return report.incident.get_failure_class_display()

    @admin.display(description="last error")
    def short_error(self, report: IncidentReport) -> str:
        return report.last_error[:80]

    @admin.display(description="payload")
    def sent_payload(self, report: IncidentReport) -> str:
        text = orjson.dumps(report.payload, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
        return format_html("<pre>{}</pre>", text.decode())

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Retry delivery now", permissions=["change"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[IncidentReport]) -> None:
        retried = 0
        for report in queryset.exclude(state=ReportState.DELIVERED):
            report.retry_now()
            retried += 1
        self.message_user(
            request,
            f"{retried} report(s) will be sent on the next pass "
            "(manage.py deliver_reports sends them now).",
            messages.SUCCESS,
        )
