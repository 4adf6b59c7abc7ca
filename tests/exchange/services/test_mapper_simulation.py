"""The simulator and the mapper webhook (docs/mapper.md#in-the-simulator): a simulated call says so to the mapper (in
the body and in the bearer's claims), never counts toward the breaker or the concurrency limit of
real exchanges, and an auditor's simulation calls nothing outside at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jwt
import pytest
from django.urls import reverse

from exchange.models import ExchangeRecord, Issuer
from exchange.services import mapper as mapper_module
from exchange.services.simulator import claims_simulate, token_simulate
from tests.conftest import REPO_ROOT, make_tenant, poll
from tests.exchange.services.test_mapper import (  # noqa: F401 - fixtures
    GITHUB_CLAIMS,
    answer,
    exchange,
    insecure,
    mapper_rule,
    webhook,
)
from tests.servers import free_port
from tests.upstreams import Route, UpstreamServer

pytestmark = pytest.mark.django_db


def bearer_claims(client, seen) -> dict:
    bearer = seen.headers["authorization"].removeprefix("Bearer ")
    jwks = client.get("/t/acme/.well-known/jwks.json").json()
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(bearer)["kid"]].key
    return jwt.decode(bearer, key, algorithms=["ES256", "RS256"], options={"verify_aud": False})


def test_a_simulated_call_says_so_in_the_body_and_the_signed_bearer(
    client, tenant, issuer, upstream, insecure, webhook
):
    mapper_rule(tenant, issuer, f"{webhook.url}/map")
    answer(webhook, {"allow": True, "claims": {}})
    simulation = claims_simulate(tenant=tenant, issuer=issuer, claims=upstream.claims(), outbound=True)
    assert simulation.allowed and simulation.mapper.simulated
    [seen] = webhook.requests
    body = json.loads(seen.body)
    assert body["simulation"] is True and body["issuerId"] == "ci" and body["version"] == "1"
    claims = bearer_claims(client, seen)
    assert claims["simulation"] is True and claims["sub"] == "ci" and claims["aud"] == f"{webhook.url}/map"


def test_a_real_exchange_sends_exactly_specs_body_and_no_simulation_claim(
    client, tenant, issuer, upstream, insecure, webhook
):
    mapper_rule(tenant, issuer, f"{webhook.url}/map")
    answer(webhook, {"allow": True, "claims": {}})
    assert exchange(client, upstream)[0].status_code == 200
    [seen] = webhook.requests
    assert set(json.loads(seen.body)) == {"version", "issuerId", "claims"}
    assert "simulation" not in bearer_claims(client, seen)


def test_failing_simulations_never_open_the_breaker_of_real_exchanges(
    client, tenant, issuer, upstream, insecure, webhook, monkeypatch
):
    observed = []
    monkeypatch.setattr(mapper_module, "mapper_call_observed", lambda **kw: observed.append(kw))
    mapper_rule(tenant, issuer, f"{webhook.url}/map")
    answer(webhook, {"error": "down"}, status=503)
    for _ in range(mapper_module.BREAKER_FAILURES * 2):
        failed = claims_simulate(tenant=tenant, issuer=issuer, claims=upstream.claims(), outbound=True)
        assert failed.mapper.outcome == "failed" and not failed.allowed
    assert observed == []  # the metrics count real traffic only
    answer(webhook, {"allow": True, "claims": {}})
    response, record = exchange(client, upstream)
    assert response.status_code == 200 and record.mapper_outcome == "allowed"
    assert len(webhook.requests) == mapper_module.BREAKER_FAILURES * 2 + 1


def test_a_simulation_still_calls_a_mapper_whose_breaker_is_open_and_says_so(
    client, tenant, issuer, upstream, insecure, webhook
):
    mapper_rule(tenant, issuer, f"{webhook.url}/map")
    answer(webhook, {"error": "down"}, status=503)
    for _ in range(mapper_module.BREAKER_FAILURES):
        exchange(client, upstream)
    assert exchange(client, upstream)[1].mapper_outcome == "circuit open"
    answer(webhook, {"allow": True, "claims": {}})  # fixed: the operator checks it before real traffic resumes
    simulation = claims_simulate(tenant=tenant, issuer=issuer, claims=upstream.claims(), outbound=True)
    assert simulation.allowed and simulation.mapper.live_circuit_open
    assert any("Real exchanges are not calling this mapper" in note for note in simulation.notes)
    assert exchange(client, upstream)[1].mapper_outcome == "circuit open"  # the breaker is real traffic's, untouched


def test_simulations_and_real_exchanges_never_share_concurrency_slots(
    client, tenant, issuer, upstream, insecure, webhook
):
    mapper_rule(tenant, issuer, f"{webhook.url}/map")
    answer(webhook, {"allow": True, "claims": {}})
    live = mapper_module._slots_of(tenant.pk)
    for _ in range(mapper_module.MAPPER_CONCURRENCY):  # real traffic holds every slot of the tenant
        assert live.acquire(blocking=False)
    try:
        assert claims_simulate(tenant=tenant, issuer=issuer, claims=upstream.claims(), outbound=True).allowed
    finally:
        for _ in range(mapper_module.MAPPER_CONCURRENCY):
            live.release()
    simulated = mapper_module._slots_of(tenant.pk, simulated=True)
    for _ in range(mapper_module.SIMULATION_CONCURRENCY):  # simulations hold all of theirs
        assert simulated.acquire(blocking=False)
    try:
        busy = claims_simulate(tenant=tenant, issuer=issuer, claims=upstream.claims(), outbound=True)
        assert busy.mapper.outcome == "busy" and busy.error.status == 503
        assert exchange(client, upstream)[0].status_code == 200  # real traffic is not held up by them
    finally:
        for _ in range(mapper_module.SIMULATION_CONCURRENCY):
            simulated.release()


# ------------------------------------------------------------------------------ auditors


def simulate_in_admin(client, tenant, issuer, **data):
    return client.post(reverse("admin:exchange_rule_simulate"), {"tenant": tenant.pk, "issuer": issuer.pk, **data})


def test_an_auditors_simulation_shows_the_request_but_calls_no_mapper(
    admin_client_for, tenant, issuer, upstream, insecure, webhook
):
    mapper_rule(tenant, issuer, f"{webhook.url}/map")
    answer(webhook, {"allow": True, "claims": {"team": "payments"}})
    claims = json.dumps(upstream.claims())
    auditor = simulate_in_admin(admin_client_for(tenant, "auditor"), tenant, issuer, mode="claims", claims=claims)
    token = simulate_in_admin(admin_client_for(tenant, "auditor"), tenant, issuer, mode="token", token=upstream.mint())
    assert webhook.requests == []
    for response in (auditor, token):
        result = response.context["result"]
        assert result.undecided and result.mapper.outcome == "not called" and result.mapper.request["simulation"]
        html = response.content.decode()
        assert "not decided" in html and "Request body it would be sent" in html and "calls nothing outside" in html
    operator = simulate_in_admin(admin_client_for(tenant, "operator"), tenant, issuer, mode="claims", claims=claims)
    assert operator.context["result"].allowed and len(webhook.requests) == 1
    assert "called for real, as a simulation" in operator.content.decode()
    assert not ExchangeRecord.objects.exists()


def test_a_rule_to_try_that_hands_off_to_a_mapper_calls_it_only_for_an_operator(
    admin_client_for, tenant, issuer, upstream, insecure, webhook
):
    """The simulator's rule to try is any role's, and may name its own mapper URL: an auditor's
    still calls nothing outside, an operator's call is marked as a simulation."""
    answer(webhook, {"allow": True, "claims": {}})
    draft = json.dumps({"name": "try", "issuers": ["ci"], "effect": "mapper", "mapper": {"url": f"{webhook.url}/map"}})
    claims = json.dumps(upstream.claims())
    auditor = simulate_in_admin(
        admin_client_for(tenant, "auditor"), tenant, issuer, mode="claims", claims=claims, rule=draft
    )
    result = auditor.context["result"]
    assert webhook.requests == [] and result.undecided and result.mapper.outcome == "not called"
    assert result.trace[0].rule_name == "try (trying, not saved)"
    operator = simulate_in_admin(
        admin_client_for(tenant, "operator"), tenant, issuer, mode="claims", claims=claims, rule=draft
    )
    assert operator.context["result"].allowed and operator.context["result"].mapper.simulated
    [seen] = webhook.requests
    assert json.loads(seen.body)["simulation"] is True
    assert not ExchangeRecord.objects.exists()


def test_an_auditors_token_simulation_fetches_no_upstream_keys(admin_client_for, tenant, upstream, settings):
    settings.JWTEX_ALLOW_INSECURE_ISSUERS = True
    server = UpstreamServer()
    try:
        server.routes["/.well-known/openid-configuration"] = Route(
            body=json.dumps({"issuer": server.url, "jwks_uri": f"{server.url}/jwks"}).encode()
        )
        server.routes["/jwks"] = Route(body=json.dumps(upstream.jwks).encode())
        issuer = Issuer.objects.create(tenant=tenant, issuer_id="ci", issuer=server.url, audiences=[upstream.audience])
        token = upstream.mint(iss=server.url)
        auditor = token_simulate(tenant=tenant, issuer=issuer, token=token)
        assert server.requests == [] and auditor.stage == "verification" and auditor.error.status == 503
        assert auditor.error.description == "The upstream issuer's keys are not stored, and nothing is fetched here."
        assert token_simulate(tenant=tenant, issuer=issuer, token=token, outbound=True).stage == "rules"
        assert server.requests  # an operator's simulation fetched them: now an auditor's verifies with them
        fetched = len(server.requests)
        assert token_simulate(tenant=tenant, issuer=issuer, token=token).stage == "rules"  # verified, then no rule
        rotated = upstream.mint(iss=server.url, headers={"kid": "rotated"})
        unknown_kid = token_simulate(tenant=tenant, issuer=issuer, token=rotated)
        assert unknown_kid.error.status == 401 and len(server.requests) == fetched  # no refetch either
    finally:
        server.close()


# ------------------------------------------------------------------------ the example mapper


def test_the_example_mapper_answers_a_simulation_the_same_and_logs_it_as_one(
    live_server, settings, transactional_db, upstream, tmp_path
):
    settings.JWTEX_PUBLIC_URL = live_server.url
    settings.JWTEX_ALLOW_INSECURE_ISSUERS = True
    port = free_port()
    url = f"http://127.0.0.1:{port}/map"
    log = tmp_path / "mapper.log"
    env = {**os.environ, "JWTEX_ISSUER": f"{live_server.url}/t/acme", "MAPPER_URL": url}
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "examples" / "mapper.py"), str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        tenant = make_tenant("acme")
        issuer = Issuer.objects.create(
            tenant=tenant,
            issuer_id="ci",
            issuer=upstream.issuer,
            audiences=[upstream.audience],
            static_jwks=upstream.jwks,
        )
        mapper_rule(tenant, issuer, url)
        assert poll(lambda: _listening(port), timeout=10, interval=0.05)
        allowed = claims_simulate(tenant=tenant, issuer=issuer, claims=upstream.claims(**GITHUB_CLAIMS), outbound=True)
        denied = claims_simulate(
            tenant=tenant, issuer=issuer, claims=upstream.claims(repository_owner="else"), outbound=True
        )
        assert allowed.allowed and allowed.mapper.answer["allow"] is True
        assert denied.mapper.outcome == "denied"
    finally:
        process.terminate()
        process.wait(timeout=10)
    lines = log.read_text().splitlines()
    assert "simulation (nothing to change): ci 'octo-org/octo-repo' -> allow" in lines
    denials = [
        line for line in lines if line.startswith("simulation (nothing to change): ci ") and line.endswith("deny")
    ]
    assert len(denials) == 1


def _listening(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False
