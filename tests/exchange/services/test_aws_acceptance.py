"""Through the endpoints: real-shaped CI claims either get a token AWS STS accepts or a 403 that
says why — never a 200 with a token STS would refuse (docs/rules.md#aws-limits)."""

from __future__ import annotations

import json

import pytest

from exchange.models import ExchangeRecord, Rule
from tests.aws_acceptance import TAGS_CLAIM, sts_problems

pytestmark = pytest.mark.django_db

LONG_KEYS = [f"{i:02d}" + "k" * 126 for i in range(50)]

RULES = {
    # The README's example, as written before aws_tag: bots break it.
    "plain": {"repository": "claims.repository", "ref": "claims.ref", "actor": "claims.actor"},
    # The README's example today.
    "mapped": {
        "repository": "claims.repository",
        "ref": "aws_tag(claims.ref)",
        "actor": "aws_tag(claims.actor)",
        "workflow": "aws_tag(claims.workflow)",
        "environment": {"value": "aws_tag(claims.environment)", "optional": True},
    },
    # Saved before the size bound existed (created without Rule.clean): 50 keys of 128 characters.
    "widest": {key: "aws_tag(claims.actor)" for key in LONG_KEYS},
}

CORPUS = [
    {"actor": "dependabot[bot]"},
    {"actor": "renovate[bot]"},
    {"actor": "github-actions[bot]", "workflow": "Deploy 🚀"},
    {"ref": "refs/heads/feature/#123"},
    {"ref": "refs/heads/ünïcødé", "environment": "prød"},
    {"actor": "a" * 256},
    {"actor": "a" * 257},
    {"actor": "aws:admin"},
    {"actor": "AWS:Admin"},
    {"actor": "Aws:x", "environment": "aws:prod"},
    {"environment": None},
    {"environment": ""},
    {"actor": "😀" * 256},
    {"actor": "octocat", "workflow": "x" * 1000},
]


@pytest.fixture
def rules(tenant, issuer):
    made = {}
    for position, (name, tags) in enumerate(RULES.items()):
        rule = Rule.objects.create(
            tenant=tenant,
            position=position,
            name=name,
            effect="allow",
            session_tags=tags,
            when=f"claims.rule == '{name}'",
            transitive_tag_keys=list(tags)[:3],
        )
        rule.issuers.add(issuer)
        made[name] = rule
    return made


@pytest.mark.parametrize("rule", list(RULES))
@pytest.mark.parametrize("claims", CORPUS, ids=lambda c: json.dumps(c, ensure_ascii=True)[:40])
def test_every_answer_is_a_valid_token_or_a_403(client, upstream, rules, rule, claims):
    token = upstream.mint(**{"rule": rule, "environment": "production", **claims})
    response = client.post("/t/acme/exchange?issuerId=ci", token, content_type="application/jwt")
    assert response.status_code in (200, 403), response.content
    if response.status_code == 200:
        assert sts_problems(response.content.decode()) == []
    else:
        assert response.json()["error"] == "access_denied"
        record = ExchangeRecord.objects.order_by("-id").first()
        assert record.decision == "denied" and record.rule_name == rule


def test_the_readme_rule_lets_dependabot_through_and_says_why_the_plain_one_does_not(client, upstream, rules):
    mapped = client.post(
        "/t/acme/exchange?issuerId=ci",
        upstream.mint(rule="mapped", actor="dependabot[bot]"),
        content_type="application/jwt",
    )
    assert mapped.status_code == 200
    tags = _payload(mapped.content.decode())[TAGS_CLAIM]["principal_tags"]
    assert tags["actor"] == ["dependabot_bot_"] and "environment" not in tags  # optional, and the claim is missing
    plain = client.post(
        "/t/acme/exchange?issuerId=ci",
        upstream.mint(rule="plain", actor="dependabot[bot]"),
        content_type="application/jwt",
    )
    assert plain.status_code == 403
    assert plain.json()["error_description"] == "Rule 'plain': session tag 'actor' has no valid value."
    reason = ExchangeRecord.objects.order_by("-id").first().reason
    assert "'dependabot[bot]' contains '['" in reason and "use aws_tag(claims.actor)" in reason


def test_a_token_longer_than_aws_accepts_is_refused_naming_the_rule(client, upstream, rules):
    response = client.post(
        "/t/acme/exchange?issuerId=ci", upstream.mint(rule="widest", actor="a" * 256), content_type="application/jwt"
    )
    assert response.status_code == 403
    assert response.json()["error_description"] == "Rule 'widest' makes a token longer than AWS STS accepts."
    record = ExchangeRecord.objects.order_by("-id").first()
    assert record.rule_name == "widest" and "AWS STS accepts at most 20,000" in record.reason


def _payload(token: str) -> dict:
    import base64

    segment = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


@pytest.mark.parametrize("source", ["claims.actor", "aws_source_identity(claims.actor)", "'gh-' + claims.actor"])
@pytest.mark.parametrize("claims", CORPUS, ids=lambda c: json.dumps(c, ensure_ascii=True)[:40])
def test_a_source_identity_is_one_sts_accepts_or_a_403_naming_the_rule(
    client, upstream, tenant, issuer, source, claims
):
    rule = Rule.objects.create(tenant=tenant, name="who", effect="allow", when="true", source_identity=source)
    rule.issuers.add(issuer)
    response = client.post(
        "/t/acme/exchange?issuerId=ci", upstream.mint(**{"actor": "octocat", **claims}), content_type="application/jwt"
    )
    assert response.status_code in (200, 403), response.content
    record = ExchangeRecord.objects.order_by("-id").first()
    if response.status_code == 200:
        token = response.content.decode()
        assert sts_problems(token) == [] and "https://aws.amazon.com/source_identity" in _payload(token)
        assert (
            record.emitted_claims["https://aws.amazon.com/source_identity"]
            == _payload(token)["https://aws.amazon.com/source_identity"]
        )
    else:
        assert response.json() == {
            "error": "access_denied",
            "error_description": "Rule 'who': the source identity is not one AWS accepts.",
        }
        assert record.decision == "denied" and record.rule_name == "who" and "source_identity" in record.reason
    if source.startswith("aws_source_identity"):
        assert response.status_code == 200
