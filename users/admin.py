from copy import copy
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.cache import add_never_cache_headers
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters

from ingestion.models import FetchState, HourFile
from ingestion.purging import PurgeIncompleteError, remove_user
from rainlog import display
from users.credentials import check_credentials
from users.models import ConnectionType, EagleUser, EagleUserQuerySet

# Each check waits for a gateway (up to INGEST_REQUEST_TIMEOUT): keep one admin request short.
MAX_CREDENTIAL_CHECKS = 10


class EagleUserForm(forms.ModelForm):
    """The stored password is never sent to the page: the field starts empty and only a value
    typed into it replaces the stored one."""

    eagle_password = forms.CharField(
        label="EAGLE password",
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="The account password, or the install code of a local gateway. "
        "It is never displayed: leave the field empty to keep the stored one.",
    )

    class Meta:
        model = EagleUser
        fields = [
            "cloud_id",
            "email",
            "eagle_password",
            "connection_type",
            "gateway_address",
            "meter_mac",
            "is_active",
            "suspended_reason",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Not even in the form's initial data: it would reach the change history and templates.
        self.initial["eagle_password"] = ""

    def clean_eagle_password(self) -> str:
        return self.cleaned_data["eagle_password"] or self.instance.eagle_password


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "Active"), ("suspended", "Suspended")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[EagleUser]) -> Any:
        if self.value() == "active":
            return queryset.filter(is_active=True)
        if self.value() == "suspended":
            return queryset.filter(is_active=False)
        return queryset


class FetchingFilter(admin.SimpleListFilter):
    title = "fetching"
    parameter_name = "fetching"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("failing", "Failing or with an open incident"), ("healthy", "Healthy")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        assert isinstance(queryset, EagleUserQuerySet)
        if self.value() == "failing":
            return queryset.failing()
        if self.value() == "healthy":
            return queryset.healthy()
        return queryset


def _state(user: EagleUser) -> FetchState:
    return getattr(user, "fetch_state", None) or FetchState(user=user)


# Kept by the poller (FetchState): shown read-only, never edited here.
FETCH_STATE_FIELDS = (
    "total_events_logged",
    "first_reading_at",
    "last_reading_at",
    "last_success_at",
    "last_attempt_at",
    "consecutive_failures",
    "last_error_class",
    "last_error",
    "last_error_at",
    "next_attempt_at",
)


@admin.register(EagleUser)
class EagleUserAdmin(admin.ModelAdmin):
    form = EagleUserForm
    list_display = (
        "cloud_id",
        "email",
        "connection_type",
        "is_active",
        "failing",
        "total_events_logged",
        "last_reading_at",
        "last_success_at",
        "consecutive_failures",
        "last_error_class",
    )
    list_select_related = ("fetch_state",)
    list_filter = (StateFilter, FetchingFilter, "connection_type")
    search_fields = ("cloud_id", "email")
    actions = (
        "activate_users",
        "suspend_users",
        "check_user_credentials",
        "delete_and_purge",
        "issue_push_tokens",
        "revoke_push_tokens",
    )
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "cloud_id",
                    "email",
                    "eagle_password",
                    "has_eagle_password",
                    "connection_type",
                    "gateway_address",
                    "meter_mac",
                )
            },
        ),
        ("State", {"fields": ("is_active", "suspended_reason", "suspended_at")}),
        (
            "Fetching (kept by the poller, read-only)",
            {"fields": FETCH_STATE_FIELDS},
        ),
        ("Push (uploader mode)", {"fields": ("push_token_issued_at",)}),
        ("Record", {"fields": ("created_at", "updated_at")}),
    )
    readonly_fields = (
        "has_eagle_password",
        "push_token_issued_at",
        "suspended_at",
        *FETCH_STATE_FIELDS,
        "created_at",
        "updated_at",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[EagleUser]:
        queryset = super().get_queryset(request)
        assert isinstance(queryset, EagleUserQuerySet)
        return queryset.with_open_incident_flag()

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # The cloud_id names the user's files and archive keys: it is fixed once created.
        return (*self.readonly_fields, "cloud_id") if obj else self.readonly_fields

    @method_decorator(sensitive_post_parameters("eagle_password"))
    def changeform_view(self, *args: Any, **kwargs: Any) -> Any:
        return super().changeform_view(*args, **kwargs)

    def save_model(self, request: HttpRequest, obj: EagleUser, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        obj.ensure_fetch_state()

    @admin.display(boolean=True, description="EAGLE password set")
    def has_eagle_password(self, user: EagleUser) -> bool:
        return bool(user.eagle_password)

    @admin.display(description="health")
    def failing(self, user: EagleUser) -> str:
        """Failing (its last fetches failed, or an open incident) or OK: an icon that says it."""
        if _state(user).consecutive_failures or getattr(user, "has_open_incident", False):
            return display.status("problem", "Failing")
        return display.status("ok", "OK")

    @admin.display(description="events logged", ordering="fetch_state__total_events_logged")
    def total_events_logged(self, user: EagleUser) -> int:
        return _state(user).total_events_logged

    @admin.display(description="first reading")
    def first_reading_at(self, user: EagleUser) -> str:
        return display.moment(_state(user).first_timestamp)

    @admin.display(description="last reading", ordering="fetch_state__last_timestamp")
    def last_reading_at(self, user: EagleUser) -> str:
        return display.moment(_state(user).last_timestamp)

    @admin.display(description="last success", ordering="fetch_state__last_success_at")
    def last_success_at(self, user: EagleUser) -> str:
        return display.moment(_state(user).last_success_at)

    @admin.display(description="last attempt")
    def last_attempt_at(self, user: EagleUser) -> str:
        return display.moment(_state(user).last_attempt_at)

    @admin.display(description="failures in a row", ordering="fetch_state__consecutive_failures")
    def consecutive_failures(self, user: EagleUser) -> int:
        return _state(user).consecutive_failures

    @admin.display(description="last error class")
    def last_error_class(self, user: EagleUser) -> str:
        return _state(user).get_last_error_class_display() or "-"

    @admin.display(description="last error")
    def last_error(self, user: EagleUser) -> str:
        return _state(user).last_error or "-"

    @admin.display(description="last error at")
    def last_error_at(self, user: EagleUser) -> str:
        return display.moment(_state(user).last_error_at)

    @admin.display(description="next attempt")
    def next_attempt_at(self, user: EagleUser) -> str:
        return display.moment(_state(user).next_attempt_at)

    @admin.action(description="Activate selected users (poll them again)", permissions=["change"])
    def activate_users(self, request: HttpRequest, queryset: QuerySet[EagleUser]) -> None:
        users = list(queryset.filter(is_active=False))
        for user in users:
            user.activate()
        self.message_user(request, f"{len(users)} users activated.", messages.SUCCESS)

    @admin.action(description="Suspend selected users (stop polling them)", permissions=["change"])
    def suspend_users(self, request: HttpRequest, queryset: QuerySet[EagleUser]) -> None:
        users = list(queryset.filter(is_active=True))
        for user in users:
            user.suspend(f"Suspended by {request.user.get_username()} in the admin.")
        self.message_user(request, f"{len(users)} users suspended.", messages.SUCCESS)

    @admin.action(description="Check credentials against the EAGLE", permissions=["change"])
    def check_user_credentials(self, request: HttpRequest, queryset: QuerySet[EagleUser]) -> None:
        users = list(queryset[: MAX_CREDENTIAL_CHECKS + 1])
        if len(users) > MAX_CREDENTIAL_CHECKS:
            self.message_user(
                request,
                f"Select at most {MAX_CREDENTIAL_CHECKS} users: each check waits for a gateway.",
                messages.ERROR,
            )
            return
        for user in users:
            check = check_credentials(user)
            self.message_user(
                request, check.describe(), messages.SUCCESS if check.ok else messages.WARNING
            )

    @admin.action(description="Delete selected users and purge their data", permissions=["delete"])
    def delete_and_purge(
        self, request: HttpRequest, queryset: QuerySet[EagleUser]
    ) -> TemplateResponse | None:
        if request.POST.get("confirm") != "yes":
            users = list(queryset)
            counts = dict(
                HourFile.objects.filter(cloud_id__in=[u.cloud_id for u in users])
                .values_list("cloud_id")
                .annotate(n=Count("pk"))
            )
            for user in users:
                # Shown by the confirmation page: an attribute of this page's objects only.
                user.hour_file_count = counts.get(user.cloud_id, 0)  # type: ignore[attr-defined]
            context = {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "queryset": users,
                "action_checkbox_name": ACTION_CHECKBOX_NAME,
                "title": "Delete and purge data",
            }
            return TemplateResponse(
                request, "admin/users/eagleuser/purge_confirmation.html", context
            )
        for user in queryset:
            cloud_id = user.cloud_id
            # remove_user() clears the pk; the admin's history needs it, and only once it succeeded.
            history_record = copy(user)
            try:
                report = remove_user(user, purge=True)
            except PurgeIncompleteError as exc:
                self.message_user(
                    request,
                    f"{cloud_id}: the purge stopped ({exc.cause}) after removing "
                    f"{exc.report.summary()}; the user is kept, suspended. Run it again to finish.",
                    messages.ERROR,
                )
                continue
            # The one user just removed: a list serves as well as the queryset Django passes.
            self.log_deletions(request, [history_record])  # type: ignore[arg-type]
            summary = report.summary() if report else ""
            self.message_user(
                request, f"{cloud_id} deleted with its data: {summary}.", messages.SUCCESS
            )
        return None

    @admin.action(
        description="Issue new push tokens (replacing any earlier ones)", permissions=["change"]
    )
    def issue_push_tokens(
        self, request: HttpRequest, queryset: QuerySet[EagleUser]
    ) -> TemplateResponse:
        site = settings.SITE_URL.rstrip("/")
        issued = [
            {
                "cloud_id": user.cloud_id,
                "url": f"{site}/api/push/{user.cloud_id}",
                "token": user.issue_push_token(),
                "is_push": user.connection_type == ConnectionType.PUSH,
            }
            for user in queryset
        ]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "issued_tokens": issued,
            "title": "Push tokens",
        }
        # Shown once, on this page only: never in a message (kept in a cookie) or a cache.
        response = TemplateResponse(request, "admin/users/eagleuser/push_tokens.html", context)
        add_never_cache_headers(response)
        return response

    @admin.action(description="Revoke push tokens", permissions=["change"])
    def revoke_push_tokens(self, request: HttpRequest, queryset: QuerySet[EagleUser]) -> None:
        revoked = sum(user.revoke_push_token() for user in queryset)
        self.message_user(request, f"{revoked} push token(s) revoked.", messages.SUCCESS)
