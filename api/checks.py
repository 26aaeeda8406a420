"""Deploy checks (`manage.py check --deploy`) of the API's own settings."""

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Tags, Warning, register


@register(Tags.security, deploy=True)
def check_metrics_token(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    if settings.METRICS_TOKEN or settings.DEBUG:
        return []
    return [
        Warning(
            "METRICS_TOKEN is not set: /metrics refuses every scrape.",
            hint="Set METRICS_TOKEN (or METRICS_TOKEN_FILE) and give Prometheus the same value "
            "as its bearer token (`authorization: {credentials: ...}` in the scrape config).",
            id="api.W001",
        )
    ]
