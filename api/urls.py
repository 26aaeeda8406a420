"""The API's routes. Every route answers with and without its trailing slash, the same way (no
redirect, which would lose a POST's body); the schema and the docs list the form named here.
Any other path under /api/ answers a 404 problem document, never an HTML page.

A cloud_id in a path reaches its view in lower case: `/api/users/00AA02` is the user `00aa02`,
and every answer names it so."""

from collections.abc import Callable
from typing import Any

from django.urls import URLPattern, path, re_path, register_converter
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from api import events, fleet_readings, hour_files, incidents, push, readings, root, status
from api.auth import ObtainTokenView, RevokeAllTokensView, RevokeTokenView
from api.exceptions import unknown_route
from api.users import user_detail, user_list
from users.cloud_ids import CLOUD_ID_CHARACTERS, lower_if_text


class CloudIdConverter:
    """A well-formed cloud_id, in lower case."""

    regex = CLOUD_ID_CHARACTERS

    def to_python(self, value: str) -> str:
        return lower_if_text(value)

    def to_url(self, value: str) -> str:
        return value


class AnyCloudIdConverter(CloudIdConverter):
    """Any path segment, in lower case: the view answers a malformed cloud_id itself."""

    regex = "[^/]+"


register_converter(CloudIdConverter, "cloud_id")
register_converter(AnyCloudIdConverter, "any_cloud_id")

app_name = "api"


def route(pattern: str, view: Callable[..., Any], name: str) -> list[URLPattern]:
    """`pattern` under `name`, and the same pattern with its trailing slash added or removed."""
    other = pattern.removesuffix("/") if pattern.endswith("/") else f"{pattern}/"
    return [path(pattern, view, name=name), path(other, view)]


api_root = root.ApiRootView.as_view()

urlpatterns = [
    # `/api` without the slash is routed in rainlog/urls.py, outside this prefix.
    path("", api_root, name="root"),
    *route("schema/", SpectacularAPIView.as_view(), "schema"),
    *route("schema/swagger/", SpectacularSwaggerView.as_view(url_name="api:schema"), "swagger"),
    *route("schema/redoc/", SpectacularRedocView.as_view(url_name="api:schema"), "redoc"),
    *route("auth/token/", ObtainTokenView.as_view(), "token"),
    *route("auth/logout/", RevokeTokenView.as_view(), "logout"),
    *route("auth/logout-all/", RevokeAllTokensView.as_view(), "logout-all"),
    # The fleet's readings from the Parquet dataset (api/fleet_readings.py).
    *route(
        "fleet/readings/aggregate",
        fleet_readings.FleetAggregateView.as_view(),
        "fleet-readings-aggregate",
    ),
    # A user's readings, aggregates and coverage (api/readings.py).
    *route(
        "users/<cloud_id:cloud_id>/readings", readings.UserReadingsView.as_view(), "user-readings"
    ),
    *route(
        "users/<cloud_id:cloud_id>/readings/aggregate",
        readings.UserAggregateView.as_view(),
        "user-readings-aggregate",
    ),
    *route(
        "users/<cloud_id:cloud_id>/coverage", readings.UserCoverageView.as_view(), "user-coverage"
    ),
    # Hour files (api/hour_files.py), fleet status (api/status.py), incidents (api/incidents.py).
    *route("logfiles/", hour_files.HourFileListView.as_view(), "logfiles"),
    *route("logfiles/<int:pk>/", hour_files.HourFileDetailView.as_view(), "logfile"),
    *route(
        "logfiles/<int:pk>/download", hour_files.HourFileDownloadView.as_view(), "logfile-download"
    ),
    *route("status/", status.FleetStatusView.as_view(), "status"),
    *route("incidents/", incidents.IncidentListView.as_view(), "incidents"),
    *route("incidents/<int:pk>/", incidents.IncidentDetailView.as_view(), "incident"),
    *route(
        "incidents/<int:pk>/resolve", incidents.IncidentResolveView.as_view(), "incident-resolve"
    ),
    # The seed's route: a user's latest reading, logged or ?fresh=1 from the gateway (api/events.py).
    *route("event/<cloud_id:cloud_id>", events.EventView.as_view(), "event"),
    # Gateways in uploader mode (api/push.py): any cloud_id reaches the view, which answers in JSON.
    *route("push/<any_cloud_id:cloud_id>", push.PushView.as_view(), "push"),
    # The seed's routes; any cloud_id reaches the view, so that a malformed one is a 400.
    *route("users/", user_list, "users"),
    *route("users/<any_cloud_id:cloud_id>", user_detail, "user"),
    re_path(r"^(?P<route>.+)$", unknown_route, name="unknown"),
]
