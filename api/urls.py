import functools
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponseBase
from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from api import events, fleet_readings, hour_files, incidents, push, readings, root, status
from api.auth import ObtainTokenView, RevokeAllTokensView, RevokeTokenView
from api.users import user_detail, user_list
from users.cloud_ids import CLOUD_ID_CHARACTERS, lower_if_text

app_name = "api"
CLOUD_ID = CLOUD_ID_CHARACTERS

View = Callable[..., HttpResponseBase]


def cloud_id_lowered(view: View) -> View:
    """The view, given the cloud_id of its path in lower case: `/api/users/00AA02` is the user
    `00aa02`, and every answer names it so."""

    @functools.wraps(view)
    def lowered(request: HttpRequest, *args: Any, cloud_id: str, **kwargs: Any) -> HttpResponseBase:
        return view(request, *args, cloud_id=lower_if_text(cloud_id), **kwargs)

    return lowered


urlpatterns = [
    path("", root.ApiRootView.as_view(), name="root"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("schema/swagger/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="swagger"),
    path("schema/redoc/", SpectacularRedocView.as_view(url_name="api:schema"), name="redoc"),
    path("auth/token/", ObtainTokenView.as_view(), name="token"),
    path("auth/logout/", RevokeTokenView.as_view(), name="logout"),
    path("auth/logout-all/", RevokeAllTokensView.as_view(), name="logout-all"),
    # The fleet's readings from the Parquet dataset (api/fleet_readings.py).
    path(
        "fleet/readings/aggregate",
        fleet_readings.FleetAggregateView.as_view(),
        name="fleet-readings-aggregate",
    ),
    # A user's readings, aggregates and coverage (api/readings.py), before the users routes.
    re_path(
        rf"^users/(?P<cloud_id>{CLOUD_ID})/readings$",
        cloud_id_lowered(readings.UserReadingsView.as_view()),
        name="user-readings",
    ),
    re_path(
        rf"^users/(?P<cloud_id>{CLOUD_ID})/readings/aggregate$",
        cloud_id_lowered(readings.UserAggregateView.as_view()),
        name="user-readings-aggregate",
    ),
    re_path(
        rf"^users/(?P<cloud_id>{CLOUD_ID})/coverage$",
        cloud_id_lowered(readings.UserCoverageView.as_view()),
        name="user-coverage",
    ),
    # Hour files (api/hour_files.py), fleet status (api/status.py), incidents (api/incidents.py).
    path("logfiles/", hour_files.HourFileListView.as_view(), name="logfiles"),
    path("logfiles/<int:pk>/", hour_files.HourFileDetailView.as_view(), name="logfile"),
    path(
        "logfiles/<int:pk>/download",
        hour_files.HourFileDownloadView.as_view(),
        name="logfile-download",
    ),
    path("status/", status.FleetStatusView.as_view(), name="status"),
    path("incidents/", incidents.IncidentListView.as_view(), name="incidents"),
    path("incidents/<int:pk>/", incidents.IncidentDetailView.as_view(), name="incident"),
    path(
        "incidents/<int:pk>/resolve",
        incidents.IncidentResolveView.as_view(),
        name="incident-resolve",
    ),
    # The seed's route: a user's latest reading, logged or ?fresh=1 from the gateway (api/events.py).
    re_path(
        rf"^event/(?P<cloud_id>{CLOUD_ID})/?$",
        cloud_id_lowered(events.EventView.as_view()),
        name="event",
    ),
    # Gateways in uploader mode (api/push.py): any cloud_id reaches the view, which answers in JSON.
    re_path(
        r"^push/(?P<cloud_id>[^/]+)/?$", cloud_id_lowered(push.PushView.as_view()), name="push"
    ),
    # The seed's clients call /api/users/002738 without a trailing slash: both forms work.
    re_path(r"^users/?$", user_list, name="users"),
    re_path(r"^users/(?P<cloud_id>[^/]+)/?$", cloud_id_lowered(user_detail), name="user"),
]
