"""Hand-made JOSE for attack tests: PyJWT refuses to build most of these tokens (alg none
with a signature, HMAC keyed with a public key, DER ECDSA signatures, crit headers…)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def segment(value: Any) -> str:
    """A JSON value (compact) or raw bytes/str, base64url-encoded without padding."""
    if isinstance(value, bytes):
        return b64u(value)
    if isinstance(value, str):
        return b64u(value.encode("utf-8"))
    return b64u(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def signing_input(header: Any, claims: Any) -> str:
    return f"{segment(header)}.{segment(claims)}"


def rs256(private_key: Any, data: str, *, alg: str = "RS256") -> bytes:
    digest = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}[alg[2:]]
    if alg.startswith("PS"):
        return private_key.sign(
            data.encode(), padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size), digest
        )
    return private_key.sign(data.encode(), padding.PKCS1v15(), digest)


def es256_der(private_key: Any, data: str) -> bytes:
    return private_key.sign(data.encode(), ec.ECDSA(hashes.SHA256()))


def es256(private_key: Any, data: str) -> bytes:
    """RFC 7518 §3.4: R || S, 32 bytes each."""
    r, s = decode_dss_signature(es256_der(private_key, data))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def hs256(secret: bytes, data: str) -> bytes:
    return hmac.new(secret, data.encode(), hashlib.sha256).digest()


def compact(header: Any, claims: Any, signature: bytes | str = b"") -> str:
    sig = signature if isinstance(signature, str) else b64u(signature)
    return f"{signing_input(header, claims)}.{sig}"


def signed(header: dict, claims: Any, *, rsa_key: Any = None, ec_key: Any = None) -> str:
    """A token whose signature is valid for ``header["alg"]`` with the given key."""
    data = signing_input(header, claims)
    alg = header["alg"]
    if alg.startswith(("RS", "PS")):
        return f"{data}.{b64u(rs256(rsa_key, data, alg=alg))}"
    if alg == "ES256":
        return f"{data}.{b64u(es256(ec_key, data))}"
    raise ValueError(alg)
