"""What a load balancer and a monitoring system ask a node (docs/operations.md#health-metrics-and-logs):
is it ready, and the metrics of all its server processes.

Readiness is a few lines of our own rather than django-health-check: the contract is three
checks with a 1 s budget each, answered at once even when a dependency hangs (each check runs
in a thread of its own; one still stuck from a previous probe is reported, not started
again), and a body that names what failed without leaking configuration. That library's
checks have no per-check deadline and its views render its own formats.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime

from celery import current_app
from django.core.cache import cache
from django.db import connection
from django.utils import timezone
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from ..audit.writer import audit_writer
from ..conf import jwtex_settings
from ..models import Issuer, KeyState, SigningKey, SweepRun
from ..publish.status import publication_statuses_list

__all__ = ["CHECK_BUDGET", "metrics_text", "readiness", "sweep_succeeded"]

CHECK_BUDGET = 1.0  # seconds, per dependency

_running: dict[str, threading.Thread] = {}
_running_lock = threading.Lock()


def _database() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connection.close()  # this thread's own connection


def _cache() -> None:
    key = f"jwtex:readyz:{threading.get_ident()}"
    cache.set(key, 1, timeout=5)
    if cache.get(key) != 1:
        raise RuntimeError("the cache did not keep a value")


def _broker() -> None:
    with current_app.connection_for_write() as broker:
        broker.ensure_connection(max_retries=1, timeout=CHECK_BUDGET)


def _checks() -> dict[str, Callable[[], None]]:
    checks = {"database": _database, "broker": _broker}
    if jwtex_settings.shared_cache:
        checks["cache"] = _cache
    return checks


def _start(name: str, check: Callable[[], None], results: dict[str, str]) -> threading.Thread | None:
    def run() -> None:
        try:
            check()
            results[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"; the class name only
            results[name] = f"failed: {type(exc).__name__}"

    with _running_lock:
        previous = _running.get(name)
        if previous is not None and previous.is_alive():
            results[name] = "failed: a previous check is still waiting"
            return None
        thread = threading.Thread(target=run, name=f"jwtex-readyz-{name}", daemon=True)
        _running[name] = thread
    thread.start()
    return thread


def readiness() -> tuple[bool, dict[str, str]]:
    """Whether every dependency answered within its budget, and each one's verdict."""
    results: dict[str, str] = {}
    threads = {name: _start(name, check, results) for name, check in _checks().items()}
    deadline = time.monotonic() + CHECK_BUDGET
    for name, thread in threads.items():
        if thread is not None:
            thread.join(max(deadline - time.monotonic(), 0.0))
            results.setdefault(name, f"failed: no answer within {CHECK_BUDGET:g} s")
    verdicts = {name: results[name] for name in threads}
    return all(verdict == "ok" for verdict in verdicts.values()), verdicts


# --- metrics ------------------------------------------------------------------------------


def sweep_succeeded(*, name: str, now: datetime) -> None:
    SweepRun.objects.update_or_create(name=name, defaults={"succeeded_at": now})


def _gauge(name: str, documentation: str, labels: Iterable[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


class _DatabaseCollector:
    """Gauges read when scraped: a few indexed queries, whatever the traffic."""

    def collect(self):
        now = timezone.now()
        yield from _issuer_gauges(now)
        yield from _signing_key_gauges(now)
        yield from _publication_gauges()
        spool = _gauge("jwtex_audit_spool_records", "Audit records waiting in this node's local spool.", [])
        spool.add_metric([], audit_writer().spool.pending())
        yield spool
        sweeps = _gauge(
            "jwtex_sweep_last_success_timestamp_seconds", "When each Celery sweep last succeeded.", ["sweep"]
        )
        for name, at in SweepRun.objects.values_list("name", "succeeded_at"):
            sweeps.add_metric([name], at.timestamp())
        yield sweeps


def _issuer_gauges(now: datetime):
    fetched = _gauge(
        "jwtex_issuer_jwks_age_seconds",
        "Seconds since the issuer's key set was last fetched (or confirmed unchanged).",
        ["tenant", "issuer"],
    )
    changed = _gauge(
        "jwtex_issuer_jwks_unchanged_seconds", "Seconds since the issuer's key set last changed.", ["tenant", "issuer"]
    )
    rows = Issuer.objects.filter(enabled=True, static_jwks__isnull=True).values_list(
        "tenant__slug", "issuer_id", "jwks_fetched_at", "jwks_changed_at"
    )
    for slug, issuer_id, fetched_at, changed_at in rows:
        if fetched_at is not None:
            fetched.add_metric([slug, issuer_id], (now - fetched_at).total_seconds())
        if changed_at is not None:
            changed.add_metric([slug, issuer_id], (now - changed_at).total_seconds())
    return fetched, changed


def _signing_key_gauges(now: datetime):
    age = _gauge(
        "jwtex_signing_key_age_seconds", "Seconds since the tenant's active signing key began signing.", ["tenant"]
    )
    due = _gauge(
        "jwtex_signing_key_rotation_due_seconds",
        "Seconds until the tenant's active key is due to be replaced (negative: overdue).",
        ["tenant"],
    )
    rows = SigningKey.objects.filter(state=KeyState.ACTIVE).values_list(
        "tenant__slug", "activated_at", "created_at", "tenant__key_rotation_interval"
    )
    for slug, activated_at, created_at, interval in rows:
        since = activated_at or created_at
        age.add_metric([slug], (now - since).total_seconds())
        due.add_metric([slug], (since - now).total_seconds() + interval)
    return age, due


def _publication_gauges():
    """Per tenant with a published issuer URL (docs/endpoints.md#published-issuer-url)."""
    published = _gauge(
        "jwtex_issuer_publish_last_success_timestamp_seconds",
        "When the tenant's issuer documents were last published and confirmed by their read-back.",
        ["tenant"],
    )
    live = _gauge(
        "jwtex_issuer_published_keys", "Keys confirmed live at the tenant's published issuer URL.", ["tenant"]
    )
    alarm = _gauge(
        "jwtex_issuer_publish_alarm",
        "1 when the published key set differs from the one jwtex serves and signs with, or the last "
        "publish or check failed.",
        ["tenant"],
    )
    failures = _gauge("jwtex_issuer_publish_failures", "Failed publish or check attempts in a row.", ["tenant"])
    for status in publication_statuses_list():
        if status.published_at is not None:
            published.add_metric([status.tenant], status.published_at.timestamp())
        live.add_metric([status.tenant], len(status.live))
        alarm.add_metric([status.tenant], 1 if status.alarm else 0)
        failures.add_metric([status.tenant], status.failures)
    return published, live, alarm, failures


def metrics_text() -> bytes:
    """The node's metrics in the Prometheus text format: the counters and the latency histogram
    of every server process (multiprocess mode) or of this one, and the gauges read now."""
    if jwtex_settings.metrics_dir:
        processes = CollectorRegistry()
        MultiProcessCollector(processes, path=jwtex_settings.metrics_dir)
    else:
        processes = REGISTRY
    now_read = CollectorRegistry()
    now_read.register(_DatabaseCollector())
    return generate_latest(processes) + generate_latest(now_read)
