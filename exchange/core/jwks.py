"""JWKS documents (RFC 7517 §5) → loaded public keys, once per fetch. Pure.

``KeySet.from_jwks`` skips every key jwtex cannot or must not use (encryption keys, unknown
types and algorithms, malformed or out-of-bounds members) and indexes the rest by ``kid`` and
by algorithm, so a verification is a dict lookup. The result is immutable and safe to share
across threads.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from .limits import SUPPORTED_UPSTREAM_ALGORITHMS

__all__ = [
    "ALG_KEY",
    "EC_CURVES",
    "HASHES",
    "KeySet",
    "PublicKey",
    "STATIC_JWKS_MAX_BYTES",
    "STATIC_JWKS_MAX_KEYS",
    "SUPPORTED_ALGORITHMS",
    "key_fits",
    "kids_of",
    "static_jwks_clean",
]


@dataclass(frozen=True)
class PublicKey:
    kid: str | None
    kty: str  # "RSA" | "EC" | "OKP"
    alg: str | None  # the JWK's own "alg", if any
    crv: str | None
    key: Any  # a cryptography public key object


# RFC 7518 §3.1 / RFC 8037 §3.1: the key type (and curve) each JWS algorithm needs.
ALG_KEY: Mapping[str, tuple[str, str | None]] = MappingProxyType(
    {
        "RS256": ("RSA", None),
        "RS384": ("RSA", None),
        "RS512": ("RSA", None),
        "PS256": ("RSA", None),
        "PS384": ("RSA", None),
        "PS512": ("RSA", None),
        "ES256": ("EC", "P-256"),
        "ES384": ("EC", "P-384"),
        "ES512": ("EC", "P-521"),
        "EdDSA": ("OKP", "Ed25519"),
    }
)
# Whatever an issuer's config says, only these are ever accepted: never "none" or HS*
# (RFC 8725 §3.1, §3.2). Case-sensitive, so "None"/"NONE" are refused too.
SUPPORTED_ALGORITHMS: frozenset[str] = frozenset(SUPPORTED_UPSTREAM_ALGORITHMS) & frozenset(ALG_KEY)

HASHES: Mapping[str, hashes.HashAlgorithm] = MappingProxyType(
    {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}
)
# RFC 7518 §6.2.1.2: coordinate (and so r, s) sizes in bytes.
EC_CURVES: Mapping[str, tuple[ec.EllipticCurve, int]] = MappingProxyType(
    {"P-256": (ec.SECP256R1(), 32), "P-384": (ec.SECP384R1(), 48), "P-521": (ec.SECP521R1(), 66)}
)

# RFC 7518 §3.3: RSA keys of at least 2048 bits. The upper bounds are ours: issuers are
# configured by tenants, so a huge modulus or exponent would let one tenant burn everyone's
# CPU on each verify (Go's crypto/rsa caps e likewise).
_RSA_MIN_BITS = 2048
_RSA_MAX_BITS = 8192
_RSA_MAX_E = 2**32


def key_fits(key: PublicKey, alg: str) -> bool:
    """Whether ``alg`` may be used with ``key`` (RFC 8725 §3.1; RFC 7517 §4.4)."""
    kty, crv = ALG_KEY[alg]
    return key.kty == kty and (crv is None or key.crv == crv) and (key.alg is None or key.alg == alg)


_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def _b64url_lenient(value: Any) -> bytes:
    """Decode a JWK member: base64url (RFC 7518 §6); padding tolerated, other junk is not."""
    if not isinstance(value, str) or not value:
        raise ValueError("not a non-empty string")
    value = value.rstrip("=")
    if not _B64URL.fullmatch(value) or len(value) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def _load_rsa(jwk: Mapping[str, Any]) -> Any:
    n = int.from_bytes(_b64url_lenient(jwk["n"]), "big")
    e = int.from_bytes(_b64url_lenient(jwk["e"]), "big")
    if not _RSA_MIN_BITS <= n.bit_length() <= _RSA_MAX_BITS:
        raise ValueError("RSA modulus size out of range")
    if e > _RSA_MAX_E:
        raise ValueError("RSA exponent too large")
    return rsa.RSAPublicNumbers(e, n).public_key()  # checks e odd, 3 <= e < n


def _load_ec(jwk: Mapping[str, Any]) -> Any:
    curve, size = EC_CURVES[jwk["crv"]]
    x, y = _b64url_lenient(jwk["x"]), _b64url_lenient(jwk["y"])
    # RFC 7518 §6.2.1.2 wants the full coordinate size; shorter is tolerated (some issuers
    # drop leading zeros), longer is not. public_key() checks the point is on the curve.
    if len(x) > size or len(y) > size:
        raise ValueError("EC coordinate longer than the curve's size")
    return ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve).public_key()


def _load_okp(jwk: Mapping[str, Any]) -> Any:
    if jwk["crv"] != "Ed25519":  # RFC 8037: Ed448 is not supported here; X25519/X448 are not signature keys
        raise KeyError("crv")
    return ed25519.Ed25519PublicKey.from_public_bytes(_b64url_lenient(jwk["x"]))  # exactly 32 bytes


_LOADERS: Mapping[str, Callable[[Mapping[str, Any]], Any]] = MappingProxyType(
    {"RSA": _load_rsa, "EC": _load_ec, "OKP": _load_okp}
)


def _public_key_from_jwk(jwk: Any) -> PublicKey | None:
    """One JWK → PublicKey, or None when it is not a usable signature-verification key.

    Only the public members are read (never ``d``, ``p``, … ) and ``x5c`` is ignored.
    """
    if not isinstance(jwk, Mapping):
        return None
    kty, kid, alg, crv = jwk.get("kty"), jwk.get("kid"), jwk.get("alg"), jwk.get("crv")
    # RFC 7517 §4.2/§4.3: a key meant for encryption is not a signature key.
    if jwk.get("use", "sig") != "sig":
        return None
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        return None
    if not isinstance(kty, str) or kty not in _LOADERS:
        return None
    if kid is not None and not isinstance(kid, str):
        return None
    if crv is not None and not isinstance(crv, str):
        return None
    if alg is not None:
        # An "alg" we do not support (RSA-OAEP, HS256, …) or one that does not fit the key
        # type makes the key unusable for us.
        if not isinstance(alg, str) or alg not in ALG_KEY:
            return None
        want_kty, want_crv = ALG_KEY[alg]
        if kty != want_kty or (want_crv is not None and crv != want_crv):
            return None
    try:
        key = _LOADERS[kty](jwk)
    except (KeyError, TypeError, ValueError, binascii.Error):  # missing/malformed member, bad point, …
        return None
    return PublicKey(kid=kid, kty=kty, alg=alg, crv=crv if kty != "RSA" else None, key=key)


@dataclass(frozen=True)
class KeySet:
    keys: tuple[PublicKey, ...]
    # Indexes built once so a verification is a dict lookup (read-only; shared across threads).
    _by_kid: Mapping[str | None, tuple[PublicKey, ...]] = field(init=False, repr=False, compare=False)
    _by_alg: Mapping[str, tuple[PublicKey, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        keys = tuple(self.keys)
        by_kid: dict[str | None, list[PublicKey]] = {}
        for key in keys:
            by_kid.setdefault(key.kid, []).append(key)
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "_by_kid", MappingProxyType({k: tuple(v) for k, v in by_kid.items()}))
        object.__setattr__(
            self,
            "_by_alg",
            MappingProxyType({alg: tuple(k for k in keys if key_fits(k, alg)) for alg in ALG_KEY}),
        )

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, Any]) -> KeySet:
        """Parse a JWKS (RFC 7517 §5), skipping the keys we cannot or must not use."""
        if not isinstance(jwks, Mapping) or not isinstance(jwks.get("keys"), list):
            raise ValueError('a JWKS must be a JSON object with a "keys" array')
        return cls(keys=tuple(k for k in map(_public_key_from_jwk, jwks["keys"]) if k is not None))


def kids_of(document: Any) -> tuple[str, ...]:
    """The ``kid`` of every key a JWKS document lists, as shown to operators (unparsed)."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        return ()
    return tuple(str(k.get("kid", "(no kid)")) for k in document["keys"] if isinstance(k, Mapping))


# --- a static JWKS, as a tenant writes it into its configuration ------------------------------------

# RFC 7517 §4: the members every JWK may have; RFC 7518 §6.2.1 and §6.3.1, RFC 8037 §2: the public
# members of each key type. Nothing else is kept: a key set is stored on the issuer row, copied into
# every process and every revision, so an extra member would be a free, unbounded store.
_JWK_MEMBERS = ("kty", "use", "key_ops", "alg", "kid", "x5u", "x5c", "x5t", "x5t#S256")
_TYPE_MEMBERS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"RSA": ("n", "e"), "EC": ("crv", "x", "y"), "OKP": ("crv", "x")}
)
_LIST_MEMBERS = frozenset({"key_ops", "x5c"})  # arrays of strings; every other member is a string
# RFC 7518 §6.2.2, §6.3.2 and §6.4.1, RFC 8037 §2: private or secret key material, never configuration.
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
STATIC_JWKS_MAX_KEYS = 100  # far more than any issuer publishes at once
STATIC_JWKS_MAX_BYTES = 64 * 1024  # the kept key set as compact JSON: dozens of keys, certificates included


def _clean_member(name: str, value: Any, where: str) -> Any:
    if name in _LIST_MEMBERS:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ValueError(f"{where}.{name} must be an array of strings (RFC 7517 §4)")
        return list(value)
    if not isinstance(value, str):
        raise ValueError(f"{where}.{name} must be a string (RFC 7517 §4, RFC 7518 §6)")
    return value


def static_jwks_clean(document: Any) -> dict[str, Any]:
    """A static JWKS as it is stored: ``{"keys": [...]}`` with, in each key, only the members a
    JWK defines for its type (others are dropped). ``ValueError``, with the place, for what is
    not a JWKS, a key with private or secret material, a member of the wrong type, more than
    ``STATIC_JWKS_MAX_KEYS`` keys or more than ``STATIC_JWKS_MAX_BYTES`` kept."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError('a JWKS must be a JSON object with a "keys" array')
    keys = document["keys"]
    if len(keys) > STATIC_JWKS_MAX_KEYS:
        raise ValueError(f"the JWKS lists {len(keys)} keys; at most {STATIC_JWKS_MAX_KEYS} are accepted")
    cleaned = []
    for index, key in enumerate(keys):
        where = f"keys[{index}]"
        if not isinstance(key, Mapping):
            raise ValueError(f"{where} must be a JWK (a JSON object)")
        private = [name for name in _PRIVATE_MEMBERS if name in key]
        if private:
            raise ValueError(f"{where} holds private key material ({', '.join(private)}): give the public keys only")
        kty = key.get("kty")
        allowed = _JWK_MEMBERS + _TYPE_MEMBERS.get(kty, ()) if isinstance(kty, str) else _JWK_MEMBERS
        cleaned.append({name: _clean_member(name, key[name], where) for name in allowed if name in key})
    result = {"keys": cleaned}
    size = len(json.dumps(result, separators=(",", ":"), ensure_ascii=False).encode())
    if size > STATIC_JWKS_MAX_BYTES:
        raise ValueError(
            f"the JWKS is {size:,} bytes (its keys' members as JSON); at most {STATIC_JWKS_MAX_BYTES:,} are accepted"
        )
    return result
