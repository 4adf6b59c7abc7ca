"""exchange.minting: Decision + key → signed JWT (pure: no database)."""

from __future__ import annotations

import base64
import json

import jwt
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from exchange.core.aws import AWS_TAGS_CLAIM
from exchange.core.minting import jwt_mint
from exchange.core.rules.compiled import rule_compile
from exchange.core.rules.engine import compiled_rules_decide
from exchange.core.rules.spec import RuleSpec
from exchange.core.values import Decision, MintedToken, SignerKey

ISSUER = "https://jwtex.example.com/t/acme"
NOW = 1_700_000_000


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(params=["ES256", "RS256"])
def signer(request, ec_key, rsa_key):
    key = ec_key if request.param == "ES256" else rsa_key
    return SignerKey(kid=f"kid-{request.param}", algorithm=request.param, private_key=key)


def decision(**overrides) -> Decision:
    fields = dict(
        rule_id=1,
        rule_name="main",
        subject="repo:octo-org/app:ref:refs/heads/main",
        audience="sts.amazonaws.com",
        lifetime=900,
        session_tags=(("repository", "octo-org/app"), ("actor", "octocat")),
        transitive_tag_keys=("repository",),
        extra_claims={"ref": "refs/heads/main"},
    )
    fields.update(overrides)
    return Decision(**fields)


def verify(minted: MintedToken, signer: SignerKey, *, audience: str = "sts.amazonaws.com") -> dict:
    return jwt.decode(
        minted.token,
        signer.private_key.public_key(),
        algorithms=[signer.algorithm],
        audience=audience,
        issuer=ISSUER,
        options={
            "require": ["iss", "sub", "aud", "iat", "nbf", "exp", "jti"],
            "verify_exp": False,
            "verify_iat": False,
            "verify_nbf": False,
        },
    )


def _segment(token: str, index: int) -> bytes:
    part = token.split(".")[index]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_round_trip_verifies_with_public_key(signer):
    minted = jwt_mint(decision=decision(), issuer=ISSUER, signer=signer, now=NOW)
    payload = verify(minted, signer)
    assert payload == dict(minted.claims)
    assert payload["iss"] == ISSUER
    assert payload["sub"] == "repo:octo-org/app:ref:refs/heads/main"
    assert payload["aud"] == "sts.amazonaws.com"  # a string, not a list
    assert payload["ref"] == "refs/heads/main"
    assert (minted.subject, minted.audience, minted.kid, minted.jti) == (
        payload["sub"],
        payload["aud"],
        signer.kid,
        payload["jti"],
    )


def test_round_trip_with_current_clock_passes_time_checks(signer):
    import time

    now = int(time.time())
    minted = jwt_mint(decision=decision(), issuer=ISSUER, signer=signer, now=now)
    payload = jwt.decode(
        minted.token, signer.private_key.public_key(), algorithms=[signer.algorithm], audience="sts.amazonaws.com"
    )
    assert payload["iat"] == now


def test_token_fails_with_another_key(signer):
    other = (
        ec.generate_private_key(ec.SECP256R1())
        if signer.algorithm == "ES256"
        else rsa.generate_private_key(65537, 2048)
    )
    minted = jwt_mint(decision=decision(), issuer=ISSUER, signer=signer, now=NOW)
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            minted.token,
            other.public_key(),
            algorithms=[signer.algorithm],
            options={"verify_aud": False, "verify_exp": False},
        )


def test_exact_header(signer):
    minted = jwt_mint(decision=decision(), issuer=ISSUER, signer=signer, now=NOW)
    assert jwt.get_unverified_header(minted.token) == {"alg": signer.algorithm, "kid": signer.kid, "typ": "JWT"}
    assert json.loads(_segment(minted.token, 0)) == {"alg": signer.algorithm, "kid": signer.kid, "typ": "JWT"}


def test_es256_signature_is_raw_r_s(ec_key):
    signer = SignerKey(kid="k", algorithm="ES256", private_key=ec_key)
    minted = jwt_mint(decision=decision(), issuer=ISSUER, signer=signer, now=NOW)
    signature = _segment(minted.token, 2)
    assert len(signature) == 64  # RFC 7518 §3.4: 32-byte r || 32-byte s, not DER
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    signing_input = minted.token.rsplit(".", 1)[0].encode()
    ec_key.public_key().verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        ec_key.public_key().verify(encode_dss_signature(r, s), signing_input + b"x", ec.ECDSA(hashes.SHA256()))


def test_exact_aws_tags_claim_shape(signer):
    minted = jwt_mint(decision=decision(), issuer=ISSUER, signer=signer, now=NOW)
    assert verify(minted, signer)[AWS_TAGS_CLAIM] == {
        "principal_tags": {"repository": ["octo-org/app"], "actor": ["octocat"]},
        "transitive_tag_keys": ["repository"],
    }


def test_transitive_keys_omitted_when_empty(signer):
    minted = jwt_mint(decision=decision(transitive_tag_keys=()), issuer=ISSUER, signer=signer, now=NOW)
    assert verify(minted, signer)[AWS_TAGS_CLAIM] == {
        "principal_tags": {"repository": ["octo-org/app"], "actor": ["octocat"]},
    }


def test_a_mappers_tags_claim_is_emitted_as_it_wrote_it(signer):
    """docs/mapper.md#the-answer: a mapper's claim as written (an empty transitive list kept, its member order); a
    rule's token above leaves an empty list out, as it always has."""
    written = {"transitive_tag_keys": [], "principal_tags": {"repository": ["octo-org/app"], "actor": ["octocat"]}}
    minted = jwt_mint(
        decision=decision(transitive_tag_keys=(), tags_claim=written), issuer=ISSUER, signer=signer, now=NOW
    )
    payload = json.loads(_segment(minted.token, 1))
    assert json.dumps(payload[AWS_TAGS_CLAIM]) == json.dumps(written)
    assert minted.claims[AWS_TAGS_CLAIM] is not written  # a copy: nothing shared with the decision


def test_no_tags_claim_without_session_tags(signer):
    minted = jwt_mint(decision=decision(session_tags=(), transitive_tag_keys=()), issuer=ISSUER, signer=signer, now=NOW)
    assert AWS_TAGS_CLAIM not in verify(minted, signer)


def test_times(signer):
    minted = jwt_mint(decision=decision(lifetime=1234), issuer=ISSUER, signer=signer, now=NOW)
    payload = verify(minted, signer)
    assert payload["iat"] == payload["nbf"] == NOW == minted.issued_at
    assert payload["exp"] == NOW + 1234 == minted.expires_at
    assert payload["exp"] - payload["iat"] == 1234


def test_exact_payload_members(signer):
    minted = jwt_mint(decision=decision(), issuer=ISSUER, signer=signer, now=NOW, jti="fixed-jti")
    assert set(verify(minted, signer)) == {"iss", "sub", "aud", "iat", "nbf", "exp", "jti", "ref", AWS_TAGS_CLAIM}
    assert minted.jti == "fixed-jti"


def test_reserved_claims_cannot_be_overridden(signer):
    hostile = {
        "iss": "https://evil.example",
        "sub": "admin",
        "aud": "other",
        "iat": 1,
        "nbf": 1,
        "exp": 9_999_999_999,
        "jti": "replayed",
        AWS_TAGS_CLAIM: {"principal_tags": {"admin": ["true"]}},
        "custom": {"kept": True},
    }
    minted = jwt_mint(decision=decision(extra_claims=hostile), issuer=ISSUER, signer=signer, now=NOW)
    payload = verify(minted, signer)
    assert payload["iss"] == ISSUER
    assert payload["sub"] == "repo:octo-org/app:ref:refs/heads/main"
    assert payload["aud"] == "sts.amazonaws.com"
    assert payload["iat"] == payload["nbf"] == NOW
    assert payload["exp"] == NOW + 900
    assert payload["jti"] != "replayed"
    assert payload[AWS_TAGS_CLAIM]["principal_tags"] == {"repository": ["octo-org/app"], "actor": ["octocat"]}
    assert payload["custom"] == {"kept": True}


def test_reserved_tags_claim_dropped_even_without_session_tags(signer):
    extra = {AWS_TAGS_CLAIM: {"principal_tags": {"admin": ["true"]}}}
    minted = jwt_mint(
        decision=decision(session_tags=(), transitive_tag_keys=(), extra_claims=extra),
        issuer=ISSUER,
        signer=signer,
        now=NOW,
    )
    assert AWS_TAGS_CLAIM not in verify(minted, signer)


def test_jti_is_unique(ec_key):
    signer = SignerKey(kid="k", algorithm="ES256", private_key=ec_key)
    jtis = {jwt_mint(decision=decision(), issuer=ISSUER, signer=signer, now=NOW).jti for _ in range(200)}
    assert len(jtis) == 200
    assert all(len(j) == 32 and int(j, 16) >= 0 for j in jtis)  # uuid4 hex


@pytest.mark.parametrize(
    "algorithm, key_factory",
    [
        ("ES256", lambda: rsa.generate_private_key(65537, 2048)),
        ("ES256", lambda: ec.generate_private_key(ec.SECP384R1())),
        ("RS256", lambda: ec.generate_private_key(ec.SECP256R1())),
        ("RS256", lambda: rsa.generate_private_key(65537, 1024)),
        ("HS256", lambda: ec.generate_private_key(ec.SECP256R1())),
        ("none", lambda: ec.generate_private_key(ec.SECP256R1())),
    ],
)
def test_key_must_fit_algorithm(algorithm, key_factory):
    with pytest.raises(ValueError):
        jwt_mint(decision=decision(), issuer=ISSUER, signer=SignerKey("k", algorithm, key_factory()), now=NOW)


def test_non_positive_lifetime_is_refused(ec_key):
    with pytest.raises(ValueError):
        jwt_mint(decision=decision(lifetime=0), issuer=ISSUER, signer=SignerKey("k", "ES256", ec_key), now=NOW)


def test_signer_repr_hides_key(ec_key):
    assert "private_key" not in repr(SignerKey("k", "ES256", ec_key))


def test_decide_then_mint(ec_key):
    rule = rule_compile(
        RuleSpec(
            name="main",
            issuers=frozenset({"github"}),
            when="claims.ref == 'refs/heads/main'",
            effect="allow",
            lifetime=600,
            session_tags=(("repository", "claims.repository"), ("run", "claims.run")),
            transitive_tag_keys=("repository",),
            claims=(("ref", "claims.ref"),),
        )
    )
    chosen = compiled_rules_decide(
        [rule],
        issuer_id="github",
        claims={"sub": "repo:o/a", "ref": "refs/heads/main", "repository": "o/a", "run": 7},
        requested_audience=None,
        default_audience="sts.amazonaws.com",
        max_lifetime=3600,
    )
    signer = SignerKey("k", "ES256", ec_key)
    payload = verify(jwt_mint(decision=chosen, issuer=ISSUER, signer=signer, now=NOW), signer)
    assert payload[AWS_TAGS_CLAIM] == {
        "principal_tags": {"repository": ["o/a"], "run": ["7"]},
        "transitive_tag_keys": ["repository"],
    }
    assert payload["exp"] - payload["iat"] == 600
    assert payload["ref"] == "refs/heads/main"
