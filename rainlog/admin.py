"""rainlog's admin site: the fleet dashboard as its index, and the console's extra views."""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import URLPattern, URLResolver, reverse_lazy

from ingestion.console import dashboard


class RainlogAdminSite(admin.AdminSite):
    site_header = "rainlog"
    site_title = "rainlog admin"
    index_title = "Fleet"
    index_template = "admin/rainlog/dashboard.html"
    # "View site" leads to the console itself: rainlog has no public pages.
    site_url = reverse_lazy("admin:index")  # type: ignore[assignment]  # a lazy str is a str here

    def index(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> TemplateResponse:
        context = {
            "fleet": dashboard.fleet_summary(),
            "jobs": dashboard.job_summary(),
            **(extra_context or {}),
        }
        return super().index(request, context)

    def get_urls(self) -> list[URLResolver | URLPattern]:
        # Imported here, not at the top: this module is imported while admin.site is being set
        # up, and the console's module registers admin classes on that very site.
        from ingestion.admin import console

        # Before the site's own patterns, whose last one catches every "<app_label>/".
        return console.urls(self) + super().get_urls()
