"""exchange.verification: upstream JWT verification as docs/verification.md#verifying-an-upstream-token says
(RFC 7515, 7518, 7519, 8725).

Pure module, so no database: tokens are minted here (PyJWT or by hand) or come from the
real GitHub Actions fixture in ``tests/fixtures/github-actions``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import HealthCheck, given, settings, strategies as st

from exchange.core import limits as conf
from exchange.core.compact_jws import jwt_parse
from exchange.core.errors import ExchangeError, InvalidRequest, InvalidToken, RequestTooLarge, UnknownKeyId
from exchange.core.jwks import KeySet, PublicKey
from exchange.core.values import IssuerConfig, ParsedToken, VerifiedToken
from exchange.core.verification import jwt_verify
from tests.conftest import FIXTURES_DIR

# ----------------------------------------------------------------------------- helpers

# (exception class, OAuth error code, HTTP status): every refusal asserts all three.
INVALID_REQUEST = (InvalidRequest, "invalid_request", 400)
TOO_LARGE = (RequestTooLarge, "invalid_request", 413)
INVALID_TOKEN = (InvalidToken, "invalid_token", 401)
UNKNOWN_KID = (UnknownKeyId, "invalid_token", 401)


Kind = tuple[type[ExchangeError], str, int]


def refused(kind: Kind, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> ExchangeError:
    cls, code, status = kind
    with pytest.raises(ExchangeError) as info:
        fn(*args, **kwargs)
    error = info.value
    assert type(error) is cls, f"expected {cls.__name__}, got {type(error).__name__}: {error.reason}"
    assert (error.code, error.status) == (code, status)
    assert error.description and error.reason
    return error


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def craft(
    header: Any, claims: Any, signer: Callable[[bytes], bytes] | None = None, *, signature: bytes | None = None
) -> str:
    """A compact JWS built by hand; ``header``/``claims`` may be raw text for malformed cases."""
    h = header if isinstance(header, str) else b64json(header)
    p = claims if isinstance(claims, str) else b64json(claims)
    signing_input = f"{h}.{p}".encode("ascii")
    sig = signature if signature is not None else signer(signing_input)  # type: ignore[misc]
    return f"{h}.{p}.{b64(sig)}"


SHA256 = hashes.SHA256()


def rsa_signer(key: rsa.RSAPrivateKey, hash_: hashes.HashAlgorithm = SHA256) -> Callable[[bytes], bytes]:
    return lambda data: key.sign(data, padding.PKCS1v15(), hash_)


def ec_raw_signer(key: ec.EllipticCurvePrivateKey, hash_: hashes.HashAlgorithm, size: int) -> Callable[[bytes], bytes]:
    def sign(data: bytes) -> bytes:
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hash_)))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")

    return sign


def jwk_of(private_key: Any, kid: str | None, alg: str | None = None, **extra: Any) -> dict[str, Any]:
    public = private_key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = jwt.algorithms.OKPAlgorithm.to_jwk(public, as_dict=True)
    jwk = dict(jwk)
    if kid is not None:
        jwk["kid"] = kid
    if alg is not None:
        jwk["alg"] = alg
    jwk.update(extra)
    return jwk


NOW = 1_700_000_000
ISS = "https://ci.upstream.test"
AUD = "sts.amazonaws.com"
ALL_ALGS = conf.SUPPORTED_UPSTREAM_ALGORITHMS


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISS,
        "aud": AUD,
        "sub": "repo:octo-org/octo-repo:ref:refs/heads/main",
        "iat": NOW,
        "nbf": NOW,
        "exp": NOW + 300,
        "jti": "jti-1",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not DROP}


DROP = object()  # claims(exp=DROP) leaves exp out


def issuer(**overrides: Any) -> IssuerConfig:
    values: dict[str, Any] = {"issuer_id": "upstream", "issuer": ISS, "audiences": (AUD,)}
    values.update(overrides)
    return IssuerConfig(**values)


# ------------------------------------------------------------------------------ keys


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_key2() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def ec384() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="module")
def ec521() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP521R1())


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def private_keys(rsa_key, ec256, ec384, ec521, ed_key) -> dict[str, Any]:
    """alg → the private key that signs it in the ``keyset`` below."""
    return {
        **{alg: rsa_key for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")},
        "ES256": ec256,
        "ES384": ec384,
        "ES512": ec521,
        "EdDSA": ed_key,
    }


KIDS = {"RSA": "rsa-1", "ES256": "ec-256", "ES384": "ec-384", "ES512": "ec-521", "EdDSA": "ed-1"}


def kid_for(alg: str) -> str:
    return KIDS["RSA"] if alg[:2] in ("RS", "PS") else KIDS[alg]


@pytest.fixture(scope="module")
def jwks(rsa_key, ec256, ec384, ec521, ed_key) -> dict[str, Any]:
    return {
        "keys": [
            jwk_of(rsa_key, KIDS["RSA"], use="sig"),
            jwk_of(ec256, KIDS["ES256"], "ES256", use="sig"),
            jwk_of(ec384, KIDS["ES384"]),
            jwk_of(ec521, KIDS["ES512"]),
            jwk_of(ed_key, KIDS["EdDSA"]),
        ]
    }


@pytest.fixture(scope="module")
def keyset(jwks) -> KeySet:
    return KeySet.from_jwks(jwks)


@pytest.fixture(scope="module")
def mint(private_keys) -> Callable[..., str]:
    def mint(alg: str = "RS256", *, headers: dict[str, Any] | None = None, **claim_overrides: Any) -> str:
        all_headers = {"kid": kid_for(alg)}
        all_headers.update(headers or {})
        return jwt.encode(claims(**claim_overrides), private_keys[alg], algorithm=alg, headers=all_headers)

    return mint


def verify(token: str | bytes, keys: KeySet, *, now: float = NOW, **issuer_overrides: Any) -> VerifiedToken:
    return jwt_verify(jwt_parse(token), issuer=issuer(**issuer_overrides), keys=keys, now=now)


# ------------------------------------------------------------- the real GitHub token

GITHUB_DIR = FIXTURES_DIR / "github-actions"
GH_ISS = "https://token.actions.githubusercontent.com"
GH_AUD = "https://github.com/nickolashkraus"
GH_NBF, GH_IAT, GH_EXP = 1674498078, 1674498678, 1674498978
GH_KID = "78167F727DEC5D801DD1C8784C704A1C880EC0E1"


@pytest.fixture(scope="module")
def github() -> tuple[str, KeySet]:
    token = (GITHUB_DIR / "token.jwt").read_text(encoding="ascii")
    return token, KeySet.from_jwks(json.loads((GITHUB_DIR / "jwks.json").read_text(encoding="utf-8")))


def gh_verify(token: str, keys: KeySet, *, now: float, **overrides: Any) -> VerifiedToken:
    config = {"issuer_id": "github", "issuer": GH_ISS, "audiences": (GH_AUD,)}
    config.update(overrides)
    return jwt_verify(jwt_parse(token), issuer=IssuerConfig(**config), keys=keys, now=now)


def test_github_fixture_is_what_the_readme_says(github):
    token, keys = github
    parsed = jwt_parse(token)
    assert parsed.header["alg"] == "RS256" and parsed.header["kid"] == GH_KID and "x5t" in parsed.header
    assert (parsed.claims["nbf"], parsed.claims["iat"], parsed.claims["exp"]) == (GH_NBF, GH_IAT, GH_EXP)
    assert tuple(k.kid for k in keys.keys) == (GH_KID, "52F197C481DE70112C441B4A9B37B53C7FCF0DB5")
    assert not token.endswith("\n")


# GitHub backdates nbf by 600 s (nbf = iat - 600) for verifiers whose clock lags; jwtex
# honours that backdate (up to 600 s) on top of the leeway when checking iat, so the token
# verifies across its whole declared window [nbf, exp) — and, with the 60 s leeway, a
# little beyond it on both sides.
@pytest.mark.parametrize(
    "now", [GH_NBF - 60, GH_NBF, GH_NBF + 1, GH_IAT - 61, GH_IAT - 60, GH_IAT, GH_IAT + 150, GH_EXP - 1, GH_EXP - 0.001]
)
def test_github_token_verifies(github, now):
    token, keys = github
    verified = gh_verify(token, keys, now=now)
    assert verified.issuer_id == "github"
    assert verified.kid == GH_KID and verified.alg == "RS256"
    assert verified.claims["sub"] == "repo:nickolashkraus/flask-oidc:ref:refs/heads/output-token"
    assert verified.claims["repository_owner_id"] == "14130403"  # GitHub's ids are strings
    assert verified.header["x5t"] == "eBZ_cn3sXYAd0ch4THBKHIgOwOE"


@pytest.mark.parametrize("now", [GH_NBF, GH_NBF + 1, GH_IAT, GH_EXP - 1])
def test_github_token_whole_window_with_600s_leeway(github, now):
    token, keys = github
    assert gh_verify(token, keys, now=now, leeway=600).kid == GH_KID


def test_github_token_without_leeway_verifies_only_inside_its_window(github):
    token, keys = github
    for now in (GH_NBF, GH_IAT, GH_EXP - 1):
        assert gh_verify(token, keys, now=now, leeway=0).alg == "RS256"
    for now in (GH_NBF - 1, GH_EXP, GH_EXP + 1):
        refused(INVALID_TOKEN, gh_verify, token, keys, now=now, leeway=0)


def test_github_token_before_its_window_is_refused(github):
    token, keys = github
    error = refused(INVALID_TOKEN, gh_verify, token, keys, now=GH_NBF - 61)
    assert error.description == "The token is not yet valid."


@pytest.mark.parametrize("now", [GH_EXP + 60, GH_EXP + 61, GH_EXP + 86400])
def test_github_token_expired(github, now):
    token, keys = github
    error = refused(INVALID_TOKEN, gh_verify, token, keys, now=now)
    assert error.description == "The token has expired."
    assert str(GH_EXP) in error.reason


def test_github_token_expiry_boundary(github):
    token, keys = github
    assert gh_verify(token, keys, now=GH_EXP + 59.999).kid == GH_KID
    refused(INVALID_TOKEN, gh_verify, token, keys, now=GH_EXP + 60)


@pytest.mark.parametrize("now", [GH_NBF - 61, GH_NBF - 3600])
def test_github_token_not_yet_valid(github, now):
    token, keys = github
    error = refused(INVALID_TOKEN, gh_verify, token, keys, now=now)
    assert error.description == "The token is not yet valid."


@pytest.mark.parametrize(
    "audiences", [("https://github.com/someone-else",), ("https://github.com/nickolashkraus/",), ()]
)
def test_github_token_wrong_audience(github, audiences):
    token, keys = github
    error = refused(INVALID_TOKEN, gh_verify, token, keys, now=GH_IAT, audiences=audiences)
    assert "audience" in error.description


@pytest.mark.parametrize(
    "expected_iss",
    [
        GH_ISS + "/",
        "https://Token.Actions.GitHubUserContent.com",
        GH_ISS.upper(),
        "http://token.actions.githubusercontent.com",
        "token.actions.githubusercontent.com",
    ],
)
def test_github_token_wrong_issuer(github, expected_iss):
    token, keys = github
    error = refused(INVALID_TOKEN, gh_verify, token, keys, now=GH_IAT, issuer=expected_iss)
    assert "issuer" in error.description


def test_github_token_unknown_kid_when_the_set_lacks_its_key(github):
    token, keys = github
    error = refused(UNKNOWN_KID, gh_verify, token, KeySet(keys=keys.keys[1:]), now=GH_IAT)
    assert GH_KID not in error.description


def test_github_token_fails_with_the_other_key(github):
    token, keys = github
    impostor = dataclasses.replace(keys.keys[1], kid=GH_KID)
    refused(INVALID_TOKEN, gh_verify, token, KeySet(keys=(impostor,)), now=GH_IAT)


B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _replace(text: str, index: int, char: str) -> str:
    index %= len(text)
    return text[:index] + char + text[index + 1 :]


@pytest.mark.parametrize("position", [0, 1, 2, 3, 100, 171, 256, 339, 340])
def test_github_signature_every_change_at_a_position_fails(github, position):
    token, keys = github
    head, signature = token.rsplit(".", 1)
    assert len(signature) == 342  # 256 bytes: the last character carries only 2 bits
    for char in B64URL_ALPHABET.replace(signature[position], ""):
        refused(INVALID_TOKEN, gh_verify, f"{head}.{_replace(signature, position, char)}", keys, now=GH_IAT)


def test_github_signature_last_character(github):
    """The last of 342 characters holds 2 bits and 4 unused ones: 15 other characters decode to
    the very same bytes. Canonical base64url refuses those (InvalidRequest); the others change
    the signature (InvalidToken)."""
    token, keys = github
    head, signature = token.rsplit(".", 1)
    original = base64.urlsafe_b64decode(signature + "==")
    same_bytes = 0
    for char in B64URL_ALPHABET.replace(signature[-1], ""):
        changed = _replace(signature, -1, char)
        if base64.urlsafe_b64decode(changed + "==") == original:
            same_bytes += 1
            refused(INVALID_REQUEST, gh_verify, f"{head}.{changed}", keys, now=GH_IAT)
        elif char in "AQgw":  # canonical: different bytes, so the signature fails
            refused(INVALID_TOKEN, gh_verify, f"{head}.{changed}", keys, now=GH_IAT)
        else:
            refused(INVALID_REQUEST, gh_verify, f"{head}.{changed}", keys, now=GH_IAT)
    assert same_bytes == 15


@pytest.mark.parametrize("segment,position", [(0, 0), (0, 10), (0, 100), (0, -3), (1, 0), (1, 10), (1, 500), (1, -3)])
def test_github_header_or_payload_change_fails(github, segment, position):
    token, keys = github
    parts = token.split(".")
    original = parts[segment][position]
    for char in ("A", "z", "0", "_", "-"):
        if char == original:
            continue
        changed = list(parts)
        changed[segment] = _replace(parts[segment], position, char)
        with pytest.raises((InvalidRequest, InvalidToken)) as info:
            gh_verify(".".join(changed), keys, now=GH_IAT)
        assert info.value.status in (400, 401)
        assert info.value.code in ("invalid_request", "invalid_token")


def test_github_token_with_transport_newline_is_refused(github):
    token, keys = github
    refused(INVALID_REQUEST, gh_verify, token + "\n", keys, now=GH_IAT)
    refused(INVALID_REQUEST, gh_verify, token + "\r\n", keys, now=GH_IAT)
    assert gh_verify(token.encode("ascii"), keys, now=GH_IAT).kid == GH_KID  # bytes are fine


# ---------------------------------------------------------- local keys, happy paths


@pytest.mark.parametrize("alg", ALL_ALGS)
def test_each_supported_algorithm_verifies(mint, keyset, alg):
    verified = verify(mint(alg), keyset, algorithms=(alg,))
    assert verified == VerifiedToken(
        issuer_id="upstream",
        claims=claims(),
        header={"alg": alg, "kid": kid_for(alg), "typ": "JWT"},
        kid=kid_for(alg),
        alg=alg,
    )


def test_verified_claims_are_a_plain_json_serialisable_copy(mint, keyset):
    parsed = jwt_parse(mint("ES256", nested={"a": [1, 2.5, None, True]}))
    verified = jwt_verify(parsed, issuer=issuer(), keys=keyset, now=NOW)
    assert type(verified.claims) is dict and verified.claims is not parsed.claims
    assert json.loads(json.dumps(verified.claims)) == verified.claims


def test_parse_compact_returns_the_parts(mint):
    token = mint("RS256")
    parsed = jwt_parse(token)
    assert isinstance(parsed, ParsedToken)
    assert parsed.signing_input == token.rsplit(".", 1)[0].encode()
    assert parsed.signature == base64.urlsafe_b64decode(token.rsplit(".", 1)[1] + "==")
    assert parsed.claims == claims() and parsed.header["kid"] == "rsa-1"
    assert jwt_parse(token.encode()) == parsed


def test_typ_header_is_ignored(mint, keyset):
    for typ in ("JWT", "at+jwt", "nonsense", 42):
        assert verify(mint(headers={"typ": typ}), keyset).alg == "RS256"


# --------------------------------------------------------------------- algorithms


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_refused_even_if_configured(keyset, rsa_key, alg):
    # With a signature (any bytes) it reaches jwt_verify and is refused there…
    token = craft({"alg": alg, "kid": "rsa-1"}, claims(), rsa_signer(rsa_key))
    error = refused(INVALID_TOKEN, verify, token, keyset, algorithms=(alg, "RS256", "ES256"))
    assert "algorithm" in error.description
    # …and the classic unsigned form has an empty signature, refused as malformed.
    unsigned = craft({"alg": alg}, claims(), signature=b"")
    assert unsigned.endswith(".")
    refused(INVALID_REQUEST, jwt_parse, unsigned)


@pytest.mark.parametrize("secret_form", ["pem", "pkcs1_pem", "der", "jwk_json"])
@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_signed_with_the_public_key_is_refused(keyset, jwks, rsa_key, secret_form, alg):
    """Algorithm confusion (RFC 8725 §2.1): an attacker HMACs with the public key as secret."""
    public = rsa_key.public_key()
    secret = {
        "pem": public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        "pkcs1_pem": public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1),
        "der": public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
        "jwk_json": json.dumps(jwks["keys"][0]).encode(),
    }[secret_form]
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    for header in ({"alg": alg, "kid": "rsa-1"}, {"alg": alg}):
        token = craft(header, claims(), lambda data: hmac.new(secret, data, digest).digest())
        refused(INVALID_TOKEN, verify, token, keyset, algorithms=(alg, "RS256", "ES256"))


@pytest.mark.parametrize("alg", ["RS384", "RS512", "PS256", "ES384", "ES512", "EdDSA"])
def test_alg_outside_the_issuers_allowlist_is_refused(mint, keyset, alg):
    token = mint(alg)
    assert verify(token, keyset, algorithms=(alg,)).alg == alg  # valid in itself
    error = refused(INVALID_TOKEN, verify, token, keyset)  # default allowlist RS256, ES256
    assert error.description == "The token's algorithm is not accepted."


@pytest.mark.parametrize(
    "alg", [None, 256, ["RS256"], {"RS256": True}, "rs256", "RS256 ", "", "Ed25519", "ES256K", "RSA-OAEP"]
)
def test_alg_malformed_or_unknown_is_refused(keyset, rsa_key, alg):
    header = {"kid": "rsa-1"} if alg is None else {"alg": alg, "kid": "rsa-1"}
    token = craft(header, claims(), rsa_signer(rsa_key))
    everything = (*ALL_ALGS, "rs256", "RS256 ", "", "Ed25519", "ES256K", "RSA-OAEP")
    refused(INVALID_TOKEN, verify, token, keyset, algorithms=everything)


def test_rs256_token_against_an_ec_only_set_is_refused(mint, jwks, rsa_key):
    ec_only = KeySet.from_jwks({"keys": [k for k in jwks["keys"] if k["kty"] == "EC"]})
    token = mint("RS256")
    refused(UNKNOWN_KID, verify, token, ec_only)  # its kid is not there
    no_kid = craft({"alg": "RS256"}, claims(), rsa_signer(rsa_key))
    error = refused(INVALID_TOKEN, verify, no_kid, ec_only)
    assert error.reason == (
        "The token has no kid, and none of the issuer's keys fits its algorithm RS256: no one key to check it with."
    )
    # and with the kid of an EC key: the algorithm does not fit that key
    spoofed = craft({"alg": "RS256", "kid": "ec-256"}, claims(), signature=jwt_parse(token).signature)
    error = refused(INVALID_TOKEN, verify, spoofed, ec_only)
    assert error.description == "The token's algorithm does not fit its key."


def test_es256_header_with_a_p384_key_is_refused(keyset, ec384):
    token = craft({"alg": "ES256", "kid": "ec-384"}, claims(), ec_raw_signer(ec384, hashes.SHA256(), 48))
    error = refused(INVALID_TOKEN, verify, token, keyset, algorithms=("ES256", "ES384"))
    assert "does not fit" in error.reason
    token = craft({"alg": "ES384", "kid": "ec-256"}, claims(), ec_raw_signer(ec384, hashes.SHA384(), 48))
    refused(INVALID_TOKEN, verify, token, keyset, algorithms=("ES256", "ES384"))


def test_es512_with_p256_and_eddsa_with_rsa_are_refused(keyset, ec256, rsa_key):
    token = craft({"alg": "ES512", "kid": "ec-256"}, claims(), ec_raw_signer(ec256, hashes.SHA256(), 32))
    refused(INVALID_TOKEN, verify, token, keyset, algorithms=ALL_ALGS)
    token = craft({"alg": "EdDSA", "kid": "rsa-1"}, claims(), rsa_signer(rsa_key))
    refused(INVALID_TOKEN, verify, token, keyset, algorithms=ALL_ALGS)
    token = craft({"alg": "RS256", "kid": "ed-1"}, claims(), rsa_signer(rsa_key))
    refused(INVALID_TOKEN, verify, token, keyset, algorithms=ALL_ALGS)


def test_jwk_alg_must_equal_the_token_alg(rsa_key):
    keys = KeySet.from_jwks({"keys": [jwk_of(rsa_key, "rsa-1", "RS256")]})
    token = jwt.encode(claims(), rsa_key, algorithm="PS256", headers={"kid": "rsa-1"})
    error = refused(INVALID_TOKEN, verify, token, keys, algorithms=("RS256", "PS256"))
    assert "does not fit" in error.reason
    unlabelled = KeySet.from_jwks({"keys": [jwk_of(rsa_key, "rsa-1")]})
    assert verify(token, unlabelled, algorithms=("RS256", "PS256")).alg == "PS256"


# ------------------------------------------------------------------------ headers


@pytest.mark.parametrize("name", ["jwk", "jku", "x5u", "x5c"])
def test_headers_that_carry_or_point_to_a_key_are_refused(mint, keyset, rsa_key, jwks, name):
    value = {
        "jwk": jwks["keys"][0],  # even the very key that signed it
        "jku": "https://attacker.example/jwks.json",
        "x5u": "https://attacker.example/cert.pem",
        "x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"],
    }[name]
    for header_value in (value, None, ""):
        token = mint(headers={name: header_value})  # validly signed by the set's own key
        error = refused(INVALID_TOKEN, verify, token, keyset)
        assert name in error.reason


@pytest.mark.parametrize(
    "extra",
    [
        {"crit": ["exp"], "exp": NOW + 300},
        {"crit": ["b64"], "b64": False},
        {"crit": ["b64"], "b64": True},
        {"crit": []},
        {"crit": "exp"},
        {"crit": None},
        {"b64": False},  # RFC 7797 without crit: still an extension we do not speak
    ],
)
def test_crit_and_b64_headers_are_refused(keyset, rsa_key, extra):
    token = craft({"alg": "RS256", "kid": "rsa-1", **extra}, claims(), rsa_signer(rsa_key))
    refused(INVALID_TOKEN, verify, token, keyset)


def test_rfc7797_unencoded_payload_is_malformed(rsa_key):
    # PyJWT's b64:false output is a detached payload: the middle segment is empty.
    token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"b64": False, "crit": ["b64"]})
    refused(INVALID_REQUEST, jwt_parse, token)
    # and an attached unencoded JSON payload has characters outside base64url
    header = b64json({"alg": "RS256", "b64": False, "crit": ["b64"]})
    raw = json.dumps(claims())
    sig = rsa_key.sign(f"{header}.{raw}".encode(), padding.PKCS1v15(), hashes.SHA256())
    refused(INVALID_REQUEST, jwt_parse, f"{header}.{raw}.{b64(sig)}")


@pytest.mark.parametrize(
    "kid",
    [
        "../../etc/passwd",
        "' OR 1=1 --",
        "rsa-1' OR '1'='1",
        "RSA-1",
        "rsa-1 ",
        " rsa-1",
        "rsa-1\u0000",
        "",
        "k" * 10_000,
        "$(curl attacker.example)",
        "{{7*7}}",
    ],
)
def test_unknown_or_injected_kid_raises_unknown_key_id(keyset, rsa_key, kid):
    token = craft({"alg": "RS256", "kid": kid}, claims(), rsa_signer(rsa_key))
    error = refused(UNKNOWN_KID, verify, token, keyset)
    if kid:
        assert kid not in error.description
    assert len(error.reason) < 200  # a long kid is not copied whole into the audit reason


@pytest.mark.parametrize("kid", [1, None, ["rsa-1"], {"kid": "rsa-1"}, True])
def test_kid_that_is_not_a_string_is_refused(keyset, rsa_key, kid):
    token = craft({"alg": "RS256", "kid": kid}, claims(), rsa_signer(rsa_key))
    refused(INVALID_TOKEN, verify, token, keyset)


def test_duplicate_kid_in_the_set_is_ambiguous(rsa_key, rsa_key2):
    keys = KeySet.from_jwks({"keys": [jwk_of(rsa_key, "same"), jwk_of(rsa_key2, "same")]})
    for signer in (rsa_key, rsa_key2):
        token = jwt.encode(claims(), signer, algorithm="RS256", headers={"kid": "same"})
        error = refused(INVALID_TOKEN, verify, token, keys)
        assert "ambiguous" in error.description
    # Even when the duplicates are of different types.
    other_type = ec.generate_private_key(ec.SECP256R1())
    mixed = KeySet.from_jwks({"keys": [jwk_of(rsa_key, "same"), jwk_of(other_type, "same")]})
    token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "same"})
    refused(INVALID_TOKEN, verify, token, mixed)


def test_missing_kid_with_two_rsa_keys_is_refused(rsa_key, rsa_key2):
    keys = KeySet.from_jwks({"keys": [jwk_of(rsa_key, "a"), jwk_of(rsa_key2, "b")]})
    token = jwt.encode(claims(), rsa_key, algorithm="RS256")
    assert "kid" not in jwt_parse(token).header
    error = refused(INVALID_TOKEN, verify, token, keys)
    assert "no key id" in error.description
    # Same with two kid-less keys.
    keys = KeySet.from_jwks({"keys": [jwk_of(rsa_key, None), jwk_of(rsa_key2, None)]})
    refused(INVALID_TOKEN, verify, token, keys)


def test_missing_kid_with_exactly_one_fitting_key_is_accepted(rsa_key, rsa_key2, ec256):
    keys = KeySet.from_jwks({"keys": [jwk_of(rsa_key, "rsa"), jwk_of(ec256, "ec")]})
    token = jwt.encode(claims(), rsa_key, algorithm="RS256")
    verified = verify(token, keys)
    assert (verified.kid, verified.alg) == ("rsa", "RS256")
    assert verify(jwt.encode(claims(), ec256, algorithm="ES256"), keys).kid == "ec"
    # A second RSA key that may only be used with PS256 does not fit RS256.
    keys = KeySet.from_jwks({"keys": [jwk_of(rsa_key, "rsa"), jwk_of(rsa_key2, "pss", "PS256")]})
    assert verify(token, keys).kid == "rsa"
    # A key without kid in the set, token without kid.
    assert verify(token, KeySet.from_jwks({"keys": [jwk_of(rsa_key, None)]})).kid is None
    # The single fitting key is the wrong one: a plain signature failure.
    refused(INVALID_TOKEN, verify, token, KeySet.from_jwks({"keys": [jwk_of(rsa_key2, "other")]}))


# ---------------------------------------------------------------------- signatures


@pytest.mark.parametrize("alg,size", [("ES256", 32), ("ES384", 48), ("ES512", 66)])
def test_ecdsa_psychic_signature_is_refused(keyset, alg, size):
    """CVE-2022-21449: r = s = 0 "verifies" in broken implementations."""
    header = {"alg": alg, "kid": kid_for(alg)}
    for signature in (bytes(2 * size), bytes(size) + b"\x01" * size, b"\x01" * size + bytes(size)):
        token = craft(header, claims(), signature=signature)
        error = refused(INVALID_TOKEN, verify, token, keyset, algorithms=(alg,))
        assert error.description == "The token's signature is not valid."


def test_ecdsa_with_r_or_s_equal_to_the_curve_order_is_refused(keyset):
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # P-256 order
    for r, s in ((n, n), (n, 1), (1, n), (2**256 - 1, 2**256 - 1)):
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        refused(INVALID_TOKEN, verify, craft({"alg": "ES256", "kid": "ec-256"}, claims(), signature=sig), keyset)


def test_ecdsa_der_signature_is_refused(keyset, ec256):
    header = {"alg": "ES256", "kid": "ec-256"}
    der = craft(header, claims(), lambda data: ec256.sign(data, ec.ECDSA(hashes.SHA256())))
    parsed = jwt_parse(der)
    # It is a genuine signature, only DER-encoded instead of R || S (RFC 7518 §3.4).
    ec256.public_key().verify(parsed.signature, parsed.signing_input, ec.ECDSA(hashes.SHA256()))
    refused(INVALID_TOKEN, jwt_verify, parsed, issuer=issuer(), keys=keyset, now=NOW)


@pytest.mark.parametrize("alg,size", [("ES256", 32), ("ES384", 48), ("ES512", 66)])
def test_ecdsa_components_must_have_exactly_the_curve_size(private_keys, keyset, alg, size):
    """RFC 7518 §3.4: R and S are each exactly the coordinate size; zero-padded longer halves
    (a lenient "split in the middle" reading) or a short raw signature are refused."""
    hash_ = {"ES256": hashes.SHA256(), "ES384": hashes.SHA384(), "ES512": hashes.SHA512()}[alg]
    header = {"alg": alg, "kid": kid_for(alg)}
    token = craft(header, claims(), ec_raw_signer(private_keys[alg], hash_, size))
    assert verify(token, keyset, algorithms=(alg,)).alg == alg
    head, sig = token.rsplit(".", 1)
    raw = base64.urlsafe_b64decode(sig + "==")
    r, s = raw[:size], raw[size:]
    for pad in (1, 2):
        longer = bytes(pad) + r + bytes(pad) + s
        refused(INVALID_TOKEN, verify, f"{head}.{b64(longer)}", keyset, algorithms=(alg,))


def test_ecdsa_high_s_is_accepted_like_any_valid_signature(keyset, ec256):
    # ECDSA malleability: (r, n - s) is also valid. JWS has no low-s rule, so both verify.
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    token = craft({"alg": "ES256", "kid": "ec-256"}, claims(), ec_raw_signer(ec256, hashes.SHA256(), 32))
    head, sig = token.rsplit(".", 1)
    raw = base64.urlsafe_b64decode(sig + "==")
    flipped = raw[:32] + (n - int.from_bytes(raw[32:], "big")).to_bytes(32, "big")
    assert verify(token, keyset).alg == "ES256"
    assert verify(f"{head}.{b64(flipped)}", keyset).alg == "ES256"


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "ES512", "EdDSA"])
def test_truncated_or_extended_signature_is_refused(mint, keyset, alg):
    token = mint(alg)
    head, sig = token.rsplit(".", 1)
    raw = base64.urlsafe_b64decode(sig + "==")
    for changed in (raw[:-1], raw[1:], raw[: len(raw) // 2], raw + b"\x00", b"\x00" + raw, raw[:1]):
        refused(INVALID_TOKEN, verify, f"{head}.{b64(changed)}", keyset, algorithms=(alg,))


@pytest.mark.parametrize("alg", ["RS256", "PS384", "ES256", "ES384", "EdDSA"])
def test_tampered_payload_or_header_is_refused(mint, keyset, alg):
    token = mint(alg)
    header, payload, sig = token.split(".")
    tampered = (claims(sub="repo:attacker/repo:ref:refs/heads/main"), claims(exp=NOW + 3000), {**claims(), "x": 1})
    for tampered_claims in tampered:
        refused(INVALID_TOKEN, verify, f"{header}.{b64json(tampered_claims)}.{sig}", keyset, algorithms=(alg,))
    tampered_header = b64json({"alg": alg, "kid": kid_for(alg), "typ": "JWT", "cty": "x"})
    refused(INVALID_TOKEN, verify, f"{tampered_header}.{payload}.{sig}", keyset, algorithms=(alg,))


def test_signature_of_another_token_is_refused(mint, keyset):
    one, other = mint(sub="one"), mint(sub="other")
    refused(INVALID_TOKEN, verify, one.rsplit(".", 1)[0] + "." + other.rsplit(".", 1)[1], keyset)


def test_pss_with_a_different_salt_length_is_refused(keyset, rsa_key):
    def pss_salt_0(data: bytes) -> bytes:
        return rsa_key.sign(data, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=0), hashes.SHA256())

    token = craft({"alg": "PS256", "kid": "rsa-1"}, claims(), pss_salt_0)
    refused(INVALID_TOKEN, verify, token, keyset, algorithms=("PS256",))


def test_rs256_signature_with_another_hash_is_refused(keyset, rsa_key):
    token = craft({"alg": "RS256", "kid": "rsa-1"}, claims(), rsa_signer(rsa_key, hashes.SHA512()))
    refused(INVALID_TOKEN, verify, token, keyset)


def test_signature_is_checked_before_the_claims(keyset, rsa_key2):
    # Wrong key AND expired AND wrong issuer: the answer is about the signature, nothing else.
    token = craft({"alg": "RS256", "kid": "rsa-1"}, claims(exp=NOW - 10_000, iss="https://evil"), rsa_signer(rsa_key2))
    error = refused(INVALID_TOKEN, verify, token, keyset)
    assert error.description == "The token's signature is not valid."


# ---------------------------------------------------------------------- structure


def test_five_part_jwe_is_refused(mint):
    jwe_header = b64json({"alg": "RSA-OAEP", "enc": "A256GCM"})
    jwe = ".".join([jwe_header, b64(b"k" * 256), b64(b"iv"), b64(b"ct"), b64(b"tag")])
    refused(INVALID_REQUEST, jwt_parse, jwe)
    refused(INVALID_REQUEST, jwt_parse, mint() + ".")
    refused(INVALID_REQUEST, jwt_parse, mint() + "." + mint())  # nested/concatenated


@pytest.mark.parametrize("text", ["", ".", "..", "...", "a", "a.b", "a..b", "a.b.c.d", "." * 2000, "a" + ".a" * 2000])
def test_wrong_number_of_segments_is_refused(text):
    error = refused(INVALID_REQUEST, jwt_parse, text)
    assert error.description == "The token is malformed."


def test_json_serialization_is_refused(mint):
    header, payload, sig = mint().split(".")
    general = json.dumps({"payload": payload, "signatures": [{"protected": header, "signature": sig}]})
    flattened = json.dumps({"payload": payload, "protected": header, "signature": sig})
    refused(INVALID_REQUEST, jwt_parse, general)
    refused(INVALID_REQUEST, jwt_parse, flattened)
    refused(INVALID_REQUEST, jwt_parse, flattened.encode())


def test_empty_signature_is_refused(mint):
    head = mint().rsplit(".", 1)[0]
    error = refused(INVALID_REQUEST, jwt_parse, head + ".")
    assert "empty" in error.reason


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t + "=",
        lambda t: t + "==",
        lambda t: t.replace(".", "=.", 1),
        lambda t: t.replace("-", "+").replace("_", "/") if ("-" in t or "_" in t) else t[:-2] + "+" + t[-1],
        lambda t: t[:-2] + "/" + t[-1],
        lambda t: t[:20] + " " + t[20:],
        lambda t: t[:20] + "\t" + t[20:],
        lambda t: t[:20] + "\n" + t[20:],
        lambda t: t + "\n",
        lambda t: t + "\r\n",
        lambda t: " " + t,
        lambda t: t + " ",
        lambda t: t + "\x00",
        lambda t: t[:30] + "\u00e9" + t[30:],
        lambda t: t[:30] + "\uff21" + t[30:],  # fullwidth A
        lambda t: t.replace(".", "\u2024", 1) + ".x",  # one-dot leader
        lambda t: "Bearer " + t,
    ],
)
def test_characters_outside_base64url_are_refused(mint, mutate):
    token = mint()
    changed = mutate(token)
    assert changed != token
    refused(INVALID_REQUEST, jwt_parse, changed)
    if changed.isascii():
        refused(INVALID_REQUEST, jwt_parse, changed.encode())
    else:
        refused(INVALID_REQUEST, jwt_parse, changed.encode("utf-8"))


def test_non_canonical_base64_is_refused(mint):
    header, payload, sig = mint().split(".")
    assert len(sig) % 4 == 2  # 256 bytes
    # A length of 1 mod 4 can never be base64url, in any segment.
    for extra in ("", "A", "AA", "AAA"):
        for index, segment in enumerate((header, payload, sig)):
            parts = [header, payload, sig]
            parts[index] = segment + extra
            if len(parts[index]) % 4 == 1:
                error = refused(INVALID_REQUEST, jwt_parse, ".".join(parts))
                assert "canonical" in error.reason
    # unused bits set in the last character of a 1-byte-tail segment
    one_tail = b64(b'{"alg":"RS256","kid":"rsa-1"}')  # 29 bytes → 2 leftover characters
    assert len(one_tail) % 4 == 3
    last = one_tail[-1]
    alternatives = {2: "AQgw", 3: "AEIMQUYcgkosw048"}[len(one_tail) % 4]
    for char in B64URL_ALPHABET:
        if char == last:
            continue
        changed = f"{one_tail[:-1]}{char}.{payload}.{sig}"
        if char not in alternatives:
            error = refused(INVALID_REQUEST, jwt_parse, changed)
            assert "canonical" in error.reason


@pytest.mark.parametrize("value", ["[]", '["alg","RS256"]', '"RS256"', "1", "1.5", "null", "true", "false", ""])
def test_header_or_payload_not_an_object_is_refused(mint, value):
    header, payload, sig = mint().split(".")
    raw = b64(value.encode())
    refused(INVALID_REQUEST, jwt_parse, f"{raw}.{payload}.{sig}")
    refused(INVALID_REQUEST, jwt_parse, f"{header}.{raw}.{sig}")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"alg":"RS256","kid":"\xff"}',
        b'{"alg":"RS256","kid":"\xc0\xaf"}',  # overlong '/'
        b'{"alg":"RS256","kid":"\xed\xa0\x80"}',  # UTF-8-encoded surrogate
        '{"alg":"RS256"}'.encode("utf-16"),
        '{"alg":"RS256"}'.encode("utf-16-le"),
        '{"alg":"RS256"}'.encode("utf-32"),
        b'\xef\xbb\xbf{"alg":"RS256"}',  # BOM
        b'{"alg":"RS256","kid":"\\ud800"}',  # lone surrogate escape
        b'{"alg":"RS256","kid":"\\udc00x"}',
        b'{"alg":"RS256","x":NaN}',
        b'{"alg":"RS256","x":Infinity}',
        b'{"alg":"RS256","x":-Infinity}',
        b'{"alg":"RS256",}',
        b"{'alg':'RS256'}",
        b'{"alg":"RS256"} trailing',
        b'{"alg":"RS256","x":' + b"1" * 5000 + b"}",  # beyond Python's int digit limit
    ],
)
def test_header_or_payload_not_utf8_json_is_refused(mint, raw):
    header, payload, sig = mint().split(".")
    refused(INVALID_REQUEST, jwt_parse, f"{b64(raw)}.{payload}.{sig}")
    refused(INVALID_REQUEST, jwt_parse, f"{header}.{b64(raw)}.{sig}")


def test_escaped_non_ascii_and_surrogate_pairs_are_fine(keyset, rsa_key):
    payload = b64(json.dumps({**claims(), "actor": "J\u00fcrgen \U0001f600"}, ensure_ascii=True).encode())
    assert "\\ud83d\\ude00" in json.dumps("\U0001f600")
    token = craft({"alg": "RS256", "kid": "rsa-1"}, payload, rsa_signer(rsa_key))
    assert verify(token, keyset).claims["actor"] == "J\u00fcrgen \U0001f600"
    raw_utf8 = b64(json.dumps({**claims(), "actor": "J\u00fcrgen"}, ensure_ascii=False).encode("utf-8"))
    token = craft({"alg": "RS256", "kid": "rsa-1"}, raw_utf8, rsa_signer(rsa_key))
    assert verify(token, keyset).claims["actor"] == "J\u00fcrgen"


@pytest.mark.parametrize(
    "where,raw",
    [
        ("header", '{"alg":"RS256","alg":"none"}'),
        ("header", '{"alg":"RS256","kid":"rsa-1","kid":"other"}'),
        ("header", '{"alg":"RS256","x":{"a":1,"a":2}}'),
        ("payload", '{"sub":"a","sub":"b"}'),
        ("payload", '{"iss":"https://ci.upstream.test","aud":"x","aud":"sts.amazonaws.com"}'),
        ("payload", '{"sub":"a","nested":{"deeper":{"x":1,"x":1}}}'),
        ("payload", '{"sub":"a","list":[{"x":1},{"y":1,"y":2}]}'),
        ("payload", '{"sub":"a","s\\u0075b":"b"}'),  # the same name, once escaped
    ],
)
def test_duplicate_member_names_are_refused(mint, where, raw):
    header, payload, sig = mint().split(".")
    token = f"{b64(raw.encode())}.{payload}.{sig}" if where == "header" else f"{header}.{b64(raw.encode())}.{sig}"
    error = refused(INVALID_REQUEST, jwt_parse, token)
    assert f"The token's {where} names a member twice." == error.reason


def test_oversized_token_is_refused_with_413(mint):
    token = mint(padding_claim="x" * conf.MAX_TOKEN_BYTES)
    assert len(token) > conf.MAX_TOKEN_BYTES
    refused(TOO_LARGE, jwt_parse, token)
    refused(TOO_LARGE, jwt_parse, token.encode())


def test_size_limit_is_inclusive_and_configurable(mint):
    token = mint()
    assert jwt_parse(token, max_bytes=len(token)).claims == claims()
    refused(TOO_LARGE, jwt_parse, token, max_bytes=len(token) - 1)
    big = mint(padding_claim="x" * (conf.MAX_TOKEN_BYTES * 3 // 4 - 600))
    assert conf.MAX_TOKEN_BYTES - 1000 < len(big) <= conf.MAX_TOKEN_BYTES
    assert jwt_parse(big).claims["padding_claim"]


def test_size_is_checked_before_anything_else():
    for garbage in ("." * 20_000, "\n" * 20_000, "{" * 20_000, "a" * (conf.MAX_TOKEN_BYTES + 1)):
        refused(TOO_LARGE, jwt_parse, garbage)
    # Non-ASCII text is measured in UTF-8 bytes: 6000 characters, 18000 bytes.
    refused(TOO_LARGE, jwt_parse, "\u20ac" * 6000)
    refused(INVALID_REQUEST, jwt_parse, "\u20ac" * 5000)


@pytest.mark.parametrize(
    "nested",
    [
        '{"x":' + "[" * 5000 + "]" * 5000 + "}",
        '{"x":' + '{"":' * 2000 + "1" + "}" * 2000 + "}",
        "[" * 5500 + "]" * 5500,
        '{"x":' + "[" * 64 + "]" * 64 + "}",
    ],
)
def test_deeply_nested_json_is_refused_not_a_crash(mint, nested):
    # Refused by our own depth limit (strict_json.MAX_DEPTH), the same on every Python: 3.13's
    # decoder no longer stops at the interpreter's recursion limit.
    header, _, sig = mint().split(".")
    token = f"{header}.{b64(nested.encode())}.{sig}"
    assert len(token) <= conf.MAX_TOKEN_BYTES  # within the size limit: the depth is the problem
    error = refused(INVALID_REQUEST, jwt_parse, token)
    assert error.status == 400
    refused(INVALID_REQUEST, jwt_parse, f"{b64(nested.encode())}.{b64json(claims())}.{sig}")


def test_non_text_input_is_refused():
    refused(INVALID_REQUEST, jwt_parse, 12345)  # type: ignore[arg-type]


# ------------------------------------------------------------------------- claims


@pytest.mark.parametrize("name", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", [str(NOW + 100), f"{NOW + 100}.0", True, False, None, [NOW + 100], {"t": NOW}])
def test_time_claims_must_be_numbers(mint, keyset, name, value):
    error = refused(INVALID_TOKEN, verify, mint(**{name: value}), keyset)
    assert name in error.description


@pytest.mark.parametrize("name", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("literal", ["1e400", "-1e400"])
def test_time_claims_must_be_finite(keyset, rsa_key, name, literal):
    # JSON has no infinity, but 1e400 is a valid JSON number that overflows a double.
    payload = json.dumps(claims(**{name: "INF"})).replace('"INF"', literal)
    token = craft({"alg": "RS256", "kid": "rsa-1"}, b64(payload.encode()), rsa_signer(rsa_key))
    assert jwt_parse(token).claims[name] in (float("inf"), float("-inf"))
    error = refused(INVALID_TOKEN, verify, token, keyset)
    assert name in error.description


def test_time_claims_may_be_floats(mint, keyset):
    assert verify(mint(exp=NOW + 300.5, nbf=NOW - 0.25, iat=NOW - 0.5), keyset).claims["exp"] == NOW + 300.5


def test_exp_is_required(mint, keyset):
    error = refused(INVALID_TOKEN, verify, mint(exp=DROP), keyset)
    assert "exp" in error.description
    refused(INVALID_TOKEN, verify, mint(exp=DROP, iat=DROP, nbf=DROP), keyset)


def test_nbf_and_iat_are_optional(mint, keyset):
    assert verify(mint(nbf=DROP, iat=DROP), keyset).claims["exp"] == NOW + 300


def test_exp_leeway_boundary(mint, keyset):
    # RFC 7519 §4.1.4: valid while exp > now - leeway.
    assert verify(mint(exp=NOW - 59), keyset, leeway=60).alg == "RS256"
    assert verify(mint(exp=NOW - 59.999), keyset, leeway=60).alg == "RS256"
    error = refused(INVALID_TOKEN, verify, mint(exp=NOW - 60), keyset, leeway=60)
    assert error.description == "The token has expired."
    refused(INVALID_TOKEN, verify, mint(exp=NOW - 61), keyset, leeway=60)
    assert verify(mint(exp=NOW + 1), keyset, leeway=0).alg == "RS256"
    refused(INVALID_TOKEN, verify, mint(exp=NOW), keyset, leeway=0)


def test_nbf_leeway_boundary(mint, keyset):
    # RFC 7519 §4.1.5: valid from nbf, with leeway: nbf <= now + leeway.
    assert verify(mint(nbf=NOW + 60, iat=NOW), keyset, leeway=60).alg == "RS256"
    error = refused(INVALID_TOKEN, verify, mint(nbf=NOW + 61, iat=NOW), keyset, leeway=60)
    assert error.description == "The token is not yet valid."
    refused(INVALID_TOKEN, verify, mint(nbf=NOW + 60.001, iat=NOW), keyset, leeway=60)
    assert verify(mint(nbf=NOW, iat=NOW), keyset, leeway=0).alg == "RS256"
    refused(INVALID_TOKEN, verify, mint(nbf=NOW + 1, iat=NOW), keyset, leeway=0)


def test_iat_leeway_boundary(mint, keyset):
    assert verify(mint(iat=NOW + 60, nbf=DROP), keyset, leeway=60).alg == "RS256"
    error = refused(INVALID_TOKEN, verify, mint(iat=NOW + 61, nbf=DROP), keyset, leeway=60)
    assert "future" in error.description
    # A backdated nbf buys its backdate on top of the leeway, but never more than 600 s.
    assert verify(mint(iat=NOW + 600, nbf=NOW - 600), keyset, leeway=0).alg == "RS256"
    refused(INVALID_TOKEN, verify, mint(iat=NOW + 601, nbf=NOW - 600), keyset, leeway=0)
    refused(INVALID_TOKEN, verify, mint(iat=NOW + 661, nbf=NOW - 3600), keyset, leeway=60)
    refused(INVALID_TOKEN, verify, mint(iat=NOW + 3600, nbf=NOW), keyset, leeway=60)


def test_max_token_age_with_iat(mint, keyset):
    # docs/verification.md#lifetime-bound: exp - iat not over max_token_age.
    assert verify(mint(iat=NOW - 100, exp=NOW + 3500), keyset, max_token_age=3600).alg == "RS256"
    error = refused(INVALID_TOKEN, verify, mint(iat=NOW - 100, exp=NOW + 3501), keyset, max_token_age=3600)
    assert "lifetime" in error.description
    # default 86,400 s
    assert verify(mint(iat=NOW, exp=NOW + 86400), keyset).alg == "RS256"
    refused(INVALID_TOKEN, verify, mint(iat=NOW, exp=NOW + 86401), keyset)
    # an old iat counts, even when exp is still in the future
    refused(INVALID_TOKEN, verify, mint(iat=NOW - 86400, nbf=DROP, exp=NOW + 10), keyset)


def test_max_token_age_without_iat_counts_from_now(mint, keyset):
    assert verify(mint(iat=DROP, exp=NOW + 3600), keyset, max_token_age=3600).alg == "RS256"
    refused(INVALID_TOKEN, verify, mint(iat=DROP, exp=NOW + 3601), keyset, max_token_age=3600)
    refused(INVALID_TOKEN, verify, mint(iat=DROP, nbf=DROP, exp=NOW + 10**9), keyset)


@pytest.mark.parametrize(
    "overrides",
    [
        {"exp": 10**400, "iat": DROP},  # int - float would overflow
        {"exp": 10**400},
        {"exp": 10**400, "iat": 1.5},
        {"iat": -(10**400)},
        {"iat": -1e300, "exp": 1e300},
        {"exp": 10**4000},
    ],
)
def test_huge_numbers_are_refused_cleanly(keyset, rsa_key, overrides):
    token = craft({"alg": "RS256", "kid": "rsa-1"}, claims(**overrides), rsa_signer(rsa_key))
    error = refused(INVALID_TOKEN, verify, token, keyset)
    assert "lifetime" in error.description


def test_hugely_negative_nbf_is_just_the_past(mint, keyset):
    assert verify(mint(nbf=-(10**400)), keyset).claims["nbf"] == -(10**400)


@pytest.mark.parametrize("name", ["iss", "aud", "sub", "exp"])
def test_deep_claim_values_under_the_parser_limit_are_refused_cleanly(keyset, rsa_key, name):
    # strict_json.MAX_DEPTH is 64: the claim set is one level, the value 60 more.
    deep = "[" * 60 + "]" * 60
    payload = json.dumps(claims(**{name: "DEEP"})).replace('"DEEP"', deep)
    token = craft({"alg": "RS256", "kid": "rsa-1"}, b64(payload.encode()), rsa_signer(rsa_key))
    refused(INVALID_TOKEN, verify, token, keyset)
    deep_header = '{"alg":"RS256","kid":' + deep + "}"
    kid_token = craft(b64(deep_header.encode()), claims(), rsa_signer(rsa_key))
    refused(INVALID_TOKEN, verify, kid_token, keyset)


@pytest.mark.parametrize("aud", [AUD, [AUD], ["other", AUD], [AUD, AUD, "x"]])
def test_audience_accepted(mint, keyset, aud):
    assert verify(mint(aud=aud), keyset).claims["aud"] == aud


def test_audience_any_of_several_configured(mint, keyset):
    assert verify(mint(aud="second"), keyset, audiences=("first", "second")).alg == "RS256"


@pytest.mark.parametrize(
    "aud",
    [DROP, None, "", "other", AUD.upper(), AUD + "/", ["other"], [], [[AUD]], [AUD, 1], 1, {"aud": AUD}, True],
)
def test_audience_refused(mint, keyset, aud):
    refused(INVALID_TOKEN, verify, mint(aud=aud), keyset)


def test_empty_audience_config_accepts_nothing(mint, keyset):
    for aud in (AUD, [AUD], "", []):
        refused(INVALID_TOKEN, verify, mint(aud=aud), keyset, audiences=())


@pytest.mark.parametrize(
    "iss",
    [DROP, None, "", 1, [ISS], {"iss": ISS}, True]
    + [ISS + "/", ISS.upper(), "http://ci.upstream.test", ISS + " ", ISS + "\u0000"],
)
def test_issuer_refused(keyset, rsa_key, iss):
    token = craft({"alg": "RS256", "kid": "rsa-1"}, claims(iss=iss), rsa_signer(rsa_key))  # PyJWT refuses to mint these
    error = refused(INVALID_TOKEN, verify, token, keyset)
    assert "issuer" in error.description


@pytest.mark.parametrize("sub", [1, None, ["a"], {"a": 1}, True])
def test_sub_must_be_a_string_when_present(mint, keyset, sub):
    refused(INVALID_TOKEN, verify, mint(sub=sub), keyset)


def test_sub_may_be_absent(mint, keyset):
    assert "sub" not in verify(mint(sub=DROP), keyset).claims


def test_descriptions_never_carry_token_contents(mint, keyset):
    secret = "very-secret-claim-value"
    for token in (mint(iss=secret), mint(aud=secret), mint(exp=secret), mint(headers={"kid": secret})):
        with pytest.raises(InvalidToken) as info:
            verify(token, keyset)
        assert secret not in info.value.description


# -------------------------------------------------------------------------- KeySet


def test_keyset_loads_every_supported_key_type(keyset):
    assert tuple(k.kid for k in keyset.keys) == ("rsa-1", "ec-256", "ec-384", "ec-521", "ed-1")
    rsa_pub, ec_pub, *_ = keyset.keys
    assert rsa_pub == PublicKey(kid="rsa-1", kty="RSA", alg=None, crv=None, key=rsa_pub.key)
    assert isinstance(rsa_pub.key, rsa.RSAPublicKey)
    assert (ec_pub.kty, ec_pub.crv, ec_pub.alg) == ("EC", "P-256", "ES256")
    assert isinstance(keyset.keys[-1].key, ed25519.Ed25519PublicKey)


def test_keyset_is_immutable(keyset):
    with pytest.raises(dataclasses.FrozenInstanceError):
        keyset.keys = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        keyset.keys[0].kid = "x"  # type: ignore[misc]
    assert isinstance(keyset.keys, tuple)
    assert isinstance(KeySet(keys=list(keyset.keys)).keys, tuple)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "document", [None, [], "keys", {}, {"keys": None}, {"keys": "x"}, {"keys": {}}, {"key": []}, {"keys": {"k": {}}}]
)
def test_keyset_refuses_a_document_that_is_not_a_jwks(document):
    with pytest.raises(ValueError):
        KeySet.from_jwks(document)  # type: ignore[arg-type]


def test_keyset_from_empty_jwks_is_empty():
    keys = KeySet.from_jwks({"keys": []})
    assert tuple(k.kid for k in keys.keys) == () and keys.keys == ()


def test_keyset_skips_unusable_keys(rsa_key, ec256, ed_key):
    good = jwk_of(rsa_key, "good")
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    n = base64.urlsafe_b64decode(good["n"] + "==")
    bad_point = dict(jwk_of(ec256, "bad-point"))
    y = int.from_bytes(base64.urlsafe_b64decode(bad_point["y"] + "=="), "big")
    bad_point["y"] = b64((y ^ 1).to_bytes(32, "big"))  # off the curve
    skipped = [
        jwk_of(rsa_key, "enc", use="enc"),
        jwk_of(rsa_key, "enc-alg", "RSA-OAEP"),
        jwk_of(rsa_key, "ops-encrypt", key_ops=["encrypt"]),
        jwk_of(rsa_key, "hs-alg", "HS256"),
        jwk_of(rsa_key, "mismatched-alg", "ES256"),
        jwk_of(ec256, "ec-as-es384", "ES384"),
        jwk_of(small, "small-1024"),
        {**good, "kid": "small-2047", "n": b64(bytes([0x7F]) + n[1:])},
        {**good, "kid": "even-e", "e": b64(b"\x01\x00\x00")},
        {**good, "kid": "e-one", "e": "AQ"},
        {**good, "kid": "huge-e", "e": b64(b"\x01" * 64)},
        {**good, "kid": "bad-n", "n": "not*base64"},
        {**good, "kid": "n-number", "n": 12345},
        {key: value for key, value in good.items() if key != "e"} | {"kid": "no-e"},
        {"kty": "oct", "k": b64(b"secret"), "kid": "hmac"},
        {"kty": "RSA ", "n": good["n"], "e": good["e"], "kid": "kty-space"},
        {"kid": "no-kty"},
        {**good, "kid": 7},
        {**good, "kid": "use-list", "use": ["sig"]},
        bad_point,
        {**jwk_of(ec256, "ec-bad-curve"), "crv": "secp256k1"},
        {**jwk_of(ec256, "ec-no-curve"), "crv": None},
        {**jwk_of(ec256, "ec-long-x"), "x": b64(b"\x00" * 33)},
        jwk_of(ed448.Ed448PrivateKey.generate(), "ed448"),
        {"kty": "OKP", "crv": "X25519", "x": b64(b"\x09" * 32), "kid": "x25519"},
        {**jwk_of(ed_key, "ed-short"), "x": b64(b"\x01" * 31)},
        "not-an-object",
        None,
        ["kty", "RSA"],
    ]
    keys = KeySet.from_jwks({"keys": [*skipped, good]})
    assert tuple(k.kid for k in keys.keys) == ("good",)


def test_keyset_never_loads_private_members_and_ignores_x5c(rsa_key, ec256):
    private_rsa = jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key, as_dict=True) | {"kid": "priv", "x5c": ["garbage!"]}
    assert private_rsa.pop("key_ops") == ["sign"]  # PyJWT marks it; a key_ops without "verify" is skipped
    private_ec = jwt.algorithms.ECAlgorithm.to_jwk(ec256, as_dict=True) | {"kid": "priv-ec", "x5c": "nonsense"}
    assert "d" in private_rsa and "d" in private_ec
    keys = KeySet.from_jwks({"keys": [private_rsa, private_ec]})
    assert tuple(k.kid for k in keys.keys) == ("priv", "priv-ec")
    assert isinstance(keys.keys[0].key, rsa.RSAPublicKey)
    assert isinstance(keys.keys[1].key, ec.EllipticCurvePublicKey)
    assert not hasattr(keys.keys[0].key, "private_numbers")


def test_keyset_accepts_key_ops_verify_and_padded_members(rsa_key):
    jwk = jwk_of(rsa_key, "ops", key_ops=["verify"])
    padded = {**jwk_of(rsa_key, "padded"), "e": "AQAB", "n": jwk["n"] + "=" * (-len(jwk["n"]) % 4)}
    assert tuple(k.kid for k in KeySet.from_jwks({"keys": [jwk, padded]}).keys) == ("ops", "padded")


def test_keyset_keeps_duplicate_kids_so_verification_can_call_them_ambiguous(rsa_key, rsa_key2):
    keys = KeySet.from_jwks({"keys": [jwk_of(rsa_key, "dup"), jwk_of(rsa_key2, "dup")]})
    assert tuple(k.kid for k in keys.keys) == ("dup", "dup")


# ------------------------------------------------------------------ robustness fuzz


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.one_of(
        st.text(max_size=300), st.binary(max_size=300), st.from_regex(r"[A-Za-z0-9_\-=.+/ ]{0,200}", fullmatch=True)
    )
)
def test_parse_compact_on_arbitrary_input_raises_only_invalid_request(text):
    try:
        parsed = jwt_parse(text)
    except InvalidRequest as error:
        assert error.status in (400, 413) and error.code == "invalid_request"
    else:
        assert isinstance(parsed.header, dict) and isinstance(parsed.claims, dict) and parsed.signature


@pytest.fixture(scope="module")
def fuzz_target(mint, keyset) -> tuple[str, KeySet]:
    return mint("ES256"), keyset


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(min_value=0, max_value=10_000), char=st.sampled_from(B64URL_ALPHABET + ".=+/ \n"))
def test_any_single_character_change_never_verifies(fuzz_target, position, char):
    token, keys = fuzz_target
    changed = _replace(token, position, char)
    if changed == token:
        return
    try:
        verify(changed, keys)
    except (InvalidRequest, InvalidToken) as error:
        assert (error.code, error.status) in {("invalid_request", 400), ("invalid_token", 401)}
    else:  # only possible if the change decoded to identical bytes, which canonical base64 forbids
        raise AssertionError(f"a changed token verified: position {position}, {char!r}")


def test_b64_helper_is_canonical():
    # Guard for the tests above: our helper emits what the parser accepts.
    for n in range(0, 40):
        data = bytes(range(n))
        assert binascii.a2b_base64(base64.b64encode(data)) == data
        assert base64.urlsafe_b64decode(b64(data) + "=" * (-len(b64(data)) % 4)) == data


# The reasons an operator reads (audit log, overview, simulator) are sentences, not internals.
def test_an_expired_token_reason_is_a_sentence_with_readable_times(mint, keyset):
    error = refused(INVALID_TOKEN, verify, mint(exp=1000, iat=DROP, nbf=DROP), keyset, leeway=60)
    now_text = datetime.fromtimestamp(NOW, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert (
        error.reason == f"The token expired at 1970-01-01 00:16:40 UTC (1000); it is now {now_text} ({int(NOW)}), "
        "past the 60 s leeway."
    )
    assert (error.code, error.status) == ("invalid_token", 401)


@pytest.mark.parametrize("token, parts", [("abc", "1 part"), ("a.b", "2 parts"), ("a.b.c.d.e", "5 parts")])
def test_a_token_of_the_wrong_shape_says_what_a_jwt_looks_like(token, parts):
    error = refused(INVALID_REQUEST, jwt_parse, token)
    assert error.reason == f"The token has {parts} separated by dots; a signed JWT has 3 (header.payload.signature)."
    assert (error.code, error.status) == ("invalid_request", 400)


def test_an_unreadable_time_is_still_a_sentence(mint, keyset):
    error = refused(INVALID_TOKEN, verify, mint(exp=10**30, iat=DROP, nbf=DROP), keyset, leeway=60)
    assert error.reason.startswith("The token lives from ") and "10000000000000000" in error.reason
