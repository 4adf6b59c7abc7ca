"""What an audit record stores of an issued token reads back exactly as minted
(docs/scale.md#the-audit-table)."""

from __future__ import annotations

import json

import pytest

from exchange.core.audit_compact import claims_compact, claims_full, compactable, issued_sub_stored, issued_subject
from exchange.core.minting import payload_build
from exchange.core.values import Decision

TAGS = "https://aws.amazon.com/tags"


def _minted(**decision) -> dict:
    fields = {
        "rule_id": 1,
        "rule_name": "main",
        "subject": "repo:octo-org/app:ref:refs/heads/main",
        "audience": "sts.amazonaws.com",
        "lifetime": 900,
        "session_tags": (("repository", "octo-org/app"), ("actor", "octocat")),
        "transitive_tag_keys": (),
        "extra_claims": {},
    }
    fields.update(decision)
    return payload_build(
        decision=Decision(**fields),
        issuer="https://jwtex.example.com/t/acme",
        issued_at=1_760_000_000,
        jti="0123456789abcdef0123456789abcdef",
    )


def _columns(claims: dict) -> dict:
    return {"subject": claims["sub"], "audience": claims["aud"], "expires_at": claims["exp"], "jti": claims["jti"]}


@pytest.mark.parametrize(
    "decision",
    [
        {},
        {"transitive_tag_keys": ("repository",)},
        {"session_tags": ()},  # no tags claim at all
        {"extra_claims": {"environment": "prod", "groups": ["a", "b"], "n": 3}},
        {"session_tags": (("k", ""), ("ü", "ß" * 256))},
    ],
)
def test_minted_claims_read_back_exactly_and_in_order(decision):
    claims = _minted(**decision)
    assert compactable(claims, **_columns(claims))
    compact = claims_compact(claims)
    assert not {"sub", "aud", "exp", "jti", "nbf"} & set(compact)
    back = claims_full(json.loads(json.dumps(compact)), **_columns(claims))  # through the database's JSON
    assert back == claims and list(back) == list(claims)


def test_a_typical_token_stores_about_half_its_claims():
    claims = _minted()
    assert len(json.dumps(claims_compact(claims))) < len(json.dumps(claims)) * 0.6


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c.update(sub="another"),  # the column (cut to 512) differs from the claim
        lambda c: c.update(nbf=c["iat"] - 1),
        lambda c: c.update(nbf=float(c["iat"])),
        lambda c: c.update(exp=True),
        lambda c: c.pop("nbf"),
        lambda c: c.update({TAGS: {"principal_tags": {"k": ["v", "w"]}}}),
        lambda c: c.update({TAGS: {"principal_tags": {"k": ["v"]}, "transitive_tag_keys": []}}),
        lambda c: c.update({TAGS: {"principal_tags": {"k": ["v"]}, "other": 1}}),
        lambda c: c.update({TAGS: ["not", "an", "object"]}),
    ],
)
def test_claims_of_another_shape_are_stored_whole(change):
    claims = _minted()
    columns = _columns(claims)
    change(claims)
    assert not compactable(claims, **columns)


def test_the_issued_subject_is_left_out_only_when_it_is_the_upstream_one():
    assert issued_sub_stored(decision="allowed", issued_sub="repo:a", upstream_sub="repo:a") == ""
    assert issued_subject(decision="allowed", stored="", upstream_sub="repo:a") == "repo:a"
    assert issued_sub_stored(decision="allowed", issued_sub="deploy-bot", upstream_sub="repo:a") == "deploy-bot"
    assert issued_subject(decision="allowed", stored="deploy-bot", upstream_sub="repo:a") == "deploy-bot"
    assert issued_subject(decision="denied", stored="", upstream_sub="repo:a") == ""  # nothing was issued
