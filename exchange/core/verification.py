"""Upstream JWT → ``VerifiedToken`` (docs/verification.md#verifying-an-upstream-token). Pure: no ORM, no
network, no global cache.

Two steps, so the caller can pick the issuer (by ``iss`` or ``issuerId``) and its keys
between them:

- ``jwt_parse`` (exchange.core.compact_jws) checks the structure only: a strict compact JWS (RFC 7515 §7.1) whose
  header and payload are UTF-8 JSON objects without duplicate members (RFC 7515 §4,
  RFC 7519 §4, RFC 8725 §3.7). It raises ``InvalidRequest`` (400) / ``RequestTooLarge`` (413).
- ``jwt_verify`` checks the header against the issuer's allowlist and key set, the
  signature with ``cryptography`` directly, and then the claims (RFC 7519 §4.1, §7.2).
  It raises ``InvalidToken`` (401); ``UnknownKeyId`` when no key has the token's ``kid``,
  so the caller may refetch the JWKS once (docs/verification.md#unknown-kid).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from .errors import InvalidToken, UnknownKeyId
from .jwks import EC_CURVES, HASHES, SUPPORTED_ALGORITHMS, KeySet, PublicKey, key_fits
from .values import IssuerConfig, ParsedToken, VerifiedToken

__all__ = ["jwt_verify", "short_value"]


# JOSE header parameters that would let the token pick its own key (RFC 8725 §3.10,
# RFC 7515 §4.1.3-4.1.6), and RFC 7797's unencoded payload: refused on sight (docs/verification.md#header).
_FORBIDDEN_HEADERS = ("jwk", "jku", "x5u", "x5c", "b64")


def _verify_rsa_pkcs1(key: PublicKey, alg: str, signature: bytes, data: bytes) -> None:
    # RFC 8017 §8.2.2 step 1: the signature is exactly k octets long.
    if len(signature) != (key.key.key_size + 7) // 8:
        raise ValueError("RSA signature length differs from the modulus length")
    key.key.verify(signature, data, padding.PKCS1v15(), HASHES[alg[2:]])


def _verify_rsa_pss(key: PublicKey, alg: str, signature: bytes, data: bytes) -> None:
    if len(signature) != (key.key.key_size + 7) // 8:
        raise ValueError("RSA signature length differs from the modulus length")
    digest = HASHES[alg[2:]]
    # RFC 7518 §3.5: MGF1 with the same hash, salt as long as the hash output.
    key.key.verify(signature, data, padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size), digest)


def _verify_ecdsa(key: PublicKey, alg: str, signature: bytes, data: bytes) -> None:
    # RFC 7518 §3.4: the signature is R || S, each exactly the coordinate size; a DER
    # signature or any other length is invalid. r = 0 or s = 0 is never valid (the
    # "psychic signature", CVE-2022-21449; RFC 8725 §3.4).
    size = EC_CURVES[key.crv][1]  # type: ignore[index]
    if len(signature) != 2 * size:
        raise ValueError("ECDSA signature is not R || S of the curve's size")
    r = int.from_bytes(signature[:size], "big")
    s = int.from_bytes(signature[size:], "big")
    if r == 0 or s == 0:
        raise ValueError("ECDSA signature with r or s zero")
    key.key.verify(encode_dss_signature(r, s), data, ec.ECDSA(HASHES[alg[2:]]))


def _verify_eddsa(key: PublicKey, alg: str, signature: bytes, data: bytes) -> None:
    # RFC 8037 §3.1 / RFC 8032 §5.1.7.
    if len(signature) != 64:
        raise ValueError("Ed25519 signature is not 64 bytes")
    key.key.verify(signature, data)


_VERIFIERS: Mapping[str, Callable[[PublicKey, str, bytes, bytes], None]] = MappingProxyType(
    {
        "RS": _verify_rsa_pkcs1,
        "PS": _verify_rsa_pss,
        "ES": _verify_ecdsa,
        "Ed": _verify_eddsa,
    }
)


# --------------------------------------------------------------- verification


def _invalid(description: str, reason: str) -> InvalidToken:
    return InvalidToken(description, reason=reason)


def _when(moment: float | int) -> str:
    """A NumericDate as people read it, with the number itself: ``2026-06-04 01:20:00 UTC (1780536000)``."""
    try:
        text = datetime.fromtimestamp(moment, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, ValueError, OSError):
        return short_value(moment)
    return f"{text} ({short_value(int(moment))})"


_JSON_KINDS = {
    "str": "a string",
    "bool": "true or false",
    "list": "a list",
    "dict": "an object",
    "NoneType": "null",
    "float": "a number",
    "int": "a number",
}


def _json_kind(value: Any) -> str:
    return _JSON_KINDS.get(type(value).__name__, type(value).__name__)


def short_value(value: Any) -> str:
    """A token-controlled value, bounded for the reason (audit/log only, never the client).

    Containers are named, not printed: their repr could be huge or nested deep enough to
    raise RecursionError, and a bad token must never become a 500.
    """
    if isinstance(value, str):
        return repr(value if len(value) <= 80 else f"{value[:77]}...")
    if value is None or isinstance(value, (bool, int, float)):
        text = repr(value)
        return text if len(text) <= 80 else f"{text[:77]}..."
    if isinstance(value, (list, dict)):
        return f"<{type(value).__name__} of {len(value)}>"
    return f"<{type(value).__name__}>"


def _select_key(header: Mapping[str, Any], alg: str, keys: KeySet) -> PublicKey:
    if "kid" in header:
        kid = header["kid"]
        if not isinstance(kid, str):
            raise _invalid("The token header is not acceptable.", "The token's kid is not a string.")
        candidates = keys._by_kid.get(kid, ())
        if not candidates:  # an exact, opaque lookup: the kid is never a path or query (RFC 8725 §3.10)
            raise UnknownKeyId(reason=f"The issuer publishes no key with the token's kid {short_value(kid)}.")
        if len(candidates) > 1:  # docs/verification.md#key-selection: a kid matches exactly one key
            raise _invalid(
                "The token's key is ambiguous.",
                f"The token's kid {short_value(kid)} names {len(candidates)} of the issuer's keys, not exactly one.",
            )
        key = candidates[0]
        if not key_fits(key, alg):  # RFC 8725 §3.1: the algorithm must fit the key
            raise _invalid(
                "The token's algorithm does not fit its key.",
                f"The token's algorithm {alg} does not fit its key {short_value(kid)} "
                f"(a {key.kty} key{f' on {key.crv}' if key.crv else ''}{f' for {key.alg}' if key.alg else ''}).",
            )
        return key
    # No kid: only when exactly one key could have made this signature (docs/verification.md#key-selection).
    candidates = keys._by_alg[alg]
    if len(candidates) != 1:
        raise _invalid(
            "The token has no key id and its key is ambiguous.",
            f"The token has no kid, and {len(candidates) or 'none'} of the issuer's keys "
            f"{'fits' if len(candidates) < 2 else 'fit'} its algorithm {alg}: no one key to check it with.",
        )
    return candidates[0]


# The most skew an issuer's backdated nbf may buy (GitHub Actions backdates by 600 s).
MAX_NBF_BACKDATE = 600


def _number(claims: Mapping[str, Any], name: str) -> float | int | None:
    """A NumericDate (RFC 7519 §2): a JSON number; not a string, bool, NaN or infinity."""
    if name not in claims:
        return None
    value = claims[name]
    kind = type(value)  # not isinstance: a bool is an int in Python, not a number in JSON
    if kind is not int and (kind is not float or not math.isfinite(value)):  # isfinite(10**400) overflows
        what = "not a finite number" if kind is float else f"{_json_kind(value)}, not a number"
        raise _invalid(f"The token's {name} claim is not a number.", f"The token's {name} claim is {what}.")
    return value


def _check_claims(claims: Mapping[str, Any], issuer: IssuerConfig, now: float) -> None:
    # RFC 7519 §4.1.1 / docs/verification.md#issuer-and-audience: exact string comparison, no trailing-slash
    # or case leniency.
    iss = claims.get("iss")
    if not isinstance(iss, str) or iss != issuer.issuer:
        raise _invalid(
            "The token's issuer is not accepted.",
            f"The token's issuer {short_value(iss)} is not this issuer's {issuer.issuer!r} (compared exactly).",
        )

    # RFC 7519 §4.1.3: a string or an array of strings, one of which must be ours.
    aud = claims.get("aud")
    auds = [aud] if isinstance(aud, str) else aud
    if not isinstance(auds, list) or not all(isinstance(a, str) for a in auds):
        raise _invalid(
            "The token's aud claim is malformed.",
            f"The token's aud claim is {_json_kind(aud)}, not a string or a list of strings.",
        )
    if not any(a in issuer.audiences for a in auds):
        raise _invalid(
            "The token's audience is not accepted.",
            f"The token's audience {short_value(aud)} is none of the issuer's accepted audiences: "
            f"{', '.join(map(repr, issuer.audiences)) or '(none)'}.",
        )

    if "sub" in claims and not isinstance(claims["sub"], str):  # RFC 7519 §4.1.2
        raise _invalid(
            "The token's sub claim is not a string.",
            f"The token's sub claim is {_json_kind(claims['sub'])}, not a string.",
        )

    _check_times(claims, issuer, now)


def _check_times(claims: Mapping[str, Any], issuer: IssuerConfig, now: float) -> None:
    exp, nbf, iat = _number(claims, "exp"), _number(claims, "nbf"), _number(claims, "iat")
    leeway = issuer.leeway
    if exp is None:  # docs/verification.md#times: exp is required
        raise _invalid("The token has no exp claim.", "The token has no exp (expiry) claim.")
    if not exp > now - leeway:  # RFC 7519 §4.1.4
        raise _invalid(
            "The token has expired.",
            f"The token expired at {_when(exp)}; it is now {_when(now)}, past the {leeway} s leeway.",
        )
    if nbf is not None and nbf > now + leeway:  # RFC 7519 §4.1.5
        raise _invalid(
            "The token is not yet valid.",
            f"The token is valid only from {_when(nbf)}; it is now {_when(now)}, "
            f"before that even with the {leeway} s leeway.",
        )
    if iat is not None:  # RFC 7519 §4.1.6
        # An issuer that backdates nbf before iat (GitHub Actions: nbf = iat - 600) states how
        # much clock skew it means to tolerate; honour it, up to MAX_NBF_BACKDATE, on top of
        # the leeway. Otherwise a verifier whose clock lags would refuse a token inside the
        # window its issuer declared valid (docs/verification.md#backdated-nbf).
        backdate = min(max(iat - nbf, 0), MAX_NBF_BACKDATE) if nbf is not None and nbf <= iat else 0
        if iat > now + leeway + backdate:
            raise _invalid(
                "The token was issued in the future.",
                f"The token says it was issued at {_when(iat)}; it is now {_when(now)}, earlier even with the "
                f"{leeway} s leeway{f' and the {backdate} s its nbf is backdated by' if backdate else ''}.",
            )
    # docs/verification.md#lifetime-bound: bound the lifetime, so a stolen long-lived token is refused. Written as a
    # comparison, not exp - start: a 400-digit int minus a float would raise OverflowError.
    start, start_name = (iat, "iat") if iat is not None else (now, "now")
    if exp > start + issuer.max_token_age:
        raise _invalid(
            "The token's lifetime is too long.",
            f"The token lives from {_when(start)} ({start_name}) to {_when(exp)} (exp), longer than the issuer's "
            f"maximum token age of {issuer.max_token_age} s.",
        )


def jwt_verify(parsed: ParsedToken, *, issuer: IssuerConfig, keys: KeySet, now: float) -> VerifiedToken:
    """Verify ``parsed`` against one issuer's config and keys at time ``now``
    (docs/verification.md#verifying-an-upstream-token)."""
    header = parsed.header

    for name in _FORBIDDEN_HEADERS:  # RFC 8725 §3.10: the token never names its own key
        if name in header:
            raise _invalid(
                "The token header is not acceptable.",
                f"The token's header has {name}, which is refused: a token never chooses the key that checks it.",
            )
    if "crit" in header:  # RFC 7515 §4.1.11: we understand no extension, so any crit is refused
        raise _invalid(
            "The token header is not acceptable.",
            "The token's header has crit: extensions jwtex does not know are refused.",
        )

    alg = header.get("alg")
    # RFC 8725 §3.1/§3.2: an allowlist, never "none" or HMAC whatever the config says.
    if not isinstance(alg, str) or alg not in SUPPORTED_ALGORITHMS or alg not in issuer.algorithms:
        raise _invalid(
            "The token's algorithm is not accepted.",
            f"The token's algorithm {short_value(alg)} is not one the issuer accepts "
            f"({', '.join(a for a in issuer.algorithms if a in SUPPORTED_ALGORITHMS) or 'none'}).",
        )

    key = _select_key(header, alg, keys)

    # Signature before any claim is trusted (RFC 7515 §5.2 step 8, RFC 7519 §7.2).
    try:
        _VERIFIERS[alg[:2]](key, alg, parsed.signature, parsed.signing_input)
    except Exception:  # noqa: BLE001 - InvalidSignature, or anything cryptography raises: a refusal
        reason = f"The token's {alg} signature does not verify with the issuer's key {short_value(key.kid)}."
        raise _invalid("The token's signature is not valid.", reason) from None

    _check_claims(parsed.claims, issuer, now)
    return VerifiedToken(
        issuer_id=issuer.issuer_id,
        claims=dict(parsed.claims),
        header=dict(header),
        kid=key.kid,
        alg=alg,
    )
