"""The lean route (docs/design/pipeline.md#the-lean-route): the raw exchange and the issuer documents without Django's
request cycle.

``POST /t/T/exchange`` and ``GET /t/T/.well-known/{jwks.json,jwks,openid-configuration}`` are
answered by the same functions as their views (``views.raw_exchange``, ``views.jwks_view``,
``views.discovery_view``) and with the same security headers (Django's own
``SecurityMiddleware`` and ``XFrameOptionsMiddleware`` finish each response), but without the
middleware chain, URL resolving and request signals, which cost more than the exchange's
cryptography. ``ALLOWED_HOSTS`` is checked as Django checks it. Everything else — and anything
unusual (no Content-Length, a bad host, another method) — goes to Django unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from django.core.exceptions import DisallowedHost
from django.core.handlers.exception import response_for_exception
from django.core.handlers.wsgi import WSGIRequest
from django.db import close_old_connections
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware

from . import views

_EXCHANGE = re.compile(r"/t/([^/]+)/exchange")
_DOCUMENTS = re.compile(r"/t/([^/]+)/\.well-known/(jwks\.json|jwks|openid-configuration)")


class MachineRoutes:
    """WSGI middleware in front of Django's application."""

    def __init__(self, django_application: Callable) -> None:
        self.django = django_application
        self._finishers = (SecurityMiddleware(lambda request: None), XFrameOptionsMiddleware(lambda request: None))

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        route = self._route(environ)
        if route is None:
            return self.django(environ, start_response)
        request = WSGIRequest(environ)
        try:
            request.get_host()  # ALLOWED_HOSTS, as CommonMiddleware checks it
        except DisallowedHost:
            return self.django(environ, start_response)
        try:
            try:
                response = route(request)
            except Exception as exc:  # noqa: BLE001 - as Django's own handler answers it (a logged 500)
                response = response_for_exception(request, exc)
            for finisher in self._finishers:
                response = finisher.process_response(request, response)
            if not response.has_header("Content-Length"):  # as CommonMiddleware sets it
                response.headers["Content-Length"] = str(len(response.content))
        finally:
            close_old_connections()  # what Django does at the end of a request
        start_response(f"{response.status_code} {response.reason_phrase}", list(response.items()))
        return [response.content]

    @staticmethod
    def _route(environ: dict) -> Callable | None:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD")
        if not path.startswith("/t/"):
            return None
        if method == "POST" and environ.get("CONTENT_LENGTH"):
            match = _EXCHANGE.fullmatch(path)
            if match:
                return lambda request: views.raw_exchange(request, match[1])
        elif method == "GET":
            match = _DOCUMENTS.fullmatch(path)
            if match:
                view = views.discovery_view if match[2] == "openid-configuration" else views.jwks_view
                return lambda request: view(request, match[1])
        return None
