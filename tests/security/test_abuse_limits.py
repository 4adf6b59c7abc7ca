"""Abuse limits (docs/errors.md#rate-limits, docs/rules.md#replay-protection): rate limits per tenant and per
client address (429, counted in the shared cache), the request-body limit (413) and optional one-time use
of upstream tokens (replay refused while the upstream token is still valid)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.cache import cache
from django.core.management import call_command

from exchange.config.apply import config_apply
from exchange.config.export import config_export
from exchange.config.files import config_load
from exchange.models import ExchangeRecord, Issuer
from tests.conftest import runtime_clear

from . import jose
from .endpoints import ENDPOINTS, assert_nothing_allowed, assert_refused, send

ROOT = Path(__file__).resolve().parents[2]
SHARED_CACHE = os.environ.get("CACHE_URL", "").startswith(("redis://", "rediss://"))
needs_shared_cache = pytest.mark.skipif(
    not SHARED_CACHE, reason="the default cache is per process; CI's second pass sets CACHE_URL=redis://…"
)


# --- rate limits ------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_tenant_rate_limit_counts_every_address_and_every_endpoint(
    endpoint, client, settings, tenant, upstream, allow_rule
):
    settings.JWTEX_RATE_LIMIT_PER_ADDRESS = 0
    tenant.rate_limit_per_minute = 3
    tenant.save()
    others = [e for e in ENDPOINTS if e != endpoint]
    assert send(others[0], client, upstream.mint(), REMOTE_ADDR="10.0.0.1").status_code == 200
    assert send(others[1], client, upstream.mint(), REMOTE_ADDR="10.0.0.2").status_code == 200
    assert send(endpoint, client, upstream.mint(), REMOTE_ADDR="10.0.0.3").status_code == 200
    response = send(endpoint, client, upstream.mint(), REMOTE_ADDR="10.0.0.4")
    body = assert_refused(endpoint, response, 429, "too_many_requests")
    assert 1 <= int(response["Retry-After"]) <= 60 and body["error_description"]
    # Refused before anything else: no audit row (a flood must not become a flood of inserts).
    assert ExchangeRecord.objects.count() == 3


def test_address_rate_limit_spans_tenants_and_garbage(client, settings, tenant, other_tenant, upstream, allow_rule):
    settings.JWTEX_RATE_LIMIT_PER_ADDRESS = 3
    assert send("raw", client, "garbage", slug="acme").status_code == 400  # counted: parsing comes after
    assert send("api", client, "garbage", slug="globex").status_code == 400
    assert send("rfc8693", client, upstream.mint(), slug="acme").status_code == 200
    for endpoint in ENDPOINTS:
        assert_refused(endpoint, send(endpoint, client, upstream.mint(), slug="acme"), 429, "too_many_requests")
    assert_refused("raw", send("raw", client, upstream.mint(), slug="globex"), 429, "too_many_requests")
    # Another address is not held back by this one.
    assert send("raw", client, upstream.mint(), REMOTE_ADDR="192.0.2.9").status_code == 200


def test_address_rate_limit_uses_the_address_the_trusted_proxy_saw(client, settings, upstream, allow_rule):
    settings.JWTEX_RATE_LIMIT_PER_ADDRESS = 1
    settings.JWTEX_TRUSTED_PROXY_COUNT = 1
    # Behind one proxy every request comes from the proxy's address; the client's is the last hop.
    assert send("raw", client, upstream.mint(), HTTP_X_FORWARDED_FOR="203.0.113.5").status_code == 200
    assert_refused(
        "raw", send("raw", client, upstream.mint(), HTTP_X_FORWARDED_FOR="203.0.113.5"), 429, "too_many_requests"
    )
    # A client cannot escape by prepending addresses of its own: only the proxy's hop counts.
    forged = "198.51.100.1, 203.0.113.5"
    assert_refused("raw", send("raw", client, upstream.mint(), HTTP_X_FORWARDED_FOR=forged), 429, "too_many_requests")
    assert send("raw", client, upstream.mint(), HTTP_X_FORWARDED_FOR="203.0.113.6").status_code == 200


def test_rate_limit_holds_across_runtime_rebuilds(client, settings, tenant, upstream, allow_rule):
    # The count lives in the cache, not in the per-process tenant runtime that a new process
    # (or a config change) rebuilds.
    settings.JWTEX_RATE_LIMIT_PER_ADDRESS = 0
    tenant.rate_limit_per_minute = 1
    tenant.save()
    assert send("raw", client, upstream.mint()).status_code == 200
    runtime_clear()
    assert_refused("raw", send("raw", client, upstream.mint()), 429, "too_many_requests")


@needs_shared_cache
def test_rate_limit_is_shared_with_another_process(settings, tenant):
    from exchange.services.rate_limits import rate_limit_hit

    now = time.time()
    rate_limit_hit("a:198.51.100.77", limit=2, now=now)
    rate_limit_hit("a:198.51.100.77", limit=2, now=now)
    code = (
        "import django, sys; django.setup()\n"
        "from exchange.services.rate_limits import rate_limit_hit\n"
        "from exchange.core.errors import RateLimited\n"
        "try:\n"
        f"    rate_limit_hit('a:198.51.100.77', limit=2, now={now!r})\n"
        "except RateLimited:\n"
        "    sys.exit(42)\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, timeout=60)
    assert result.returncode == 42, result.stderr.decode()[-2000:]


def test_cache_outage_does_not_turn_exchanges_into_500s(client, settings, monkeypatch, upstream, allow_rule):
    # Redis down: rate limits fail open (logged), the exchange still answers.
    def down(*args, **kwargs):
        raise ConnectionError("cache down")

    monkeypatch.setattr(cache, "add", down)
    monkeypatch.setattr(cache, "incr", down)
    for endpoint in ENDPOINTS:
        assert send(endpoint, client, upstream.mint()).status_code == 200
    # An unknown kid would refetch at most once per cool-down, counted in the cache: no 500 either.
    token = upstream.mint(headers={"kid": "unknown"})
    assert_refused("raw", send("raw", client, token), 401, "invalid_token")


# --- body size ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("exchangeable")
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_request_body_over_the_limit_is_413_before_it_is_read(endpoint, client, upstream):
    big = b"A" * (5 * 1024 * 1024)
    path = {"raw": "/t/acme/exchange", "rfc8693": "/t/acme/token", "api": "/api/v1/t/acme/exchange"}[endpoint]
    content_type = {
        "raw": "application/jwt",
        "rfc8693": "application/x-www-form-urlencoded",
        "api": "application/json",
    }[endpoint]
    response = client.generic("POST", path, data=big, content_type=content_type)
    assert_refused(endpoint, response, 413, "invalid_request")
    # A Content-Length that promises too much is refused on the header alone.
    response = client.generic("POST", path, data=b"x", content_type=content_type, CONTENT_LENGTH=str(10**9))
    assert response.status_code == 413, response.content
    assert_nothing_allowed()


@pytest.mark.usefixtures("exchangeable")
def test_token_size_limit_is_a_setting(client, settings, upstream):
    settings.JWTEX_MAX_TOKEN_BYTES = 1024
    token = upstream.mint(padding="x" * 1200)
    for endpoint in ENDPOINTS:
        assert_refused(endpoint, send(endpoint, client, token), 413, "invalid_request")


# --- one-time upstream tokens -----------------------------------------------------------------


@pytest.fixture
def one_time(exchangeable, issuer):
    issuer.replay_protection = True
    issuer.save()
    return issuer


@pytest.mark.usefixtures("one_time")
@pytest.mark.parametrize("first", ENDPOINTS)
@pytest.mark.parametrize("second", ENDPOINTS)
def test_replayed_upstream_token_is_refused(first, second, client, upstream):
    token = upstream.mint()
    assert send(first, client, token).status_code == 200
    body = assert_refused(second, send(second, client, token), 401, "invalid_token")
    if second != "rfc8693":
        assert body["error_description"] == "The token has already been used."
    record = ExchangeRecord.objects.order_by("-id").first()
    assert record.decision == "denied" and "replay" in record.reason
    # The jti is recorded, its digest is the cache key: never the token.
    assert token not in record.reason
    # A fresh token from the same workflow is fine.
    assert send(second, client, upstream.mint()).status_code == 200


@pytest.mark.usefixtures("one_time")
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_token_without_jti_is_refused_when_replay_protection_is_on(endpoint, client, upstream):
    for jti in (None, "", 123, ["a"]):
        claims = upstream.claims()
        if jti is None:
            claims.pop("jti")
        else:
            claims["jti"] = jti
        token = jose.signed({"alg": "RS256", "kid": upstream.rsa_kid}, claims, rsa_key=upstream.rsa_key)
        assert_refused(endpoint, send(endpoint, client, token), 401, "invalid_token")
    assert_nothing_allowed()


def test_replay_is_allowed_when_protection_is_off(client, exchangeable, upstream):
    token = upstream.mint()
    assert send("raw", client, token).status_code == 200
    assert send("raw", client, token).status_code == 200
    claims = upstream.claims()
    claims.pop("jti")
    assert (
        send(
            "raw", client, jose.signed({"alg": "RS256", "kid": upstream.rsa_kid}, claims, rsa_key=upstream.rsa_key)
        ).status_code
        == 200
    )


@pytest.mark.usefixtures("one_time")
def test_refused_exchange_does_not_use_up_the_token(client, allow_rule, upstream):
    # A token refused by policy (here: an audience the rule does not allow) is not consumed,
    # so the same workflow can retry with a correct request.
    token = upstream.mint()
    assert_refused("api", send("api", client, token, audience="elsewhere.example"), 403, "invalid_target")
    assert send("api", client, token).status_code == 200
    assert_refused("api", send("api", client, token), 401, "invalid_token")


def test_replay_mark_expires_with_the_upstream_token(one_time, monkeypatch):
    from exchange.services.rate_limits import upstream_jti_consume

    calls = []
    real_add = cache.add
    monkeypatch.setattr(
        cache, "add", lambda key, value, timeout: calls.append((key, timeout)) or real_add(key, value, timeout)
    )
    now = time.time()
    upstream_jti_consume(issuer=one_time.snapshot(), claims={"jti": "abc", "exp": now + 300}, now=now)
    ((key, timeout),) = calls
    assert 359 <= timeout <= 361  # exp - now + leeway: as long as the verifier would accept it
    assert key.startswith(f"jwtex:jti:{one_time.pk}:") and "abc" not in key
    # Another issuer's token with the same jti is a different token.
    other = Issuer(pk=one_time.pk + 1000, replay_protection=True)
    upstream_jti_consume(issuer=other.snapshot(), claims={"jti": "abc", "exp": now + 300}, now=now)


def test_replay_check_fails_closed_when_the_cache_is_down(client, one_time, monkeypatch, upstream):
    from exchange.services import rate_limits as limits

    monkeypatch.setattr(limits, "rate_limit_hit", lambda *a, **k: None)

    def down(*args, **kwargs):
        raise ConnectionError("cache down")

    monkeypatch.setattr(cache, "add", down)
    for endpoint in ENDPOINTS:
        assert_refused(endpoint, send(endpoint, client, upstream.mint()), 503, "temporarily_unavailable")
    assert_nothing_allowed()


@needs_shared_cache
def test_replay_is_refused_by_another_process(one_time, upstream):
    from exchange.services.rate_limits import upstream_jti_consume

    now = time.time()
    upstream_jti_consume(issuer=one_time.snapshot(), claims={"jti": "shared-jti", "exp": now + 300}, now=now)
    code = (
        "import django, sys; django.setup()\n"
        "from types import SimpleNamespace\n"
        "from exchange.core.errors import InvalidToken\n"
        "from exchange.services.rate_limits import upstream_jti_consume\n"
        "try:\n"
        f"    upstream_jti_consume(issuer=SimpleNamespace(pk={one_time.pk}, replay_protection=True,"
        " config=SimpleNamespace(leeway=60)),"
        f" claims={{'jti': 'shared-jti', 'exp': {now + 300!r}}}, now={now!r})\n"
        "except InvalidToken:\n"
        "    sys.exit(42)\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, timeout=60)
    assert result.returncode == 42, result.stderr.decode()[-2000:]


def test_replay_protection_round_trips_through_configuration_as_code(db, tmp_path):
    document = config_load(
        """
tenants:
  - slug: acme
    name: Acme
    issuers:
      - id: github
        issuer: https://token.actions.githubusercontent.com
        audiences: [sts.amazonaws.com]
        replay_protection: true
      - id: gitlab
        issuer: https://gitlab.com
        audiences: [sts.amazonaws.com]
    rules: []
"""
    )
    from django.utils import timezone

    config_apply(document=document, now=timezone.now())
    assert Issuer.objects.get(issuer_id="github").replay_protection is True
    assert Issuer.objects.get(issuer_id="gitlab").replay_protection is False
    exported = config_export()
    issuers = exported["tenants"][0]["issuers"]
    assert issuers[0]["replay_protection"] is True and "replay_protection" not in issuers[1]  # default left out
    # export → apply → export is identical, and the second apply changes nothing.
    path = tmp_path / "acme.json"
    path.write_text(json.dumps(exported))
    call_command("jwtex_apply", str(path), stdout=open(os.devnull, "w"))
    assert config_export() == exported
    report = config_apply(document=exported, now=timezone.now())
    assert not report.changed
    # A wrong type is a located error.
    from exchange.config.schema import ConfigError

    exported["tenants"][0]["issuers"][0]["replay_protection"] = "yes"
    with pytest.raises(ConfigError) as error:
        config_apply(document=exported, now=timezone.now())
    assert any("replay_protection" in path and "true or false" in message for path, message in error.value.errors)
