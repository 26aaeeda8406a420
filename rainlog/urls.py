from django.contrib import admin
from django.urls import include, path

from api.health import healthz
from api.metrics import metrics
from ingestion.console.playground import playground

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/", include("api.urls")),
    path("dev/playground", playground, name="playground"),
    # Sign-in pages for the browsable API (session authentication).
    path("api-auth/", include("rest_framework.urls")),
]
