"""GET /api/: where everything in the API is, with links; readable without a token (it holds no
data), so that a new client finds where to get one."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

# (name in the answer, route name, what it is); routes of one user are given as templates.
LINKS = (
    ("token", "api:token", "POST username and password: an API token (Authorization: Token …)."),
    ("schema", "api:schema", "The OpenAPI schema."),
    ("docs", "api:swagger", "The schema as Swagger UI pages."),
    ("users", "api:users", "EAGLE users: list, create, and one by cloud_id."),
    ("status", "api:status", "The fleet at a glance."),
    ("incidents", "api:incidents", "Runs of fetch failures."),
    ("logfiles", "api:logfiles", "Hour files: where each is, shipped or waiting."),
)
USER_ROUTES = {
    "user": "users/{cloud_id}",
    "readings": "users/{cloud_id}/readings",
    "aggregate": "users/{cloud_id}/readings/aggregate",
    "coverage": "users/{cloud_id}/coverage",
    "latest": "event/{cloud_id}",
}


class ApiRootView(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []
    renderer_classes = [JSONRenderer, BrowsableAPIRenderer]

    @extend_schema(
        operation_id="api_root",
        summary="Links to everything in the API",
        auth=[],
        responses={
            200: inline_serializer(
                "ApiRoot",
                {
                    "links": serializers.DictField(child=serializers.URLField()),
                    "descriptions": serializers.DictField(child=serializers.CharField()),
                    "user_routes": serializers.DictField(child=serializers.CharField()),
                },
            )
        },
    )
    def get(self, request: Request) -> Response:
        base = request.build_absolute_uri(reverse("api:root"))
        return Response(
            {
                "links": {name: reverse(route, request=request) for name, route, _ in LINKS},
                "descriptions": {name: text for name, _, text in LINKS},
                "user_routes": {name: base + route for name, route in USER_ROUTES.items()},
            }
        )
