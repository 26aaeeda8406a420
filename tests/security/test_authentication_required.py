"""Every URL the project serves refuses strangers, except the few that are public on purpose.

The URLs are found by walking the resolver, so an endpoint added later is checked as soon as it is
routed: if it answers a stranger, this test fails until it asks for a sign-in or is added to
PUBLIC with the reason it may be public.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import product
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, include, path, resolve, reverse
from django.urls.exceptions import Resolver404
from django.utils.regex_helper import normalize
from pytest_django.fixtures import Settings

from tests.factories import EagleUserFactory
from users.models import ConnectionType

pytestmark = pytest.mark.django_db

# Route name -> why strangers may reach it.
PUBLIC = {
    "healthz": "load balancers and monitors probe it; it shows dependency states, no data",
    "metrics": "Prometheus scrapes it with METRICS_TOKEN; closed without one unless DEBUG "
    "(tests/security/test_no_enumeration.py)",
    "api:token": "where operators trade their password for a token (throttled)",
    "api:root": "links to the API's routes, no data: where a new client finds how to get a token",
    "favicon": "the site's icon, asked for by every browser",
    "api:push": "gateways authenticate with their own push token, checked by the view",
    "api:schema": "the OpenAPI schema holds routes and shapes, no data; client generators fetch it",
    "api:swagger": "renders the public schema",
    "api:redoc": "renders the public schema",
    "api:unknown": "answers any other path under /api/ with a 404 problem document, no data",
    "admin:login": "the sign-in page",
    "admin:logout": "signing out needs no sign-in",
    "rest_framework:login": "the browsable API's sign-in page",
    "rest_framework:logout": "signing out needs no sign-in",
}
METHODS = ("get", "post", "put", "patch", "delete")
# Values tried for URL parameters, by name; the first that the pattern accepts is used.
SAMPLE_VALUES = {
    "cloud_id": ["002738"],
    "app_label": ["users", "auth"],
    "action": ["check-credentials"],
    "url": ["no-such-page/"],
}
DEFAULT_SAMPLES = ["1", "x"]
LOGIN_PATHS = ("/admin/login/", "/api-auth/login/")


@dataclass(frozen=True)
class Route:
    name: str  # namespaced route name, or the view's dotted path when it has none
    regex: str  # the full pattern, from the root
    callback: Any


def routes(patterns: list[Any], prefix: str = "", namespace: str = "") -> Iterator[Route]:
    for entry in patterns:
        regex = prefix + entry.pattern.regex.pattern.removeprefix("^")
        if isinstance(entry, URLResolver):
            inner = ":".join(filter(None, [namespace, entry.namespace or ""]))
            yield from routes(entry.url_patterns, regex, inner)
        elif isinstance(entry, URLPattern):
            name = ":".join(filter(None, [namespace, entry.name])) if entry.name else None
            yield Route(name or entry.lookup_str, regex, entry.callback)


def sample_url(route: Route) -> str:
    """A concrete URL that resolves to `route`; AssertionError if none can be made."""
    for template, parameters in normalize(route.regex):
        choices = [SAMPLE_VALUES.get(name, DEFAULT_SAMPLES) for name in parameters]
        for values in product(*choices):
            url = "/" + template % dict(zip(parameters, values, strict=True))
            try:
                match = resolve(url)
            except Resolver404:
                continue
            if match.func is route.callback or match.func == route.callback:
                return url
    raise AssertionError(
        f"No sample URL for {route.name} ({route.regex}): add values for its parameters to "
        "SAMPLE_VALUES in tests/security/test_authentication_required.py."
    )


def project_routes() -> list[Route]:
    return list(routes(get_resolver().url_patterns))


def is_login_redirect(response: Any) -> bool:
    if response.status_code not in (301, 302):
        return False
    return urlsplit(response["Location"]).path in LOGIN_PATHS


def refusal(client: Client, method: str, url: str) -> str | None:
    """None if a stranger's request is refused: 401/403/405, a redirect to a sign-in page, or a
    redirect to a page that refuses in turn (the admin's `<id>/` to `<id>/change/`); otherwise
    what was answered."""
    for _ in range(3):
        response = getattr(client, method)(url)
        if response.status_code in (401, 403, 405) or is_login_redirect(response):
            return None
        if response.status_code in (301, 302) and not urlsplit(response["Location"]).netloc:
            url, method = response["Location"], "get"
            continue
        return f"{method.upper()} {url}: {response.status_code} {response.content[:200]!r}"
    return f"{method.upper()} {url}: redirects on and on"


def answers_to_strangers() -> dict[str, list[str]]:
    """Route name -> what it answered a stranger, for every non-public route that did not refuse."""
    client = Client()
    found = {}
    every_route = project_routes()
    # A route's other form (with or without the trailing slash) serves the same view.
    public_views = {route.callback for route in every_route if route.name in PUBLIC}
    for route in every_route:
        if route.name in PUBLIC or route.callback in public_views:
            continue
        url = sample_url(route)
        answers = [refusal(client, method, url) for method in METHODS]
        if any(answers):
            found[route.name] = [answer for answer in answers if answer]
    return found


@pytest.fixture(autouse=True)
def fresh_throttle() -> Iterator[None]:
    yield
    cache.clear()


def test_the_route_walk_finds_every_part_of_the_project() -> None:
    names = {route.name for route in project_routes()}

    for expected in ("api:user-readings", "api:logfile-download", "admin:index", "playground"):
        assert expected in names
    assert len(names) > 80
    assert set(PUBLIC) <= names, f"PUBLIC names routes that no longer exist: {set(PUBLIC) - names}"


def test_a_stranger_is_refused_by_every_route_that_is_not_public() -> None:
    assert answers_to_strangers() == {}


def open_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse("anyone may read this")


# The project's routes plus one that forgot to ask for a sign-in.
urlpatterns = [path("", include("rainlog.urls")), path("forgotten", open_view, name="forgotten")]


def test_a_new_route_that_answers_strangers_is_caught(settings: Settings) -> None:
    settings.ROOT_URLCONF = __name__

    assert list(answers_to_strangers()) == ["forgotten"]


def test_a_signed_in_viewer_who_is_not_staff_is_kept_out_of_the_admin(viewer: User) -> None:
    client = Client()
    client.force_login(viewer)
    let_in = []
    for route in project_routes():
        url = sample_url(route)
        if not url.startswith("/admin/") or route.name in PUBLIC:
            continue
        response = client.get(url)
        redirect = urlsplit(response.get("Location", "")).path
        # The admin's `<id>/` redirects to `<id>/change/`, which sends a viewer to the sign-in.
        if not (
            response.status_code in (403, 405)
            or is_login_redirect(response)
            or (response.status_code == 302 and redirect.startswith("/admin/"))
        ):
            let_in.append(f"{url}: {response.status_code}")

    assert let_in == []


def test_the_public_routes_answer_a_stranger() -> None:
    client = Client()

    assert client.get(reverse("healthz")).status_code in (200, 503)
    # Without METRICS_TOKEN (and DEBUG off) /metrics is closed to everyone.
    assert client.get(reverse("metrics")).status_code == 403
    assert client.get(reverse("admin:login")).status_code == 200
    assert client.get(reverse("rest_framework:login")).status_code == 200
    assert client.post(reverse("api:token"), {}).status_code == 400


def test_the_schema_and_its_pages_are_public() -> None:
    client = Client()

    for name in ("api:schema", "api:swagger", "api:redoc"):
        assert client.get(reverse(name)).status_code == 200, name


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"HTTP_AUTHORIZATION": "Bearer "}, 401),
        ({"HTTP_AUTHORIZATION": "Basic !!!not-base64"}, 401),
        ({"HTTP_X_PUSH_TOKEN": "rlp_not-the-token"}, 403),
        ({"HTTP_AUTHORIZATION": "Token rlp_not-the-token"}, 401),
    ],
)
def test_the_push_endpoint_refuses_a_missing_or_wrong_push_token(
    headers: dict[str, str], status: int
) -> None:
    user = EagleUserFactory(cloud_id="00a1b2", connection_type=ConnectionType.PUSH)
    user.issue_push_token()

    response = Client().post(
        "/api/push/00a1b2", data=b"<rainforest/>", content_type="text/xml", **headers
    )

    assert response.status_code == status, response.content
    assert response.json()["code"] == "push_rejected"
    if status == 401:
        assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_push_token_is_not_an_operator_token() -> None:
    user = EagleUserFactory(cloud_id="00a1b2", connection_type=ConnectionType.PUSH)
    token = user.issue_push_token()
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")

    for url in ("/api/users/", "/api/users/00a1b2", "/api/logfiles/", "/api/status/"):
        assert client.get(url).status_code == 401, url
