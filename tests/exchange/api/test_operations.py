"""/healthz, /readyz and /metrics (docs/operations.md#health-metrics-and-logs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import dj_database_url
import pytest
from django.db.utils import ConnectionHandler
from django.utils.connection import ConnectionProxy
from prometheus_client.parser import text_string_to_metric_families

from exchange.conf import jwtex_settings
from exchange.models import ExchangeRecord, SweepRun
from exchange.services import health
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.django_db


def samples(client, **headers) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain; version=0.0.4")
    found = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def exchanges(found, **labels) -> float:
    return sum(
        v
        for (name, lab), v in found.items()
        if name == "jwtex_exchanges_total" and all(dict(lab).get(k) == w for k, w in labels.items())
    )


def test_healthz_answers_without_looking_at_anything(client, monkeypatch):
    monkeypatch.setattr(health, "_database", lambda: (_ for _ in ()).throw(AssertionError("not for liveness")))
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert response["Cache-Control"] == "no-store"
    assert client.post("/healthz").status_code == 405


def shared_cache_ok() -> dict:
    """The cache is checked only when it is shared (CACHE_URL, as in .ci/run's second pass)."""
    return {"cache": "ok"} if jwtex_settings.shared_cache else {}


def test_readyz_checks_the_database_and_the_broker(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok", **shared_cache_ok()}}
    assert not ExchangeRecord.objects.exists()  # not audited


def test_a_hanging_dependency_is_reported_within_the_budget_and_not_checked_twice(client, monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(health, "_database", lambda: release.wait(10))
    try:
        started = time.monotonic()
        first = client.get("/readyz")
        assert time.monotonic() - started < health.CHECK_BUDGET + 0.5
        assert first.status_code == 503
        assert first.json()["checks"] == {
            "database": "failed: no answer within 1 s",
            "broker": "ok",
            **shared_cache_ok(),
        }
        second = client.get("/readyz")
        assert second.json()["checks"]["database"] == "failed: a previous check is still waiting"
    finally:
        release.set()


def _readyz_in_a_process(tmp_path, **env: str) -> tuple[int, dict]:
    """/readyz of a process whose environment (``env``) points dependencies at closed ports."""
    script = (
        "import django, json; django.setup(); from django.test import Client; "
        "r = Client().get('/readyz', HTTP_HOST='127.0.0.1'); print(r.status_code, r.content.decode())"
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("JWTEX_", "DJANGO_", "CELERY_"))}
    environment.update(
        DJANGO_SETTINGS_MODULE="jwtex_site.settings",
        JWTEX_VAR_DIR=str(tmp_path),
        JWTEX_KEY_ENCRYPTION_KEYS="test-key-encryption-key-0123456789",
        JWTEX_LOG_LEVEL="CRITICAL",
        **env,
    )
    out = (
        subprocess.run(
            [sys.executable, "-c", script],
            cwd=REPO_ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    status, body = out.split(" ", 1)
    return int(status), json.loads(body)


UNREACHABLE_DATABASE = "postgres://jwtex:secret@127.0.0.1:1/jwtex"


@pytest.fixture
def checks_of_earlier_probes_finished():
    """In this process, a check an earlier test left waiting (the hanging one above, released at
    its end) has finished, so this test's probe runs every check afresh."""
    for thread in list(health._running.values()):
        thread.join(5)


def test_readyz_of_a_process_with_unreachable_dependencies_names_each_without_saying_where_they_are(tmp_path):
    # One process whose environment points its database, shared cache and broker at a closed
    # port each (what each one alone does to the answer: the tests below).
    status, body = _readyz_in_a_process(
        tmp_path,
        DATABASE_URL=UNREACHABLE_DATABASE,
        CACHE_URL="redis://127.0.0.1:1/0",
        CELERY_BROKER_URL="redis://127.0.0.1:1/0",
    )
    assert status == 503 and body["status"] == "unavailable"
    assert set(body["checks"]) == {"database", "cache", "broker"}
    assert all(verdict.startswith("failed: ") for verdict in body["checks"].values()), body
    assert "127.0.0.1" not in json.dumps(body) and "secret" not in json.dumps(body)


def test_readyz_is_503_naming_an_unreachable_database_without_saying_where_it_is(
    client, monkeypatch, checks_of_earlier_probes_finished
):
    # The check's connection goes to a real PostgreSQL address nothing listens on (one
    # connection per thread, as django.db.connection is).
    unreachable = {**dj_database_url.parse(UNREACHABLE_DATABASE), "OPTIONS": {"connect_timeout": 3}}
    databases = ConnectionHandler({"default": unreachable})
    monkeypatch.setattr(health, "connection", ConnectionProxy(databases, "default"))
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "failed: OperationalError", "broker": "ok", **shared_cache_ok()}
    assert "127.0.0.1" not in response.content.decode() and "secret" not in response.content.decode()


def test_readyz_is_503_naming_an_unreachable_shared_cache(client, settings, checks_of_earlier_probes_finished):
    # As jwtex_site/settings.py configures CACHE_URL=redis://127.0.0.1:1/0.
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "KEY_PREFIX": "jwtex",
            "OPTIONS": {"socket_timeout": 2, "socket_connect_timeout": 2},
        }
    }
    settings.JWTEX_SHARED_CACHE = True
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "ok", "broker": "ok", "cache": "failed: ConnectionError"}


def test_metrics_count_every_exchange_by_tenant_decision_and_error(client, upstream, allow_rule):
    before = samples(client)
    for _ in range(3):
        assert client.post("/t/acme/exchange", upstream.mint(), content_type="application/jwt").status_code == 200
    for _ in range(2):
        refused = client.post("/t/acme/exchange", upstream.mint(ref="refs/heads/x"), content_type="application/jwt")
        assert refused.status_code == 403
    client.post("/t/no-such-tenant/exchange", upstream.mint(), content_type="application/jwt")
    after = samples(client)
    assert (
        exchanges(after, tenant="acme", decision="allowed") - exchanges(before, tenant="acme", decision="allowed") == 3
    )
    denied = exchanges(after, tenant="acme", decision="denied", error="access_denied")
    assert denied - exchanges(before, tenant="acme", decision="denied", error="access_denied") == 2
    assert exchanges(after, tenant="no-such-tenant") == 0  # a slug typed into a URL is never a label
    latency = ("jwtex_exchange_duration_seconds_count", (("decision", "allowed"), ("endpoint", "raw")))
    assert after[latency] - before.get(latency, 0) == 3


def test_refusals_before_the_token_are_counted_not_recorded(client, tenant, upstream, allow_rule):
    """docs/operations.md#refusals-that-are-not-records: no record, one count each, no tenant label."""
    from exchange.models import ExchangeRecord

    def refused(found, endpoint, status):
        return found.get(("jwtex_requests_refused_total", (("endpoint", endpoint), ("status", status))), 0)

    before = samples(client)
    answers = [
        client.post("/t/acme/exchange", b"", content_type="application/jwt"),  # empty body
        client.post("/t/acme/exchange", b"a=b", content_type="application/x-www-form-urlencoded"),  # a form
        client.post("/t/acme/exchange", b"x" * 70_000, content_type="application/jwt"),  # too large
        client.get("/t/acme/exchange"),  # method
        client.post("/t/acme/token", b"{}", content_type="application/json"),  # content type
        client.post("/api/v1/t/acme/exchange", b"{not json", content_type="application/json"),  # bad JSON
        client.post("/api/v1/t/acme/exchange", b"x", content_type="text/plain"),  # content type
    ]
    assert [a.status_code for a in answers] == [400, 400, 413, 405, 400, 400, 400], [a.content for a in answers]
    after = samples(client)
    assert refused(after, "raw", "400") - refused(before, "raw", "400") == 2
    assert refused(after, "raw", "413") - refused(before, "raw", "413") == 1
    assert refused(after, "raw", "405") - refused(before, "raw", "405") == 1
    assert refused(after, "rfc8693", "400") - refused(before, "rfc8693", "400") == 1
    assert refused(after, "api", "400") - refused(before, "api", "400") == 2
    assert not ExchangeRecord.objects.exists()
    assert client.post("/t/acme/exchange", upstream.mint(), content_type="application/jwt").status_code == 200
    assert (
        refused(samples(client), "raw", "200") == 0 and ExchangeRecord.objects.count() == 1
    )  # an exchange is a record


def test_metrics_read_key_ages_the_spool_and_the_sweeps_when_scraped(client, tenant, issuer, signing_key):
    from datetime import UTC, datetime

    SweepRun.objects.create(name="sweep_issuers", succeeded_at=datetime(2026, 12, 1, tzinfo=UTC))
    found = samples(client)
    assert found[("jwtex_sweep_last_success_timestamp_seconds", (("sweep", "sweep_issuers"),))] == 1796083200.0
    assert found[("jwtex_signing_key_age_seconds", (("tenant", "acme"),))] >= 0
    assert ("jwtex_signing_key_rotation_due_seconds", (("tenant", "acme"),)) in found
    assert found[("jwtex_audit_spool_records", ())] == 0


def test_the_sweeps_note_their_success(db):
    from exchange import tasks

    tasks.sweep_issuers()
    assert SweepRun.objects.filter(name="sweep_issuers").exists()


def test_metrics_ask_for_the_bearer_token_when_one_is_set(client, settings):
    settings.JWTEX_METRICS_TOKEN = "s3cret-scrape-token"
    refused = client.get("/metrics")
    assert refused.status_code == 401 and refused["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-scrape-token").status_code == 200
