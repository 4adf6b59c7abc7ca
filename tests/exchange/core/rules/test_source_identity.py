"""A rule's source identity (docs/rules.md#source-identity): compiled, checked against AWS's rules at
every exchange, emitted as the claim STS reads; AWS's claim names are only their checked fields'."""

from __future__ import annotations

import pytest

from exchange.core.aws import AWS_SOURCE_IDENTITY_CLAIM, AWS_TAGS_CLAIM, source_identity_problem
from exchange.core.errors import AccessDenied
from exchange.core.minting import payload_build
from exchange.core.rules.compiled import rule_compile
from exchange.core.rules.engine import compiled_rules_decide
from exchange.core.rules.mapper_answer import mapper_decision
from exchange.core.rules.spec import RuleSpec, RuleSyntaxError, rule_findings, rule_spec_validate
from exchange.core.values import Decision

CLAIMS = {"sub": "repo:octo-org/app:ref:refs/heads/main", "actor": "octocat", "repository_owner_id": "65"}


def spec(**fields) -> RuleSpec:
    return RuleSpec(**{"name": "deploy", "issuers": frozenset({"ci"}), "when": "true", "effect": "allow", **fields})


def run(rule: RuleSpec, **claims) -> Decision:
    return compiled_rules_decide(
        [rule_compile(rule)],
        issuer_id="ci",
        claims={**CLAIMS, **claims},
        requested_audience=None,
        default_audience="sts.amazonaws.com",
        max_lifetime=3600,
    )


def test_a_rule_without_one_emits_none():
    decision = run(spec())
    assert decision.source_identity is None
    assert AWS_SOURCE_IDENTITY_CLAIM not in payload_build(decision=decision, issuer="https://x/t/a")


@pytest.mark.parametrize(
    "source, actor, expected",
    [
        ("claims.actor", "octocat", "octocat"),
        ("aws_source_identity(claims.actor)", "dependabot[bot]", "dependabot_bot_"),
        ("claims.actor.aws_source_identity()", "aws:admin", "aws_admin"),
        ("aws_source_identity(claims.actor)", "x", "x_"),
        ("'gh-' + aws_source_identity(claims.actor)", "Jürgen", "gh-J_rgen"),
    ],
)
def test_the_source_identity_is_emitted_as_the_claim_sts_reads(source, actor, expected):
    decision = run(spec(source_identity=source), actor=actor)
    assert decision.source_identity == expected
    assert payload_build(decision=decision, issuer="https://x/t/a")[AWS_SOURCE_IDENTITY_CLAIM] == expected


@pytest.mark.parametrize(
    "source, actor, why",
    [
        ("claims.actor", "dependabot[bot]", "contains U+005B '['"),
        ("claims.actor", "aws:admin", "starts with 'aws:'"),
        ("claims.actor", "x", "1 characters long"),
        ("claims.actor", "a" * 65, "65 characters long"),
        ("claims.missing", "octocat", "source_identity: "),
        ("1", "octocat", "must be a string, not int"),
    ],
)
def test_a_value_aws_refuses_denies_naming_the_rule(source, actor, why):
    with pytest.raises(AccessDenied) as info:
        run(spec(source_identity=source), actor=actor)
    assert info.value.status == 403 and info.value.code == "access_denied"
    assert info.value.rule_name == "deploy"
    assert info.value.description.startswith("Rule 'deploy': the source identity")
    assert why in info.value.reason
    if source == "claims.actor":
        assert "use aws_source_identity(claims.actor)" in info.value.reason


def test_the_expression_is_checked_when_saved():
    [(path, message)] = rule_spec_validate(spec(source_identity="claims.actor +"))
    assert path == "source_identity" and "line 1, column" in message
    [(path, message)] = rule_spec_validate(spec(source_identity="aws_sourceidentity(claims.actor)"))
    assert path == "source_identity" and "aws_sourceidentity" in message
    with pytest.raises(RuleSyntaxError) as info:
        rule_compile(spec(source_identity="claims.actor +"))
    assert info.value.field == "source_identity"


def test_the_source_identity_counts_in_the_rules_cost_and_length():
    cheap = rule_findings(spec(source_identity="aws_source_identity(claims.actor)"))
    assert cheap.errors == ()
    costly = "claims.b.map(x, claims.b + claims.b).size() == 0 ? 'ab' : 'cd'"
    [(path, message)] = rule_spec_validate(spec(source_identity=costly))
    assert path == "source_identity" and "cost units" in message


@pytest.mark.parametrize(
    "name",
    [
        AWS_TAGS_CLAIM,
        AWS_SOURCE_IDENTITY_CLAIM,
        "https://aws.amazon.com/anything",
        "HTTPS://AWS.AMAZON.COM/source_identity",
    ],
)
def test_aws_claim_names_are_refused_as_extra_claims(name):
    [(path, message)] = rule_spec_validate(spec(claims=((name, "claims.actor"),)))
    assert path == f"claims.{name}"
    assert "session_tags" in message or "source_identity" in message


def test_a_decision_cannot_smuggle_an_aws_claim_past_minting():
    decision = Decision(
        rule_id=None,
        rule_name="r",
        subject="s",
        audience="a",
        lifetime=60,
        session_tags=(),
        transitive_tag_keys=(),
        extra_claims={"https://aws.amazon.com/x": 1, AWS_SOURCE_IDENTITY_CLAIM: "a:b"},
    )
    payload = payload_build(decision=decision, issuer="https://x/t/a")
    assert "https://aws.amazon.com/x" not in payload and AWS_SOURCE_IDENTITY_CLAIM not in payload


# ------------------------------------------------------------------------------ a mapper's answer


def mapped(claims: dict) -> Decision:
    rule = rule_compile(spec(effect="mapper", mapper_url="https://mapper.example/map"))
    return mapper_decision(
        rule,
        {"allow": True, "claims": claims},
        claims=CLAIMS,
        requested_audience=None,
        default_audience="sts.amazonaws.com",
        max_lifetime=3600,
    )


def test_a_mappers_source_identity_is_passed_through_checked():
    decision = mapped({AWS_SOURCE_IDENTITY_CLAIM: "octocat"})
    assert decision.source_identity == "octocat" and AWS_SOURCE_IDENTITY_CLAIM not in decision.extra_claims
    assert payload_build(decision=decision, issuer="https://x/t/a")[AWS_SOURCE_IDENTITY_CLAIM] == "octocat"


@pytest.mark.parametrize(
    "claims, why",
    [
        ({AWS_SOURCE_IDENTITY_CLAIM: "dependabot[bot]"}, "'['"),
        ({AWS_SOURCE_IDENTITY_CLAIM: "x"}, "1 characters long"),
        ({AWS_SOURCE_IDENTITY_CLAIM: 42}, "not int"),
        ({"https://aws.amazon.com/principal_tags": {}}, "AWS's claims are emitted only as"),
    ],
)
def test_a_mappers_invalid_aws_claim_denies(claims, why):
    with pytest.raises(AccessDenied) as info:
        mapped(claims)
    assert info.value.rule_name == "deploy" and why in info.value.reason


# ------------------------------------------------------------------------------------ presets

PLATFORM_CLAIMS = {  # what each platform's documented example token carries, as far as the suggestions read it
    "github": {
        "actor": "dependabot[bot]",
        "repository_owner_id": "1342004",
        "ref": "refs/heads/main",
        "repository": "octo-org/app",
        "workflow": "Deploy 🚀",
    },
    "gitlab": {
        "user_login": "jürgen",
        "namespace_id": "72",
        "ref_protected": "true",
        "project_path": "g/p",
        "ref": "main",
        "job_project_path": "g/p",
    },
    "buildkite": {"pipeline_slug": "deploy", "build_number": 42, "organization_slug": "ORG", "build_branch": "main"},
    "terraform-cloud": {
        "terraform_run_id": "run-CZcmD7eagjhyX0vN",
        "terraform_organization_name": "acme",
        "terraform_run_phase": "apply",
        "terraform_full_workspace": "organization:acme:workspace:w",
    },
}


@pytest.mark.parametrize("key", sorted(PLATFORM_CLAIMS))
def test_a_presets_suggested_source_identity_saves_and_gives_one_sts_accepts(key):
    from exchange.console.presets import preset_get

    preset = preset_get(key)
    rule = spec(
        when=preset.example_when,
        source_identity=preset.example_source_identity,
        session_tags=tuple((k, v) for k, v, _ in preset.example_tags),
        optional_tags=frozenset(k for k, _, optional in preset.example_tags if optional),
    )
    assert rule_findings(rule).errors == ()
    claims = {**PLATFORM_CLAIMS[key], "organization_slug": "ORG"}
    decision = compiled_rules_decide(
        [rule_compile(rule)],
        issuer_id="ci",
        claims={"sub": "s", **claims},
        requested_audience=None,
        default_audience="sts.amazonaws.com",
        max_lifetime=3600,
    )
    assert decision.source_identity and source_identity_problem(decision.source_identity) is None
