"""``/healthz``, ``/readyz`` and ``/metrics`` (docs/endpoints.md#health-readiness-and-metrics): not rate
limited, not audited, and no configuration or secret in any answer. GET (and HEAD) only."""

from __future__ import annotations

import hmac

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_safe
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4  # what every Prometheus parses

from ..conf import jwtex_settings
from ..services.health import metrics_text, readiness

NO_STORE = {"Cache-Control": "no-store"}


@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. No dependency is looked at."""
    return JsonResponse({"status": "ok"}, headers=NO_STORE)


@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: the database, the shared cache (if there is one) and the broker each answer
    within 1 s; otherwise 503 naming which did not."""
    ready, checks = readiness()
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503, headers=NO_STORE
    )


@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    token = jwtex_settings.metrics_token
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return HttpResponse(
                "A bearer token is required (JWTEX_METRICS_TOKEN).\n",
                status=401,
                content_type="text/plain; charset=utf-8",
                headers={**NO_STORE, "WWW-Authenticate": 'Bearer realm="metrics"'},
            )
    return HttpResponse(metrics_text(), content_type=CONTENT_TYPE_PLAIN_0_0_4, headers=NO_STORE)
