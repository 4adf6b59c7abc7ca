"""Upstream signing keys for the upstream tests: EC public JWKs with the kids k1, k2, k3."""

from __future__ import annotations

import jwt
from cryptography.hazmat.primitives.asymmetric import ec


def ec_jwk(kid: str) -> dict:
    jwk = jwt.algorithms.ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key(), as_dict=True)
    return {**jwk, "kid": kid, "alg": "ES256", "use": "sig"}


K1, K2, K3 = ec_jwk("k1"), ec_jwk("k2"), ec_jwk("k3")
