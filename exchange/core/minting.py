"""Decision + signing key → signed JWT (SPEC §5, "the emitted token").

Pure: no ORM, no network, no clock (``now`` is a parameter, CONVENTIONS §7).
"""

from __future__ import annotations

import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .aws import AWS_TAGS_CLAIM
from .values import Decision, MintedToken, SignerKey

__all__ = ["RESERVED_CLAIMS", "build_payload", "mint_token"]

# Claims the emitted token always carries and a rule cannot set (SPEC §5): iss/exp/iat/nbf/jti
# are ours (RFC 7519 §4.1); sub and aud come from the rule's ``subject``/``audience``; the
# AWS tags claim is rendered from ``session_tags``/``transitive_tag_keys``.
RESERVED_CLAIMS = frozenset({"iss", "sub", "aud", "exp", "nbf", "iat", "jti", AWS_TAGS_CLAIM})


def _check_key(signer: SignerKey) -> None:
    # RFC 7518 §3.4: ES256 is ECDSA on P-256 with SHA-256; §3.3: RS256 is RSASSA-PKCS1-v1_5
    # with SHA-256 and a key of at least 2048 bits.
    key = signer.private_key
    if signer.algorithm == "ES256":
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"Signing key {signer.kid!r}: ES256 needs a P-256 private key.")
    elif signer.algorithm == "RS256":
        if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 2048:
            raise ValueError(f"Signing key {signer.kid!r}: RS256 needs an RSA private key of at least 2048 bits.")
    else:
        raise ValueError(f"Signing key {signer.kid!r}: unsupported algorithm {signer.algorithm!r}.")


def _aws_tags_claim(decision: Decision) -> dict[str, Any]:
    # IAM User Guide, "Pass session tags using AssumeRoleWithWebIdentity": the tags live
    # under the "https://aws.amazon.com/tags" claim, each value a one-element list.
    claim: dict[str, Any] = {"principal_tags": {key: [value] for key, value in decision.session_tags}}
    if decision.transitive_tag_keys:  # AWS accepts the member absent; emit it only when it says something
        claim["transitive_tag_keys"] = list(decision.transitive_tag_keys)
    return claim


def build_payload(
    *, decision: Decision, issuer: str, issued_at: int | None = None, jti: str | None = None
) -> dict[str, Any]:
    """The claims of the token ``decision`` describes. Without ``issued_at`` the per-token claims
    (``iat``, ``nbf``, ``exp``, ``jti``) are left out: that is what the simulator shows."""
    payload: dict[str, Any] = {
        "iss": issuer,
        "sub": decision.subject,
        "aud": decision.audience,  # a single string: what AWS STS and most relying parties expect
    }
    if issued_at is not None:
        payload.update(iat=issued_at, nbf=issued_at, exp=issued_at + int(decision.lifetime), jti=jti)
    # Rules cannot name reserved claims (rules.validate_rule_spec); skip them here as well
    # so no Decision, however built, can override iss/sub/aud/exp/… or the tags claim.
    for name, value in decision.extra_claims.items():
        if name not in RESERVED_CLAIMS:
            payload[name] = value
    if decision.session_tags:
        payload[AWS_TAGS_CLAIM] = _aws_tags_claim(decision)
    return payload


def mint_token(*, decision: Decision, issuer: str, signer: SignerKey, now: int, jti: str | None = None) -> MintedToken:
    """Sign the token ``decision`` describes with ``signer``, issued by ``issuer`` at ``now``."""
    _check_key(signer)
    if decision.lifetime <= 0:
        raise ValueError(f"A token needs a positive lifetime, not {decision.lifetime}.")
    issued_at = int(now)
    token_id = jti or uuid.uuid4().hex
    payload = build_payload(decision=decision, issuer=issuer, issued_at=issued_at, jti=token_id)

    # PyJWT writes ES256 signatures as raw r||s (RFC 7518 §3.4), not DER. It adds "alg";
    # we add "kid" and "typ" (RFC 7519 §5.1).
    token = jwt.encode(payload, signer.private_key, algorithm=signer.algorithm, headers={"kid": signer.kid, "typ": "JWT"})
    return MintedToken(
        token=token,
        jti=token_id,
        kid=signer.kid,
        subject=decision.subject,
        audience=decision.audience,
        issued_at=issued_at,
        expires_at=payload["exp"],
        claims=payload,
    )
