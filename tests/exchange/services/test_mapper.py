"""The mapper webhook (docs/mapper.md#mapper-webhooks): a rule whose decision and output come from an
HTTPS webhook — which can deny, fail or misbehave in every way without a 5xx, an invalid token
or any harm to another tenant."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time

import jwt
import pytest

from exchange.core.aws import AWS_TAGS_CLAIM
from exchange.core.errors import AccessDenied, TemporarilyUnavailable
from exchange.models import ExchangeRecord, Rule
from exchange.services import mapper as mapper_module
from exchange.services.exchange import token_exchange
from tests.aws_acceptance import sts_problems
from tests.conftest import REPO_ROOT, make_tenant, poll
from tests.servers import free_port
from tests.upstreams import Route, UpstreamServer

NINE = ["actor", "event_name", "ref", "repository", "run_attempt", "run_id", "run_number", "sha", "workflow"]
GITHUB_CLAIMS = {"event_name": "push", "run_attempt": "1", "run_number": "42", "sha": "a" * 40}


@pytest.fixture
def webhook():
    server = UpstreamServer()
    yield server
    server.close()


@pytest.fixture
def insecure(settings):
    settings.JWTEX_ALLOW_INSECURE_ISSUERS = True  # the test mappers are http on loopback
    return settings


def mapper_rule(tenant, issuer, url: str, **fields) -> Rule:
    rule = Rule.objects.create(
        tenant=tenant, position=10, name="mapped", when="true", effect="mapper", mapper_url=url, **fields
    )
    rule.issuers.add(issuer)
    return rule


def answer(server: UpstreamServer, document, **route) -> None:
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    server.routes["/map"] = Route(body=body, headers={"Content-Type": "application/json"}, **route)


def exchange(client, upstream, **claims):
    response = client.post("/t/acme/exchange?issuerId=ci", upstream.mint(**claims), content_type="application/jwt")
    return response, ExchangeRecord.objects.order_by("-id").first()


# --------------------------------------------------------------------- the example mapper, live


@pytest.fixture
def example_mapper(live_server, settings, transactional_db, upstream):
    """examples/mapper.py as a real process, checking its caller through the tenant's served JWKS."""
    settings.JWTEX_PUBLIC_URL = live_server.url
    settings.JWTEX_ALLOW_INSECURE_ISSUERS = True
    port = free_port()
    url = f"http://127.0.0.1:{port}/map"
    env = {**os.environ, "JWTEX_ISSUER": f"{live_server.url}/t/acme", "MAPPER_URL": url}
    process = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "examples" / "mapper.py"), str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        import socket

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return True
            except OSError:
                return False

        assert poll(listening, timeout=10, interval=0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_example_mapper_allows_octo_org_with_exactly_nine_tags_and_denies_others(
    example_mapper, client, upstream, settings
):
    tenant = make_tenant("acme")
    from exchange.models import Issuer

    issuer = Issuer.objects.create(
        tenant=tenant, issuer_id="ci", issuer=upstream.issuer, audiences=[upstream.audience], static_jwks=upstream.jwks
    )
    mapper_rule(tenant, issuer, example_mapper)
    allowed, record = exchange(client, upstream, **GITHUB_CLAIMS)
    assert allowed.status_code == 200, (allowed.content, record.reason)
    token = allowed.content.decode()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert sorted(claims[AWS_TAGS_CLAIM]["principal_tags"]) == sorted(NINE)
    assert claims[AWS_TAGS_CLAIM]["principal_tags"]["run_number"] == ["42"]
    assert claims["iss"] == f"{settings.JWTEX_PUBLIC_URL}/t/acme" and claims["aud"] == "sts.amazonaws.com"
    assert claims["repository"] == "octo-org/octo-repo"  # the rest of the claims, as mapper.js wrote them
    assert sts_problems(token) == []
    assert record.mapper_outcome == "allowed" and record.rule_name == "mapped" and record.mapper_latency_ms is not None
    denied, record = exchange(client, upstream, repository_owner="someone-else", **GITHUB_CLAIMS)
    assert (
        denied.status_code == 403
        and denied.json()["error_description"] == "Rule 'mapped': the mapper denied this exchange."
    )
    assert record.mapper_outcome == "denied" and record.reason.endswith(": mapper denied")


def test_the_example_mappers_tags_claim_is_in_the_token_byte_for_byte(example_mapper, client, upstream, monkeypatch):
    """docs/mapper.md#the-answer: the claims come out exactly as the mapper wrote them — its tags claim member for
    member and in its order, the empty transitive_tag_keys list included (a rule's token leaves an
    empty list out; a mapper's answer is passed on as it is)."""
    tenant = make_tenant("acme")
    from exchange.models import Issuer

    issuer = Issuer.objects.create(
        tenant=tenant, issuer_id="ci", issuer=upstream.issuer, audiences=[upstream.audience], static_jwks=upstream.jwks
    )
    mapper_rule(tenant, issuer, example_mapper)
    answers = []
    real_post = mapper_module.json_post
    monkeypatch.setattr(mapper_module, "json_post", lambda *a, **kw: answers.append(real_post(*a, **kw)) or answers[-1])

    allowed, record = exchange(client, upstream, **GITHUB_CLAIMS)

    assert allowed.status_code == 200, (allowed.content, record.reason)
    [answer] = answers
    written = answer["claims"][AWS_TAGS_CLAIM]
    assert written["transitive_tag_keys"] == [] and list(written) == ["principal_tags", "transitive_tag_keys"]
    segment = allowed.content.split(b".")[1]
    payload = base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))  # the token's own bytes
    exact = json.dumps({AWS_TAGS_CLAIM: written}, separators=(",", ":"))[1:-1].encode()
    assert exact in payload, (exact, payload)
    claims = jwt.decode(allowed.content, options={"verify_signature": False})
    assert json.dumps(claims[AWS_TAGS_CLAIM]) == json.dumps(written)  # members, order and values
    assert sts_problems(allowed.content.decode()) == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    "tags",
    [
        {"principal_tags": {"b": ["2"], "a": ["1"]}},  # no transitive_tag_keys: none emitted
        {"transitive_tag_keys": ["a"], "principal_tags": {"a": ["1"], "b": ["2"]}},  # its order
        {"principal_tags": {}, "transitive_tag_keys": []},
    ],
)
def test_a_mappers_tags_claim_is_passed_on_as_written(client, upstream, issuer, insecure, webhook, tags):
    mapper_rule(issuer.tenant, issuer, f"{webhook.url}/map")
    answer(webhook, {"allow": True, "claims": {AWS_TAGS_CLAIM: tags}})
    response, record = exchange(client, upstream)
    assert response.status_code == 200, record.reason
    claims = jwt.decode(response.content, options={"verify_signature": False})
    assert json.dumps(claims[AWS_TAGS_CLAIM]) == json.dumps(tags)
    assert record.emitted_claims[AWS_TAGS_CLAIM] == tags


# ---------------------------------------------------------------------- what the mapper is sent


@pytest.mark.django_db
def test_the_request_is_specs_json_with_a_bearer_of_the_tenant_for_the_mapper_url(
    client, upstream, issuer, insecure, webhook
):
    url = f"{webhook.url}/map"
    mapper_rule(issuer.tenant, issuer, url)
    answer(webhook, {"allow": True, "claims": {}})
    response, _ = exchange(client, upstream)
    assert response.status_code == 200
    [seen] = webhook.requests
    body = json.loads(seen.body)
    assert body == {
        "version": "1",
        "issuerId": "ci",
        "claims": jwt.decode(upstream.mint(), options={"verify_signature": False})
        | {k: body["claims"][k] for k in ("iat", "nbf", "exp", "jti")},
    }
    assert seen.headers["content-type"] == "application/json"
    bearer = seen.headers["authorization"].removeprefix("Bearer ")
    jwks = client.get("/t/acme/.well-known/jwks.json").json()
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(bearer)["kid"]].key
    verified = jwt.decode(
        bearer, key, algorithms=["ES256", "RS256"], audience=url, issuer=f"{insecure.JWTEX_PUBLIC_URL}/t/acme"
    )
    assert verified["sub"] == "ci" and verified["exp"] - verified["iat"] == 60


# ----------------------------------------------------------------------- every way it goes wrong


@pytest.mark.django_db
@pytest.mark.parametrize(
    "document, route, why",
    [
        ({"allow": True, "claims": {}}, {"delay": 1.0}, "mapper failed"),  # over the 300 ms deadline
        ({"error": "boom"}, {"status": 500}, "HTTP 500"),
        (b"<html>not json</html>", {}, "not JSON"),
        ({"allow": True, "claims": {"x": "y" * (300 * 1024)}}, {}, "larger than"),
        ({"allow": "yes"}, {}, "expected {"),
        ({"allow": True, "claims": []}, {}, "claims must be a JSON object"),
        ({"allow": True, "claims": {"sub": 7}}, {}, "sub must be"),
        ({"allow": True, "claims": {AWS_TAGS_CLAIM: {"principal_tags": {"actor": ["dependabot[bot]"]}}}}, {}, "'['"),
        ({"allow": True, "claims": {AWS_TAGS_CLAIM: {"principal_tags": {"aws:x": ["v"]}}}}, {}, "aws:"),
        ({"allow": True, "claims": {AWS_TAGS_CLAIM: {"principal_tags": {"a": ["v"], "A": ["w"]}}}}, {}, "ignore case"),
        # The tags claim is passed on as written, so only what AWS STS reads is accepted in it.
        ({"allow": True, "claims": {AWS_TAGS_CLAIM: {"principal_tags": {"a": "v"}}}}, {}, "a list of one string"),
        (
            {"allow": True, "claims": {AWS_TAGS_CLAIM: {"principal_tags": {"a": ["v", "w"]}}}},
            {},
            "a list of one string",
        ),
        ({"allow": True, "claims": {AWS_TAGS_CLAIM: {"principal_tags": {"a": ["v"]}, "x": 1}}}, {}, "'x' too"),
        (
            {"allow": True, "claims": {AWS_TAGS_CLAIM: {"principal_tags": {"a": ["v"]}, "transitive_tag_keys": ["b"]}}},
            {},
            "transitive_tag_keys must be",
        ),
        ({"allow": True, "claims": {"aud": "https://elsewhere.example"}}, {}, "mapper chose audience"),
    ],
)
def test_a_mapper_that_misbehaves_denies_never_a_5xx_or_an_invalid_token(
    client, upstream, issuer, insecure, webhook, document, route, why
):
    mapper_rule(issuer.tenant, issuer, f"{webhook.url}/map", mapper_timeout_ms=300)
    answer(webhook, document, **route)
    response, record = exchange(client, upstream)
    assert response.status_code == 403, response.content
    assert response.json()["error"] == "access_denied"
    assert why in record.reason and record.rule_name == "mapped"
    assert record.mapper_outcome in {"failed", "invalid"} and record.issued_jti == ""


@pytest.mark.django_db
def test_reserved_claims_sent_back_are_ignored(client, upstream, issuer, insecure, webhook):
    mapper_rule(issuer.tenant, issuer, f"{webhook.url}/map")
    answer(
        webhook,
        {
            "allow": True,
            "claims": {
                "iss": "https://evil.example",
                "exp": 4102444800,
                "iat": 1,
                "nbf": 1,
                "jti": "mine",
                "team": "payments",
            },
        },
    )
    response, record = exchange(client, upstream)
    assert response.status_code == 200
    claims = jwt.decode(response.content, options={"verify_signature": False})
    assert claims["iss"].endswith("/t/acme") and claims["jti"] != "mine" and claims["exp"] - claims["iat"] == 900
    assert claims["team"] == "payments" and record.issued_jti == claims["jti"]


@pytest.mark.django_db
def test_a_private_address_is_refused_when_saved_and_never_contacted(client, upstream, issuer, webhook, settings):
    settings.JWTEX_ALLOW_INSECURE_ISSUERS = False
    rule = Rule(tenant=issuer.tenant, name="m", when="true", effect="mapper", mapper_url="https://127.0.0.1:9/map")
    with pytest.raises(Exception) as refused:
        rule.full_clean()
    assert "loopback, private or link-local" in str(refused.value)
    mapper_rule(issuer.tenant, issuer, f"https://127.0.0.1:{webhook.port}/map")  # stored anyway (bypassing clean)
    response, record = exchange(client, upstream)
    assert response.status_code == 403 and "non-public address" in record.reason
    assert webhook.requests == []


def test_an_allowed_private_host_may_resolve_to_a_private_address():
    from exchange.upstream.webhook import WebhookError, json_post

    def resolve(host, port):
        return ["10.255.255.1"]  # nothing answers there: the call fails connecting, not on the address rule

    with pytest.raises(WebhookError) as refused:
        json_post("https://mapper.internal/map", {}, headers={}, timeout=0.3, allow_insecure=False, resolver=resolve)
    assert "non-public address" in str(refused.value)
    with pytest.raises(WebhookError) as failed:
        json_post(
            "https://mapper.internal/map",
            {},
            headers={},
            timeout=0.3,
            allow_insecure=False,
            resolver=resolve,
            private_hosts=frozenset({"mapper.internal"}),
        )
    assert "non-public" not in str(failed.value)


# ------------------------------------------------------------------------ it cannot hurt others


@pytest.mark.django_db(transaction=True)
def test_a_slow_mapper_of_one_tenant_does_not_delay_another(upstream, insecure, webhook, monkeypatch):
    from exchange.models import Issuer

    def tenant_with_mapper(slug: str, path: str):
        tenant = make_tenant(slug, rate_limit_per_minute=0)
        issuer = Issuer.objects.create(
            tenant=tenant,
            issuer_id="ci",
            issuer=upstream.issuer,
            audiences=[upstream.audience],
            static_jwks=upstream.jwks,
        )
        rule = Rule.objects.create(
            tenant=tenant,
            position=1,
            name="mapped",
            when="true",
            effect="mapper",
            mapper_url=f"{webhook.url}{path}",
            mapper_timeout_ms=3000,
        )
        rule.issuers.add(issuer)

    tenant_with_mapper("slow", "/slow")
    tenant_with_mapper("fast", "/fast")
    webhook.routes["/slow"] = Route(body=b'{"allow": true, "claims": {}}', delay=1.5)
    webhook.routes["/fast"] = Route(body=b'{"allow": true, "claims": {}}')
    token_exchange(tenant_slug="fast", subject_token=upstream.mint(), endpoint="raw")  # warm
    outcomes: list[str] = []

    def slow_one() -> None:
        try:
            token_exchange(tenant_slug="slow", subject_token=upstream.mint(), endpoint="raw")
            outcomes.append("200")
        except TemporarilyUnavailable:
            outcomes.append("503")

    threads = [threading.Thread(target=slow_one) for _ in range(mapper_module.MAPPER_CONCURRENCY + 2)]
    for thread in threads:
        thread.start()
    assert webhook.wait_for("/slow", count=mapper_module.MAPPER_CONCURRENCY, timeout=5)
    started = time.monotonic()
    for _ in range(5):  # while the slow tenant's mapper holds all its slots
        token_exchange(tenant_slug="fast", subject_token=upstream.mint(), endpoint="raw")
    fast = (time.monotonic() - started) / 5
    for thread in threads:
        thread.join(10)
    assert sorted(outcomes) == ["200"] * mapper_module.MAPPER_CONCURRENCY + ["503"] * 2
    assert fast < 0.5, f"the other tenant waited {fast:.2f} s per exchange"


@pytest.mark.django_db
def test_after_five_failures_the_breaker_fails_fast_for_thirty_seconds(client, upstream, issuer, insecure, webhook):
    mapper_rule(issuer.tenant, issuer, f"{webhook.url}/map")
    answer(webhook, {"error": "down"}, status=503)
    for _ in range(mapper_module.BREAKER_FAILURES):
        assert exchange(client, upstream)[0].status_code == 403
    assert len(webhook.requests) == mapper_module.BREAKER_FAILURES
    started = time.monotonic()
    response, record = exchange(client, upstream)
    assert response.status_code == 403 and time.monotonic() - started < 0.5
    assert record.mapper_outcome == "circuit open" and len(webhook.requests) == mapper_module.BREAKER_FAILURES


@pytest.mark.django_db
def test_the_audit_names_the_rule_the_outcome_and_the_latency_but_never_the_bearer(
    client, upstream, issuer, insecure, webhook, caplog
):
    mapper_rule(issuer.tenant, issuer, f"{webhook.url}/map")
    answer(webhook, {"allow": True, "claims": {}})
    response, record = exchange(client, upstream)
    assert response.status_code == 200
    bearer = webhook.requests[0].headers["authorization"].removeprefix("Bearer ")
    row = json.dumps(ExchangeRecord.objects.filter(pk=record.pk).values().first(), default=str)
    assert record.mapper_outcome == "allowed" and record.mapper_latency_ms >= 0 and record.rule_name == "mapped"
    assert bearer not in row and bearer not in caplog.text


def test_an_unknown_outcome_never_grants():
    with pytest.raises(AccessDenied):
        from exchange.core.rules.compiled import rule_compile
        from exchange.core.rules.mapper_answer import mapper_decision
        from exchange.core.rules.spec import RuleSpec

        rule = rule_compile(
            RuleSpec(name="m", issuers=frozenset({"ci"}), when="true", effect="mapper", mapper_url="https://m.example/")
        )
        mapper_decision(
            rule, {"allow": 1}, claims={"sub": "s"}, requested_audience=None, default_audience="a", max_lifetime=900
        )


# ------------------------------------------------------- the admin, config as code, the simulator


@pytest.mark.django_db
def test_apply_and_export_a_mapper_rule_and_name_its_problems(insecure):
    from exchange.config.apply import config_apply
    from exchange.config.export import config_export
    from exchange.config.schema import ConfigError

    def document(mapper):
        return {
            "tenants": [
                {
                    "slug": "acme",
                    "name": "Acme",
                    "issuers": [{"id": "ci", "issuer": "https://ci.example", "audiences": ["aud"]}],
                    "rules": [
                        {"name": "mapped", "issuers": ["ci"], "when": "true", "effect": "mapper", "mapper": mapper}
                    ],
                }
            ]
        }

    config_apply(document=document({"url": "https://mapper.example/map", "timeout_ms": 800}), now=None)
    [rule] = config_export()["tenants"][0]["rules"]
    assert rule["effect"] == "mapper" and rule["mapper"] == {"url": "https://mapper.example/map", "timeout_ms": 800}
    insecure.JWTEX_ALLOW_INSECURE_ISSUERS = False
    path = 'tenants[acme].rules["mapped"].mapper'
    for mapper, where, message in [
        ({"url": ""}, f"{path}.url", "A mapper rule needs the mapper's URL."),
        ({"url": "https://m.example", "timeout_ms": 9000}, f"{path}.timeout_ms", "50 to 5000 milliseconds"),
        ({"url": "http://m.example"}, f"{path}.url", "must be an https URL"),
        ({"url": "https://10.0.0.1/map"}, f"{path}.url", "loopback, private or link-local"),
        ({"uri": "https://m.example"}, path, "unknown key 'uri'"),
    ]:
        with pytest.raises(ConfigError) as refused:
            config_apply(document=document(mapper), now=None, dry_run=True)
        assert any(p == where and message in m for p, m in refused.value.errors), refused.value.errors


@pytest.mark.django_db
def test_the_admin_saves_a_mapper_rule_and_refuses_one_without_a_url(admin_client_for, tenant, issuer, insecure):
    from django.urls import reverse

    from tests.exchange.admin.test_pages import rule_data

    client = admin_client_for(tenant, "operator")
    refused = client.post(reverse("admin:exchange_rule_add"), rule_data(tenant, issuer, effect="mapper", mapper_url=""))
    assert refused.status_code == 200
    assert refused.context["adminform"].form.errors["mapper_url"] == ["A mapper rule needs the mapper's URL."]
    saved = client.post(
        reverse("admin:exchange_rule_add"),
        rule_data(tenant, issuer, effect="mapper", mapper_url="https://mapper.example/map"),
    )
    assert saved.status_code == 302
    rule = Rule.objects.get(tenant=tenant, name="main branch")
    assert rule.effect == "mapper" and rule.mapper_timeout_ms == 1500


@pytest.mark.django_db
def test_the_simulator_shows_the_request_and_the_mappers_answer(tenant, issuer, upstream, insecure, webhook):
    from exchange.services.simulator import claims_simulate

    mapper_rule(tenant, issuer, f"{webhook.url}/map")
    answer(webhook, {"allow": True, "claims": {"team": "payments"}})
    simulation = claims_simulate(tenant=tenant, issuer=issuer, claims=upstream.claims(), outbound=True)
    assert simulation.allowed and simulation.emitted["team"] == "payments"
    assert simulation.mapper.request["issuerId"] == "ci" and simulation.mapper.answer == {
        "allow": True,
        "claims": {"team": "payments"},
    }
    assert any("called for real" in note for note in simulation.notes)
    assert not ExchangeRecord.objects.exists()  # the simulator audits nothing
