"""The Content-Security-Policy's one exception: the API's own HTML pages.

The admin and the console run under the strict policy of settings.CONTENT_SECURITY_POLICY: no
inline script, handler or style. The browsable API, Swagger UI and ReDoc are pages of DRF and
drf-spectacular that need inline scripts and styles; their HTML answers (under /api/ and
/api-auth/) get 'unsafe-inline' added, and every other answer keeps the strict policy.
"""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

API_PAGE_PREFIXES = ("/api/", "/api-auth/")
API_PAGES_POLICY = {
    "script-src": ["'unsafe-inline'"],
    "style-src": ["'unsafe-inline'"],
    # ReDoc renders the schema in a web worker it makes from a blob.
    "worker-src": ["'self'", "blob:"],
}


class ApiPagesPolicyMiddleware:
    """Listed after django-csp's middleware, so that it marks the answer before that one reads it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        is_html = response.get("Content-Type", "").startswith("text/html")
        if is_html and request.path.startswith(API_PAGE_PREFIXES):
            # django-csp reads this per-response attribute; HttpResponse does not declare it.
            response._csp_update = API_PAGES_POLICY  # type: ignore[attr-defined]
        return response
