"""The rule simulator (docs/rules.md#the-simulator): the same decision as a real exchange, no token, no audit row."""

from __future__ import annotations

import time

import pytest
from django.urls import reverse

from exchange.core.aws import AWS_TAGS_CLAIM
from exchange.core.errors import ExchangeError
from exchange.core.minting import jwt_mint, payload_build
from exchange.core.values import Decision
from exchange.models import ExchangeRecord, Rule
from exchange.runtime import tenant_runtime_get
from exchange.services.exchange import token_exchange
from exchange.services.simulator import claims_json_parse, claims_simulate, token_simulate

PER_TOKEN_CLAIMS = ("iat", "nbf", "exp", "jti")

pytestmark = pytest.mark.django_db


@pytest.fixture
def deny_rule(tenant, issuer, allow_rule):
    rule = Rule.objects.create(tenant=tenant, position=20, name="deny the rest", when="true", effect="deny")
    rule.issuers.add(issuer)
    return rule


def real_exchange(tenant, token, **kwargs):
    try:
        return token_exchange(tenant_slug=tenant.slug, subject_token=token, **kwargs), None
    except ExchangeError as exc:
        return None, exc


def test_allowed_token_same_decision_and_claims_as_a_real_exchange(tenant, issuer, allow_rule, deny_rule, upstream):
    token = upstream.mint()
    simulation = token_simulate(tenant=tenant, token=token)
    assert ExchangeRecord.objects.count() == 0  # the simulator wrote nothing
    minted, error = real_exchange(tenant, token)
    assert error is None and ExchangeRecord.objects.count() == 1

    assert simulation.verified and simulation.allowed and simulation.error is None
    assert simulation.decision.rule_name == allow_rule.name == ExchangeRecord.objects.get().rule_name
    expected = {k: v for k, v in minted.claims.items() if k not in PER_TOKEN_CLAIMS}
    assert simulation.emitted == expected
    assert simulation.emitted[AWS_TAGS_CLAIM] == {
        "principal_tags": {"repository": ["octo-org/octo-repo"], "ref": ["refs/heads/main"], "actor": ["octocat"]},
        "transitive_tag_keys": ["repository"],
    }
    assert simulation.lifetime == minted.expires_at - minted.issued_at
    assert [t.result for t in simulation.trace] == ["matched", "not evaluated"]


@pytest.mark.parametrize(
    "mint_kwargs, stage, code",
    [
        ({"ref": "refs/heads/feature"}, "rules", "access_denied"),  # the deny rule matches
        ({"repository_owner": None}, "rules", "access_denied"),  # evaluation error → deny
        ({"aud": "someone-else"}, "verification", "invalid_token"),
        ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 4000}, "verification", "invalid_token"),
        ({"iss": "https://unknown.test"}, "issuer", "invalid_token"),
    ],
)
def test_refusals_match_a_real_exchange(tenant, issuer, allow_rule, deny_rule, upstream, mint_kwargs, stage, code):
    token = upstream.mint(**mint_kwargs)
    simulation = token_simulate(tenant=tenant, token=token)
    assert ExchangeRecord.objects.count() == 0
    _, error = real_exchange(tenant, token)
    assert error is not None
    assert not simulation.allowed
    assert simulation.stage == stage
    assert simulation.error.code == error.code == code
    assert simulation.error.status == error.status
    record = ExchangeRecord.objects.get()
    assert record.rule_name == (simulation.decision.rule_name if simulation.decision else record.rule_name)
    if stage == "rules":
        assert simulation.error.reason == record.reason


def test_evaluation_error_is_shown_on_the_rule(tenant, issuer, allow_rule, upstream):
    simulation = token_simulate(tenant=tenant, token=upstream.mint(repository_owner=None))
    assert simulation.trace[0].result == "error"
    assert "repository_owner" in simulation.trace[0].error


def test_forged_signature_is_refused_like_the_exchange(tenant, issuer, allow_rule, upstream, other_upstream):
    forged = other_upstream.mint(iss=upstream.issuer, headers={"kid": upstream.rsa_kid})
    simulation = token_simulate(tenant=tenant, token=forged)
    _, error = real_exchange(tenant, forged)
    assert simulation.stage == "verification" and simulation.error.code == error.code == "invalid_token"


def test_malformed_token(tenant, issuer, allow_rule):
    simulation = token_simulate(tenant=tenant, token="not a jwt")
    assert simulation.stage == "token" and simulation.error.code == "invalid_request"
    _, error = real_exchange(tenant, "not a jwt")
    assert error.code == "invalid_request"


def test_requested_audience(tenant, issuer, allow_rule, upstream):
    allow_rule.audiences = ["other.example"]
    allow_rule.save()
    token = upstream.mint()
    assert token_simulate(tenant=tenant, token=token, audience="other.example").emitted["aud"] == "other.example"
    refused = token_simulate(tenant=tenant, token=token, audience="nope.example")
    _, error = real_exchange(tenant, token, audience="nope.example")
    assert refused.error.code == error.code == "access_denied"


def test_claims_are_an_unverified_simulation(tenant, issuer, allow_rule, upstream):
    simulation = claims_simulate(tenant=tenant, issuer=issuer, claims=upstream.claims(aud="anything", exp=1))
    assert not simulation.verified
    assert simulation.allowed  # no signature, audience or time checks
    assert any("Unverified" in note for note in simulation.notes)
    assert simulation.emitted["sub"] == "repo:octo-org/octo-repo:ref:refs/heads/main"
    assert ExchangeRecord.objects.count() == 0


def test_claims_of_another_tenants_issuer_are_refused(tenant, other_tenant, issuer):
    simulation = claims_simulate(tenant=other_tenant, issuer=issuer, claims={"sub": "x"})
    assert simulation.error.code == "not_found" and simulation.trace == []


def test_a_rule_that_does_not_compile_denies_everything(tenant, issuer, allow_rule, upstream):
    Rule.objects.filter(pk=allow_rule.pk).update(when="claims.sub ==")  # bypasses clean(), as raw SQL could
    simulation = token_simulate(tenant=tenant, token=upstream.mint())
    _, error = real_exchange(tenant, upstream.mint())
    assert simulation.error.code == error.code == "access_denied"
    assert "does not compile" in simulation.error.reason


@pytest.mark.parametrize(
    "text, message",
    [("[1]", "JSON object"), ("{", "not valid JSON"), ('{"a": NaN}', "not valid JSON"), ('{"a": 1, "a": 2}', "twice")],
)
def test_claims_json_is_checked(text, message):
    with pytest.raises(ExchangeError, match=message):
        claims_json_parse(text)


@pytest.mark.parametrize(
    "decision",
    [
        Decision(
            None, "r", "sub-1", "sts.amazonaws.com", 900, (("a", "1"), ("b", "x")), ("a",), {"extra": [1, {"k": None}]}
        ),
        Decision(None, "r", "sub-2", "aud", 60, (), (), {}),
        Decision(None, "r", "sub-3", "aud", 60, (("a", ""),), (), {"iss": "ignored", "jti": "ignored"}),
    ],
)
def test_the_simulators_payload_is_the_minted_one_without_per_token_claims(tenant, signing_key, decision):
    runtime = tenant_runtime_get(slug=tenant.slug)
    minted = jwt_mint(decision=decision, issuer=runtime.issuer_url, signer=runtime.signer, now=int(time.time()))
    expected = {k: v for k, v in minted.claims.items() if k not in PER_TOKEN_CLAIMS}
    assert payload_build(decision=decision, issuer=runtime.issuer_url) == expected
    assert list(payload_build(decision=decision, issuer=runtime.issuer_url)) == list(expected)  # same order too


def test_simulator_page_shows_trace_and_session_tags(admin_client_for, tenant, issuer, allow_rule, deny_rule, upstream):
    client = admin_client_for(tenant, "auditor")
    url = reverse("admin:exchange_rule_simulate")
    response = client.post(url, {"tenant": tenant.pk, "issuer": "", "mode": "token", "token": upstream.mint()})
    assert response.status_code == 200
    html = response.content.decode()
    assert "verified token" in html and "allowed" in html
    assert "octo-org/octo-repo" in html and 'id="session-tags"' in html
    assert "deny the rest" in html and "not evaluated" in html
    assert ExchangeRecord.objects.count() == 0

    response = client.post(
        url,
        {
            "tenant": tenant.pk,
            "issuer": issuer.pk,
            "mode": "claims",
            "claims": '{"sub": "s", "repository_owner": "evil", "ref": "refs/heads/main"}',
        },
    )
    html = response.content.decode()
    assert "unverified simulation" in html and "denied" in html and "deny the rest" in html
    assert ExchangeRecord.objects.count() == 0

    response = client.post(url, {"tenant": tenant.pk, "mode": "claims", "claims": "{}"})
    assert "issuer" in response.context["form"].errors  # claims need an issuer


# --- simulator ≡ endpoint over a corpus (docs/design/pipeline.md#one-pipeline-for-every-caller) ---


def _corpus(upstream, other_upstream) -> dict[str, tuple[str | bytes, str | None]]:
    """name → (token, pinned issuerId)"""
    now = int(time.time())
    good = upstream.mint()
    h, p, s = good.split(".")
    return {
        "good": (good, None),
        "good, pinned": (good, "ci"),
        "denied by the deny rule": (upstream.mint(ref="refs/heads/feature"), None),
        "evaluation error": (upstream.mint(repository_owner=None), None),
        "expired": (upstream.mint(iat=now - 4000, nbf=now - 4000, exp=now - 3600), None),
        "wrong iss": (other_upstream.mint(), None),
        "wrong iss, pinned": (other_upstream.mint(), "ci"),
        "unknown pinned issuer": (good, "nope"),
        "trailing newline": (good + "\n", None),
        "trailing newline (bytes)": ((good + "\n").encode(), None),
        "leading space": (" " + good, None),
        "tampered payload": (f"{h}.{upstream.mint(repository_owner='evil').split('.')[1]}.{s}", None),
        "wrong audience": (upstream.mint(aud="someone-else"), None),
        "forged by another key": (other_upstream.mint(iss=upstream.issuer, headers={"kid": upstream.rsa_kid}), None),
        "unknown kid": (upstream.mint(headers={"kid": "no-such-kid"}), None),
        "not a JWT": ("not a jwt", None),
    }


def test_simulator_reaches_the_endpoints_decision_for_every_token(
    client, tenant, issuer, allow_rule, deny_rule, upstream, other_upstream
):
    from exchange.models import Issuer

    for name, (token, pinned) in _corpus(upstream, other_upstream).items():
        path = f"/t/{tenant.slug}/exchange" + (f"?issuerId={pinned}" if pinned else "")
        response = client.post(path, data=token, content_type="application/jwt")
        chosen = Issuer.objects.filter(tenant=tenant, issuer_id=pinned).first() if pinned else None
        if pinned and chosen is None:
            continue  # the simulator's form offers only existing issuers; the endpoint says 404
        simulation = token_simulate(tenant=tenant, token=token, issuer=chosen)
        if response.status_code == 200:
            assert simulation.allowed, name
            minted = jwt_payload(response.content.decode())
            assert simulation.emitted == {k: v for k, v in minted.items() if k not in PER_TOKEN_CLAIMS}, name
        else:
            assert not simulation.allowed, name
            body = response.json()
            assert (simulation.error.status, simulation.error.code) == (response.status_code, body["error"]), name
            assert simulation.error.description == body["error_description"], name


def jwt_payload(token: str) -> dict:
    import jwt

    return jwt.decode(token, options={"verify_signature": False})


def test_trailing_newline_is_refused_by_the_simulator_page_too(admin_client_for, tenant, issuer, allow_rule, upstream):
    client = admin_client_for(tenant, "operator")
    response = client.post(
        reverse("admin:exchange_rule_simulate"),
        {"tenant": tenant.pk, "issuer": "", "mode": "token", "token": upstream.mint() + "\n"},
    )
    html = response.content.decode()
    assert "surrounding whitespace, e.g. a trailing newline" in html
    assert response.context["result"].error.code == "invalid_request"


def test_a_refused_tag_value_says_which_claim_and_what_to_write(tenant, issuer, allow_rule, upstream):
    """allow_rule tags actor with claims.actor: a bot's name has characters AWS refuses."""
    simulation = claims_simulate(tenant=tenant, issuer=issuer, claims=upstream.claims(actor="dependabot[bot]"))
    assert not simulation.allowed and simulation.error.code == "access_denied"
    assert "'dependabot[bot]' contains '['" in simulation.error.reason
    assert "use aws_tag(claims.actor)" in simulation.error.reason


def test_a_token_longer_than_aws_accepts_is_refused_by_the_simulator_as_by_the_exchange(tenant, issuer, upstream):
    keys = [f"{i:02d}" + "k" * 126 for i in range(50)]
    rule = Rule.objects.create(
        tenant=tenant,
        position=1,
        name="widest",
        effect="allow",
        when="true",
        session_tags={key: "claims.long" for key in keys},
    )  # saved before the size check
    rule.issuers.add(issuer)
    claims = upstream.claims(long="x" * 256)
    simulation = claims_simulate(tenant=tenant, issuer=issuer, claims=claims)
    assert not simulation.allowed and "AWS STS accepts at most 20,000" in simulation.error.reason
    minted, refused = real_exchange(tenant, upstream.mint(long="x" * 256))
    assert minted is None and refused.description == simulation.error.description
