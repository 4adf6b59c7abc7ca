"""The admin's middleware, for the admin only (docs/design/pipeline.md#the-lean-route).

Sessions, CSRF, authentication, messages and login throttling serve people in the admin. The
exchange, discovery and JWKS endpoints (and health and metrics) have no session, no cookie and
no form: there each of these middleware passes the request straight on, so the hot path runs
only what it needs (security headers). Each class here is its Django original, so Django's own
checks still find it (the admin requires sessions, auth and messages).
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.exceptions import PermissionDenied
from django.middleware.csrf import CsrfViewMiddleware
from django.template.response import TemplateResponse

from exchange.services.revisions import revision_actor

from .login_throttle import LoginThrottleMiddleware

# Paths that never use a session, a cookie or a form.
MACHINE_PREFIXES = ("/t/", "/api/v1/", "/healthz", "/readyz", "/metrics")


def for_machines(request) -> bool:
    return request.path_info.startswith(MACHINE_PREFIXES)


class _AdminOnly:
    def __call__(self, request):
        if for_machines(request):
            return self.get_response(request)
        return super().__call__(request)


class AdminSessionMiddleware(_AdminOnly, SessionMiddleware):
    pass


class AdminCsrfViewMiddleware(_AdminOnly, CsrfViewMiddleware):
    def process_view(self, request, callback, callback_args, callback_kwargs):
        if for_machines(request):
            return None
        return super().process_view(request, callback, callback_args, callback_kwargs)


class AdminAuthenticationMiddleware(_AdminOnly, AuthenticationMiddleware):
    pass


class AdminMessageMiddleware(_AdminOnly, MessageMiddleware):
    pass


class AdminLoginThrottleMiddleware(_AdminOnly, LoginThrottleMiddleware):
    pass


ADMIN_PREFIX = "/admin/"


class AdminRevisionActorMiddleware:
    """Changes an admin request makes are recorded as its user's, from "admin" (revisions,
    docs/operations.md#revisions). The user is read only if the request changes a tenant's
    configuration. After the authentication middleware; admin paths only."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path_info.startswith(ADMIN_PREFIX):
            return self.get_response(request)

        def username() -> str:
            user = getattr(request, "user", None)
            return user.get_username() if user is not None and user.is_authenticated else ""

        with revision_actor(author=username, source="admin"):
            return self.get_response(request)


class AdminForbiddenMiddleware:
    """A 403 in the admin (a role that does not allow the action) is the admin's own styled page
    saying so, and one line in the log ("Forbidden: /admin/…", Django's own for every 4xx) — not
    a traceback and a bare "403 Forbidden": refusing is the admin working as meant."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, PermissionDenied) or not request.path_info.startswith(ADMIN_PREFIX):
            return None
        context = {**admin.site.each_context(request), "title": "Not allowed", "reason": str(exception)}
        return TemplateResponse(request, "jwtex/forbidden.html", context, status=403)
