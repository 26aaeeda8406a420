from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from api.health import healthz
from api.metrics import metrics
from api.urls import api_root
from ingestion.console.playground import playground

handler500 = "api.exceptions.server_error"

urlpatterns = [
    # The site is its console: the admin, whose index is the fleet dashboard.
    path("", RedirectView.as_view(pattern_name="admin:index"), name="home"),
    path(
        "favicon.ico",
        RedirectView.as_view(url=static("rainlog/favicon.svg"), permanent=True),
        name="favicon",
    ),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/", include("api.urls")),
    # The API's root answers without its trailing slash too, like every route of the API.
    path("api", api_root),
    path("dev/playground", playground, name="playground"),
    # Sign-in pages for the browsable API (session authentication).
    path("api-auth/", include("rest_framework.urls")),
]
