"""Content negotiation: DRF's (`?format=` first, then Accept, then the view's first renderer,
which is JSON wherever a view serves JSON), with an unknown `?format=` answered as a 400 naming
the formats served, where DRF answers a 404 that reads as "no such object"."""

from collections.abc import Iterable
from typing import Any

from rest_framework.exceptions import ValidationError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer


class FormatNegotiation(DefaultContentNegotiation):
    def filter_renderers(self, renderers: Iterable[BaseRenderer], format: str) -> list[Any]:
        renderers = list(renderers)
        chosen = [renderer for renderer in renderers if renderer.format == format]
        if not chosen:
            served = ", ".join(dict.fromkeys(str(renderer.format) for renderer in renderers))
            raise ValidationError({"format": [f"Use one of {served}."]})
        return chosen
