"""Every token jwtex emits is one AWS STS accepts (docs/rules.md#aws-limits), or none is emitted.

Pure: rules, claims and keys in memory. What STS accepts is written down independently in
tests/aws_acceptance.py.
"""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, event, example, given, settings, strategies as st

from exchange.core.aws import (
    MAX_WEB_IDENTITY_TOKEN_LENGTH,
    aws_source_identity,
    aws_tag,
    session_tag_value_validate,
    source_identity_problem,
)
from exchange.core.errors import AccessDenied
from exchange.core.minting import TokenTooLong, encoded_length, jwt_mint, signature_bytes
from exchange.core.rules.compiled import rule_compile
from exchange.core.rules.engine import compiled_rules_decide
from exchange.core.rules.spec import RuleFindings, RuleSpec, rule_findings, rule_spec_validate
from exchange.core.values import SignerKey
from tests.aws_acceptance import sts_problems

NOW = 1_800_000_000
ISSUER = "https://jwtex.example.com/t/acme"


@pytest.fixture(scope="module")
def signers():
    return {
        "ES256": SignerKey("e" * 43, "ES256", ec.generate_private_key(ec.SECP256R1())),
        "RS256": SignerKey("r" * 43, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "RS256-4096": SignerKey("k" * 43, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=4096)),
    }


def spec(**fields) -> RuleSpec:
    base = dict(name="r", issuers=frozenset({"ci"}), when="true", effect="allow")
    return RuleSpec(**{**base, **fields})


def outcome(rule: RuleSpec, claims: dict, signer: SignerKey, issuer: str = ISSUER) -> str | None:
    """The token, or None when the exchange is refused (403)."""
    try:
        decision = compiled_rules_decide(
            [rule_compile(rule)],
            issuer_id="ci",
            claims=claims,
            requested_audience=None,
            default_audience="sts.amazonaws.com",
            max_lifetime=3600,
        )
        return jwt_mint(decision=decision, issuer=issuer, signer=signer, now=NOW).token
    except (AccessDenied, TokenTooLong):
        return None


# ------------------------------------------------------------------------------- aws_tag


tag_text = st.text(st.characters(codec="utf-8"), max_size=400) | st.text(
    st.sampled_from("aAwWsS:[]#_ -é😀"), max_size=12
)


@given(tag_text)
@example("dependabot[bot]")
@example("AwS:admin")
@example("x" * 257)
def test_aws_tag_is_always_valid_and_idempotent(value):
    mapped = aws_tag(value)
    session_tag_value_validate("t", mapped)
    assert aws_tag(mapped) == mapped
    assert len(mapped) == min(len(value), 256)


def _not_reserved(value: str) -> bool:
    return not value.lower().startswith("aws:")


# Valid values built from what AWS allows (tests/aws_acceptance.py), rather than drawn at random
# and mostly thrown away: letters, separators and numbers of any script, and _ . : / = + - @.
valid_tag_text = (
    st.text(st.characters(categories=["L", "Z", "N"], include_characters="_.:/=+-@"), max_size=256)
    | st.text(st.sampled_from("aAwWsS:_ -é"), max_size=12)
).filter(_not_reserved)


@given(valid_tag_text)
@example("aws_prod")
@example("Ünïcødé ok")
def test_aws_tag_is_the_identity_on_valid_values(value):
    session_tag_value_validate("t", value)
    assert aws_tag(value) == value


@pytest.mark.parametrize(
    "value, expected",
    [
        ("dependabot[bot]", "dependabot_bot_"),
        ("renovate[bot]", "renovate_bot_"),
        ("refs/heads/feature#12", "refs/heads/feature_12"),
        ("aws:prod", "aws_prod"),
        ("AWS:Prod", "AWS_Prod"),
        ("Ünïcødé ok", "Ünïcødé ok"),
        ("tab\there", "tab_here"),
    ],
)
def test_aws_tag_examples(value, expected):
    assert aws_tag(value) == expected


# ------------------------------------------------------------------- aws_source_identity


def _sts_takes_source_identity(value: str) -> bool:
    """Through the independent check: a token whose only doubt is its source identity."""
    payload = (
        base64.urlsafe_b64encode(json.dumps({"sub": "s", "https://aws.amazon.com/source_identity": value}).encode())
        .rstrip(b"=")
        .decode()
    )
    return sts_problems(f"e30.{payload}.sig") == []


@given(tag_text)
@example("dependabot[bot]")
@example("aws:admin")
@example("AWS:x")
@example("x")
@example("")
@example("é" * 100)
def test_aws_source_identity_is_always_valid_and_idempotent(value):
    mapped = aws_source_identity(value)
    assert source_identity_problem(mapped) is None and _sts_takes_source_identity(mapped)
    assert aws_source_identity(mapped) == mapped
    assert len(mapped) == min(max(len(value), 2), 64)


@given(tag_text)
@example("octocat")
@example("a.b@c-d=e,f+g_h")
def test_aws_source_identity_is_the_identity_on_valid_values_and_agrees_with_sts(value):
    assert (source_identity_problem(value) is None) == _sts_takes_source_identity(value)
    if source_identity_problem(value) is None:
        assert aws_source_identity(value) == value


@pytest.mark.parametrize(
    "value, expected",
    [
        ("dependabot[bot]", "dependabot_bot_"),
        ("aws:admin", "aws_admin"),
        ("x", "x_"),
        ("", "__"),
        ("Jürgen Müller", "J_rgen_M_ller"),
        ("a" * 70, "a" * 64),
        ("first.last@example.com", "first.last@example.com"),
    ],
)
def test_aws_source_identity_examples(value, expected):
    assert aws_source_identity(value) == expected


@pytest.mark.parametrize(
    "value, words",
    [
        ("x", "1 characters long"),
        ("a" * 65, "65 characters long"),
        ("dependabot[bot]", "'['"),
        ("aws:admin", "starts with 'aws:'"),
        ("AwS:x", "starts with 'aws:'"),
        (42, "not int"),
        ("tab\tx", "U+0009"),
    ],
)
def test_source_identity_problems_say_what_is_wrong(value, words):
    assert words in source_identity_problem(value)


# ----------------------------------------------------------------------- the length bound


@pytest.mark.parametrize("name", ["ES256", "RS256", "RS256-4096"])
@pytest.mark.parametrize("value", ["ascii", "Ünïcødé", "😀 emoji", 'quote " and \\ backslash', "\u2028"])
def test_the_length_is_known_exactly_before_signing(signers, name, value):
    signer = signers[name]
    rule = spec(session_tags=(("v", "aws_tag(claims.x)"),), claims=(("x", "claims.x"),))
    decision = compiled_rules_decide(
        [rule_compile(rule)],
        issuer_id="ci",
        claims={"sub": "s", "x": value},
        requested_audience=None,
        default_audience="a",
        max_lifetime=3600,
    )
    minted = jwt_mint(decision=decision, issuer=ISSUER, signer=signer, now=NOW)
    header = {"alg": signer.algorithm, "kid": signer.kid, "typ": "JWT"}
    assert encoded_length(dict(minted.claims), header=header, signature_size=signature_bytes(signer)) == len(
        minted.token
    )
    assert sts_problems(minted.token) == []


def _widest_rule(tags: int, value: str = "claims.v") -> RuleSpec:
    keys = [f"{i:03d}" + "k" * 125 for i in range(tags)]  # 128-character keys, unique in any case
    return spec(
        subject="claims.long_sub",
        session_tags=tuple((key, value) for key in keys),
        transitive_tag_keys=tuple(keys),
    )


def test_the_largest_output_a_rule_saved_without_a_warning_may_produce_fits_aws(signers):
    """The most tags of the longest keys, all transitive, that a rule may have and be saved
    without a warning, with every value at 256 characters, a 255-character subject, the longest
    issuer and an RSA-4096 signature: still within 20,000 characters."""
    tags = max(n for n in range(1, 51) if rule_findings(_widest_rule(n)) == RuleFindings((), ()))
    claims = {"sub": "s", "long_sub": "s" * 255, "v": "v" * 256}
    token = outcome(_widest_rule(tags), claims, signers["RS256-4096"], issuer="https://" + "i" * 248)
    assert token is not None and sts_problems(token) == []
    assert len(token) <= MAX_WEB_IDENTITY_TOKEN_LENGTH
    findings = rule_findings(_widest_rule(tags + 1))
    assert findings.errors == () and [path for path, _ in findings.warnings] == ["session_tags"]
    assert "characters long" in findings.warnings[0][1] and "at most 20,000" in findings.warnings[0][1]


def test_fifty_maximal_tags_save_with_a_warning_that_gives_the_worst_case():
    findings = rule_findings(_widest_rule(50))
    assert findings.errors == ()
    [(path, message)] = findings.warnings
    assert path == "session_tags" and "Tokens from this rule can be up to 36,941 characters long" in message


def test_tags_certain_to_outgrow_what_aws_accepts_are_refused_with_the_figure():
    literal = "'" + "v" * 256 + "'"  # literals count at their own length: every token has them
    [(path, message)] = rule_spec_validate(_widest_rule(30, literal))
    assert path == "session_tags" and "Tokens from this rule are at least 21,394 characters long" in message
    assert not rule_spec_validate(_widest_rule(29, "'v'"))


def test_a_token_that_outgrows_the_bound_at_exchange_time_is_refused_not_issued(signers):
    # Non-ASCII values take up to 12 characters each in the token's JSON: the save-time bound
    # (ASCII) passes, the exchange is refused.
    rule = _widest_rule(20)
    assert not rule_spec_validate(rule)
    assert outcome(rule, {"sub": "s", "long_sub": "s", "v": "😀" * 256}, signers["ES256"]) is None


# -------------------------------------------------------------------- every emitted token


claim_values = (
    st.text(st.characters(codec="utf-8"), max_size=300)
    | st.sampled_from(["dependabot[bot]", "aws:x", "AWS:", "Aws:y", "a" * 256, "a" * 257, "", "refs/heads/x#1"])
    | st.integers()
    | st.booleans()
    | st.none()
)
expressions = st.sampled_from(
    [
        "claims.v",
        "aws_tag(claims.v)",
        "aws_tag(claims.v)",
        "claims.v + claims.v",
        "string(claims.v)",
        "claims.missing",
        "'aws:' + claims.v",
        "aws_tag(string(claims.v))",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tags=st.lists(
        st.tuples(
            st.sampled_from(["repo", "actor", "ref", "env", "workflow", "run", "sha", "Repo", "aws:key", "x" * 129]),
            expressions,
            st.booleans(),
        ),
        max_size=8,
        unique_by=lambda tag: tag[0],
    ),
    value=claim_values,
    sub=st.sampled_from(["claims.sub", "claims.sub", "claims.v", "'" + "s" * 256 + "'"]),
    source_identity=st.sampled_from(
        [
            "",
            "",
            "claims.v",
            "aws_source_identity(claims.v)",
            "aws_source_identity(string(claims.v))",
            "'aws:' + claims.v",
            "'octocat'",
            "'x'",
            "aws_tag(claims.v)",
        ]
    ),
)
def test_a_rule_output_is_a_token_sts_accepts_or_a_refusal(signers, tags, value, sub, source_identity):
    rule = spec(
        subject=sub,
        source_identity=source_identity,
        session_tags=tuple((key, source) for key, source, _ in tags),
        optional_tags=frozenset(key for key, _, optional in tags if optional),
        transitive_tag_keys=tuple(dict.fromkeys(key for key, _, _ in tags))[:2],
    )
    if rule_spec_validate(rule):
        event("refused when saved")
        return  # it never runs
    token = outcome(rule, {"sub": "s", "v": value}, signers["ES256"])
    event("refused (403)" if token is None else "token" + (" with a source identity" if source_identity else ""))
    # see --hypothesis-show-statistics
    assert token is None or sts_problems(token) == []
