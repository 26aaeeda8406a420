"""/metrics: Prometheus text exposition, computed from the database at each scrape.

Nothing is counted in process memory, so every web worker answers the same.

Adding metrics: write a function that returns `MetricFamily` objects and list it in `COLLECTORS`
below (one collector per concern, named after it). Names start with `rainlog_`, carry their unit
(`_seconds`, `_bytes`) and follow https://prometheus.io/docs/practices/naming/. A collector's
queries must stay cheap on tables that grow without bound (use an index, never count them whole).
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from ingestion.archive import audit
from ingestion.models import HourFile, HourFileState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class MetricFamily:
    name: str
    help: str
    type: str = "gauge"
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> None:
        self.samples.append((labels, value))

    def render(self) -> str:
        lines = [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.type}"]
        for labels, value in self.samples:
            label_text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
            lines.append(
                f"{self.name}{{{label_text}}} {value:g}" if labels else f"{self.name} {value:g}"
            )
        return "\n".join(lines) + "\n"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def archive_metrics() -> list[MetricFamily]:
    lag = audit.freshness(timezone.now())
    oldest = MetricFamily(
        "rainlog_archive_oldest_unshipped_age_seconds",
        "Age of the oldest hour with a file not yet verified in the archive (0 if none).",
    )
    oldest.add(lag.age_seconds)
    per_user = MetricFamily(
        "rainlog_archive_user_oldest_unshipped_age_seconds",
        "Per user with unshipped files: age of the oldest such hour.",
    )
    for user in lag.users:
        per_user.add(user.age_seconds, cloud_id=user.cloud_id)
    alert = MetricFamily(
        "rainlog_archive_freshness_alert_seconds",
        "Age of the oldest unshipped hour past which /healthz reports an error.",
    )
    alert.add(lag.alert_after_seconds)
    by_state = MetricFamily(
        "rainlog_archive_hour_files",
        "Hour files by state; verified files are not counted (they only grow).",
    )
    unshipped_states = [s for s in HourFileState.values if s != HourFileState.VERIFIED]
    for state, count in HourFile.objects.count_by_state(unshipped_states).items():
        by_state.add(count, state=state)
    return [oldest, per_user, alert, by_state]


COLLECTORS: list[Callable[[], Iterable[MetricFamily]]] = [
    archive_metrics,
]


def render_metrics() -> str:
    return "".join(family.render() for collect in COLLECTORS for family in collect())


def _authorised(request: HttpRequest) -> bool:
    supplied = request.headers.get("Authorization", "").removeprefix("Bearer ")
    return constant_time_compare(supplied, settings.METRICS_TOKEN)


@never_cache
@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    if not settings.METRICS_TOKEN and not settings.DEBUG:
        # Every cloud id is a label here: without a token, production keeps the page closed.
        return HttpResponse(
            "/metrics is closed: set METRICS_TOKEN and scrape with "
            "'Authorization: Bearer <METRICS_TOKEN>'.\n",
            status=403,
            content_type="text/plain",
        )
    if settings.METRICS_TOKEN and not _authorised(request):
        return HttpResponse("Unauthorised\n", status=401, content_type="text/plain")
    return HttpResponse(render_metrics(), content_type=CONTENT_TYPE)
