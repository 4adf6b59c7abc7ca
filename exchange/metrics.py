"""The counters and the histogram the hot path writes (docs/operations.md#metrics), with prometheus-client.

Under ``make serve`` every web process writes its values to files in ``PROMETHEUS_MULTIPROC_DIR``
(prometheus-client's multiprocess mode, set up by jwtex_site/serve.py before any process
starts), so whichever process answers a scrape reports the node's total. Without it (``make
run``, tests, a management command) the values live in this process's default registry.

Labels are bounded: tenant slugs and issuer ids of configured tenants (never a slug someone
typed into a URL), endpoint, decision and error code from fixed sets. No subject, no jti.
What is read from the database (key-set ages, signing keys, sweeps) is not here: it is
computed when scraped (exchange.services.metrics).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = ["exchange_observed", "jwks_fetch_observed", "mapper_call_observed", "request_refused_observed"]

EXCHANGES = Counter(
    "jwtex_exchanges",
    "Token exchanges answered, by tenant, endpoint, decision (allowed, denied) and error code ('' when allowed).",
    ["tenant", "endpoint", "decision", "error"],
)
EXCHANGE_SECONDS = Histogram(
    "jwtex_exchange_duration_seconds",
    "Time from the start of an exchange to its answer (audit record durable), by endpoint and decision.",
    ["endpoint", "decision"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
JWKS_FETCHES = Counter(
    "jwtex_jwks_fetches",
    "Fetches of an upstream issuer's key set, by tenant, issuer id and outcome.",
    ["tenant", "issuer", "outcome"],
)


def exchange_observed(*, tenant: str, endpoint: str, decision: str, error: str, seconds: float) -> None:
    EXCHANGES.labels(tenant, endpoint, decision, error).inc()
    EXCHANGE_SECONDS.labels(endpoint, decision).observe(seconds)


def jwks_fetch_observed(*, tenant: str, issuer: str, outcome: str) -> None:
    JWKS_FETCHES.labels(tenant, issuer, outcome).inc()


# Not records (docs/operations.md#refusals-that-are-not-records). No tenant label: on the lean
# route the slug of a request refused for its wire format is not looked up, so it is whatever its sender typed.
REFUSED = Counter(
    "jwtex_requests_refused",
    "Exchange requests refused for their wire format before a token was read (no audit record: an empty, "
    "oversized or unreadable body, a wrong content type or method), by endpoint and HTTP status.",
    ["endpoint", "status"],
)


def request_refused_observed(*, endpoint: str, status: int) -> None:
    REFUSED.labels(endpoint, str(status)).inc()


MAPPER_CALLS = Counter(
    "jwtex_mapper_calls",
    "Mapper webhook calls by tenant and outcome (allowed, denied, failed, invalid, circuit open, busy).",
    ["tenant", "outcome"],
)


def mapper_call_observed(*, tenant: str, outcome: str) -> None:
    MAPPER_CALLS.labels(tenant, outcome).inc()
