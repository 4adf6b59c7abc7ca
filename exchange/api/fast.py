"""The lean route (docs/design/pipeline.md#the-lean-route): the raw exchange and the issuer documents without Django's
request cycle.

``POST /t/T/exchange`` and ``GET /t/T/.well-known/{jwks.json,jwks,openid-configuration}`` are
answered by the same functions as their views (``views.raw_exchange``, ``views.jwks_view``,
``views.discovery_view``) and with the same security headers (Django's own
``SecurityMiddleware`` and ``XFrameOptionsMiddleware`` finish each response), but without the
middleware chain, URL resolving and request signals, which cost more than the exchange's
cryptography. ``ALLOWED_HOSTS`` is checked as Django checks it. Everything else — and anything
unusual (no Content-Length, a bad host, another method) — goes to Django unchanged.

``GET /healthz``, ``/readyz`` and ``/metrics`` are answered here too, whatever the ``Host``: a
probe or a scraper knows only an address (Kubernetes sends the pod's IP, a container's health
check ``127.0.0.1``), and these answers say nothing that depends on the host name.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable, Iterable

from django.core.exceptions import DisallowedHost
from django.core.handlers.exception import response_for_exception
from django.core.handlers.wsgi import WSGIRequest
from django.db import close_old_connections
from django.http import QueryDict
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware

from .. import timeline
from ..ablation import off
from . import operations, views

_EXCHANGE = re.compile(r"/t/([^/]+)/exchange")
_DOCUMENTS = re.compile(r"/t/([^/]+)/\.well-known/(jwks\.json|jwks|openid-configuration)")
# Answered for any Host (the module's docstring says why); GET and HEAD only, as the views say.
_PROBES = {"/healthz": operations.healthz, "/readyz": operations.readyz, "/metrics": operations.metrics}
_ANY_HOST = frozenset(_PROBES.values())
# After this many lean requests the tenants' runtimes are built: what exists then is frozen out of
# the garbage collector's walks (jwtex_site/wsgi.py froze what start-up made).
FREEZE_AFTER = 2000


class MachineRoutes:
    """WSGI middleware in front of Django's application."""

    def __init__(self, django_application: Callable) -> None:
        self.django = django_application
        self._finishers = (SecurityMiddleware(lambda request: None), XFrameOptionsMiddleware(lambda request: None))
        self._served = 0

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        route = self._route(environ)
        if route is None:
            return self.django(environ, start_response)
        timeline.begin()
        self._served += 1  # approximate under threads: it only picks a moment
        if self._served == FREEZE_AFTER:
            gc.freeze()
        if off("request"):  # a benchmark's (exchange/ablation.py): no request object, so no host check either
            request = _BareRequest(environ)
        else:
            request = WSGIRequest(environ)
        try:
            if route not in _ANY_HOST and not off("request"):
                request.get_host()  # ALLOWED_HOSTS, as CommonMiddleware checks it
        except DisallowedHost:
            return self.django(environ, start_response)
        try:
            try:
                response = route(request)
            except Exception as exc:  # noqa: BLE001 - as Django's own handler answers it (a logged 500)
                response = response_for_exception(request, exc)
            for finisher in () if off("headers") else self._finishers:
                response = finisher.process_response(request, response)
            if not response.has_header("Content-Length"):  # as CommonMiddleware sets it
                response.headers["Content-Length"] = str(len(response.content))
        finally:
            close_old_connections()  # what Django does at the end of a request
            timeline.end()
        start_response(f"{response.status_code} {response.reason_phrase}", list(response.items()))
        return [response.content]

    @staticmethod
    def _route(environ: dict) -> Callable | None:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD")
        if not path.startswith("/t/"):
            return _PROBES.get(path) if method in ("GET", "HEAD") else None
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


class _BareRequest:
    """What the exchange reads of a request, without Django's request object: the benchmark's
    ``request`` switch only (exchange/ablation.py), which measures what that object costs."""

    def __init__(self, environ: dict) -> None:
        self.META = environ
        self.GET = QueryDict(environ.get("QUERY_STRING", ""))
        self.body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
