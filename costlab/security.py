"""Request-level security: the Content Security Policy header and the client's address."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse


def csp_header_value(policy: dict[str, list[str]]) -> str:
    return "; ".join(" ".join([directive, *sources]) for directive, sources in policy.items())


class ContentSecurityPolicyMiddleware:
    """Sends settings.SECURE_CSP on every response. Django 6 ships the same setting and a
    middleware of its own; this one stands in for it on Django 5.2."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.header = csp_header_value(settings.SECURE_CSP)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        # Django's technical error pages (DEBUG only) style and script themselves inline.
        debug_page = settings.DEBUG and response.status_code in (404, 500)
        if not debug_page:
            response.headers.setdefault("Content-Security-Policy", self.header)
        return response


def client_address(request: HttpRequest) -> str:
    """The address the request came from. Behind COSTLAB_PROXY_COUNT proxies it is the
    X-Forwarded-For entry the outermost of them appended: entries left of it are whatever
    the client chose to send, so they are never trusted."""
    proxies = settings.COSTLAB_PROXY_COUNT
    if proxies > 0:
        header: str = request.headers.get("x-forwarded-for", "")
        forwarded = [a.strip() for a in header.split(",") if a]
        if len(forwarded) >= proxies:
            return forwarded[-proxies]
    return str(request.META.get("REMOTE_ADDR", ""))
