"""Signing key material: generation, public JWKs with RFC 7638 key ids, encryption at rest, and
the JWS form of signatures (ECDSA's DER ↔ raw r||s). Pure.

Private keys exist in clear only in memory. At rest they are Fernet tokens (AES-128-CBC +
HMAC-SHA256) under the operator's key-encryption secrets: the first encrypts, every one
decrypts, so a new first secret can be added and keys re-encrypted without downtime.
"""

from __future__ import annotations

import base64
import hashlib
import json
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

__all__ = [
    "KeyDecryptionError",
    "private_key_decrypt",
    "ecdsa_der_to_raw",
    "ecdsa_raw_to_der",
    "private_key_encrypt",
    "private_key_generate",
    "jwk_signature_size",
    "jwk_thumbprint",
    "key_encryption",
    "public_jwk",
    "public_jwk_from_spki",
    "private_key_sign",
]

RSA_KEY_BITS = 2048


class KeyDecryptionError(Exception):
    """No configured key-encryption key opens this signing key."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_uint(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 §3: SHA-256 over the required members, lexicographic order, no whitespace."""
    required = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}[jwk["kty"]]
    canonical = json.dumps({name: jwk[name] for name in required}, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def public_jwk(key: Any, *, algorithm: str) -> dict[str, Any]:
    """The public JWK of ``key`` (a private key, or the public key itself), with its RFC 7638 kid."""
    public = key.public_key() if isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)) else key
    _check_public_key(public, algorithm=algorithm)
    if isinstance(public, ec.EllipticCurvePublicKey):
        numbers = public.public_numbers()
        jwk: dict[str, Any] = {
            "kty": "EC",
            "crv": "P-256",
            "x": _b64url(numbers.x.to_bytes(32, "big")),
            "y": _b64url(numbers.y.to_bytes(32, "big")),
        }
    else:
        numbers = public.public_numbers()
        jwk = {"kty": "RSA", "n": _b64url_uint(numbers.n), "e": _b64url_uint(numbers.e)}
    jwk.update({"kid": jwk_thumbprint(jwk), "alg": algorithm, "use": "sig"})
    return jwk


def _check_public_key(public: Any, *, algorithm: str) -> None:
    # RFC 7518 §3.4: ES256 is ECDSA on P-256; §3.3: RS256 needs an RSA key of at least 2048 bits.
    if algorithm == "ES256":
        if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(public.curve, ec.SECP256R1):
            raise ValueError("ES256 needs a P-256 key")
    elif algorithm == "RS256":
        if not isinstance(public, rsa.RSAPublicKey) or public.key_size < RSA_KEY_BITS:
            raise ValueError(f"RS256 needs an RSA key of at least {RSA_KEY_BITS} bits")
    else:
        raise ValueError(f"unsupported signing algorithm {algorithm!r}")


def public_jwk_from_spki(der: bytes, *, algorithm: str) -> dict[str, Any]:
    """The JWK of a DER SubjectPublicKeyInfo (RFC 5280 §4.1), such as AWS KMS's GetPublicKey answers."""
    return public_jwk(serialization.load_der_public_key(bytes(der)), algorithm=algorithm)


def jwk_signature_size(jwk: dict[str, Any]) -> int:
    """Bytes of a signature by this key: ES256's r||s is 64 (RFC 7518 §3.4), RS256's the modulus length."""
    if jwk["kty"] == "EC":
        return 64
    n = jwk["n"]
    return len(base64.urlsafe_b64decode(n + "=" * (-len(n) % 4)).lstrip(b"\0"))


# --- signatures in their JWS form ---------------------------------------------------------------

_P256_SIZE = 32  # bytes of r and of s on P-256 (RFC 7518 §3.4: "32 octets" each)


def ecdsa_der_to_raw(der: bytes, *, size: int = _P256_SIZE) -> bytes:
    """RFC 7518 §3.4: a JWS ECDSA signature is r and s as unsigned big-endian integers of ``size``
    octets each, concatenated; cryptography and AWS KMS give the DER SEQUENCE of two INTEGERs
    (RFC 3279 §2.2.3), where an integer has no leading zeros and a 0x00 before a high bit."""
    r, s = decode_dss_signature(bytes(der))  # strict DER: trailing bytes and long forms are refused
    limit = 1 << (8 * size)
    if not (0 < r < limit and 0 < s < limit):
        raise ValueError(f"not an ECDSA signature of {size}-octet integers")
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def ecdsa_raw_to_der(raw: bytes, *, size: int = _P256_SIZE) -> bytes:
    """The inverse of ``ecdsa_der_to_raw`` (what a DER-speaking verifier needs)."""
    if len(raw) != 2 * size:
        raise ValueError(f"a raw ECDSA signature is {2 * size} octets, not {len(raw)}")
    return encode_dss_signature(int.from_bytes(raw[:size], "big"), int.from_bytes(raw[size:], "big"))


def private_key_sign(private_key: Any, *, algorithm: str, signing_input: bytes) -> bytes:
    """The JWS signature by a local key: ES256 → raw r||s (RFC 7518 §3.4), RS256 → RSASSA-PKCS1-v1_5
    with SHA-256 (§3.3), as PyJWT makes them."""
    if algorithm == "ES256":
        return ecdsa_der_to_raw(private_key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    if algorithm == "RS256":
        return private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    raise ValueError(f"unsupported signing algorithm {algorithm!r}")


def private_key_generate(algorithm: str) -> Any:
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    raise ValueError(f"unsupported signing algorithm {algorithm!r}")


def _fernet_for(secret: str) -> Fernet:
    # Any operator-chosen string works: the Fernet key is derived from it, domain-separated.
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"jwtex-kek-v1\x00" + secret.encode("utf-8")).digest()))


@lru_cache(maxsize=4)
def key_encryption(secrets: tuple[str, ...]) -> MultiFernet:
    """The Fernet set for these secrets (the first encrypts, all decrypt)."""
    if not secrets:
        raise KeyDecryptionError("JWTEX_KEY_ENCRYPTION_KEYS is empty")
    return MultiFernet([_fernet_for(s) for s in secrets])


def private_key_encrypt(private_key: Any, *, fernet: MultiFernet) -> bytes:
    der = private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return fernet.encrypt(der)


def private_key_decrypt(blob: bytes, *, fernet: MultiFernet) -> Any:
    try:
        der = fernet.decrypt(bytes(blob))
    except InvalidToken as exc:
        raise KeyDecryptionError("no configured key-encryption key decrypts this signing key") from exc
    return serialization.load_der_private_key(der, password=None)
