"""POST /api/push/{cloud_id}: readings pushed by an EAGLE gateway in uploader mode.

Authenticated by the user's push token (issued by an operator: `manage.py push_token CLOUD_ID
--issue` or the admin action), not by operator tokens. The body is checked and decoded at once;
the writing is done by a django-q2 worker, so the gateway gets its answer quickly:

- 202 accepted, with the readings queued;
- 400 the body is not UTF-8, or broken XML, JSON or gzip; 413 it is too large (or unpacks to more
  than PUSH_MAX_BODY_BYTES); 415 it is neither XML nor JSON, or has an encoding other than gzip;
  422 it holds nothing rainlog records or a reading that cannot be decoded or believed;
- 401 no push token; 403 not the push token of this cloud_id (also when there is no such user:
  the answers do not tell which cloud ids exist); 409 the user is not in push mode, or is
  suspended.

An acceptance is JSON with `status` "accepted" and a `detail` saying what was accepted; a refusal
is a problem document (docs/api.md, "Errors") with code `push_rejected` and a `detail` saying
why. A refused push writes nothing. The logic is in ingestion.push.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api.exceptions import Problem
from api.schema import error
from ingestion import push

UPLOADER_EXAMPLE = """<?xml version="1.0"?>
<rainforest macId="0xd8d5b9000000" version="undefined" timestamp="1772366400s">
<InstantaneousDemand>
<DeviceMacId>0xd8d5b90000001234</DeviceMacId>
<MeterMacId>0x00135003007c1234</MeterMacId>
<TimeStamp>0x3120e100</TimeStamp>
<Demand>0x0004d2</Demand>
<Multiplier>0x00000001</Multiplier>
<Divisor>0x000003e8</Divisor>
<DigitsRight>0x03</DigitsRight>
<DigitsLeft>0x06</DigitsLeft>
<SuppressLeadingZero>Y</SuppressLeadingZero>
</InstantaneousDemand>
</rainforest>
"""


class PushView(APIView):
    # Gateways authenticate with their push token, checked by ingestion.push; operator
    # authentication (and its CSRF checks) does not apply here.
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        # Uploaders send all sorts of Accept headers; the answer is JSON whatever they ask for.
        renderer = JSONRenderer()
        return renderer, renderer.media_type

    @extend_schema(
        summary="Push readings from an EAGLE uploader",
        description=__doc__,
        request={
            "application/xml": OpenApiTypes.STR,
            "application/json": OpenApiTypes.OBJECT,
        },
        responses={
            202: OpenApiResponse(OpenApiTypes.OBJECT, description="Accepted and queued."),
            400: error("Not UTF-8, or broken XML or JSON."),
            401: error("No push token."),
            403: error("Not the push token of this cloud_id, or no such user."),
            409: error("The user is not in push mode, or is suspended."),
            413: error("The body is too large."),
            415: error("Neither XML nor JSON."),
            422: error("Nothing rainlog records, or a reading that cannot be decoded or believed."),
        },
        examples=[OpenApiExample("Uploader XML", value=UPLOADER_EXAMPLE, request_only=True)],
        auth=[],
        tags=["push"],
    )
    def post(self, request: Request, cloud_id: str) -> Response:
        received_at = timezone.now()
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        limit = settings.PUSH_MAX_BODY_BYTES
        if declared > limit:
            raise rejected(413, f"the body is larger than {limit} bytes")
        token = push.token_from_headers(request.headers)
        try:
            accepted = push.accept_push(
                cloud_id,
                token,
                read_body(request, limit),
                received_at,
                request.headers.get("Content-Encoding", ""),
            )
        except push.PushRejectedError as rejection:
            raise rejected(rejection.status, rejection.message) from None
        return Response(accepted.describe(), status=202)


def read_body(request: Request, limit: int) -> bytes:
    """The request body, read to its end or to one byte over `limit` (which tells an oversized
    body without reading all of it).

    Django reads a body without Content-Length as empty; a chunked upload has none. The server
    (gunicorn) de-chunks `wsgi.input` and ends it where the body ends, so it is read from there.
    """
    meta = request.META
    if (
        meta.get("CONTENT_LENGTH")
        or "chunked" not in meta.get("HTTP_TRANSFER_ENCODING", "").lower()
    ):
        return request.read(limit + 1)
    stream = meta["wsgi.input"]
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = stream.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


# Uploaders that send HTTP Basic (the token as password) do so only when the challenge offers it.
CHALLENGE = 'Bearer realm="rainlog push", Basic realm="rainlog push"'


def rejected(status: int, detail: str) -> Problem:
    problem = Problem(status, detail, "push_rejected")
    if status == 401:
        # Read by DRF's handler for WWW-Authenticate; the stubs do not declare it.
        problem.auth_header = CHALLENGE  # type: ignore[attr-defined]
    return problem
