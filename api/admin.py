"""Operators' API tokens in the admin: knox's pages, except that a token added here is shown once
on its own uncached page. Knox's admin put it in a message, which travels in the messages cookie
(signed, not encrypted) and would be readable from the browser's storage."""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.cache import add_never_cache_headers
from knox.admin import AuthTokenAdmin
from knox.models import AuthToken

admin.site.unregister(AuthToken)


@admin.register(AuthToken)
class ApiTokenAdmin(AuthTokenAdmin):
    def save_model(self, request: HttpRequest, obj: AuthToken, form: Any, change: bool) -> None:
        # Not knox's save_model, which puts the token in a message.
        admin.ModelAdmin.save_model(self, request, obj, form, change)
        if not change:
            obj.issued_token = form.token

    def response_add(
        self, request: HttpRequest, obj: AuthToken, post_url_continue: str | None = None
    ) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "New API token",
            "token": obj.issued_token,
            "auth_token": obj,
        }
        response = TemplateResponse(request, "admin/knox/authtoken/token_issued.html", context)
        add_never_cache_headers(response)
        return response
