"""Signing key material: generation, public JWKs with RFC 7638 key ids, encryption at rest. Pure.

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
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

__all__ = [
    "KeyDecryptionError",
    "decrypt_private_key",
    "encrypt_private_key",
    "generate_private_key",
    "jwk_thumbprint",
    "key_encryption",
    "public_jwk",
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


def public_jwk(private_key: Any, *, algorithm: str) -> dict[str, Any]:
    public = private_key.public_key()
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


def generate_private_key(algorithm: str) -> Any:
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


def encrypt_private_key(private_key: Any, *, fernet: MultiFernet) -> bytes:
    der = private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return fernet.encrypt(der)


def decrypt_private_key(blob: bytes, *, fernet: MultiFernet) -> Any:
    try:
        der = fernet.decrypt(bytes(blob))
    except InvalidToken as exc:
        raise KeyDecryptionError("no configured key-encryption key decrypts this signing key") from exc
    return serialization.load_der_private_key(der, password=None)
