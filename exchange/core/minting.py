"""Decision + signing key → signed JWT (docs/rules.md#the-emitted-token).

Pure: no ORM, no network, no clock (``now`` is a parameter, docs/design/layout.md#time-is-a-parameter).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .aws import (
    AWS_SOURCE_IDENTITY_CLAIM,
    AWS_TAGS_CLAIM,
    MAX_WEB_IDENTITY_TOKEN_LENGTH,
    is_aws_claim,
)
from .values import Decision, MintedToken, SignerKey

__all__ = [
    "RESERVED_CLAIMS",
    "TokenTooLong",
    "payload_build",
    "encoded_length",
    "token_length_bound",
    "jwt_mint",
    "jwt_sign",
    "signature_bytes",
    "token_length",
]

# The largest issuer URL, audience and signature a token of ours can carry, for the bound a rule
# is checked against when saved: a public URL of 190 characters plus /t/ and a 63-character slug;
# the 255-character audience field; an RSA-4096 signature (ES256's is 64 bytes).
_LARGEST_ISSUER = 256
_LARGEST_AUDIENCE = 255
_LARGEST_SIGNATURE = 512
# And the smallest, for what is certain about a rule's tokens: http://a/t/a, ES256's 64 bytes.
_SMALLEST_ISSUER = 12
_SMALLEST_SIGNATURE = 64


class TokenTooLong(ValueError):
    """The token would be longer than AWS STS accepts; ``length`` says by how much."""

    def __init__(self, length: int) -> None:
        self.length = length
        super().__init__(
            f"the token would be {length:,} characters long; AWS STS accepts at most {MAX_WEB_IDENTITY_TOKEN_LENGTH:,}"
        )


# Claims the emitted token always carries and a rule cannot set (docs/rules.md#the-emitted-token): iss/exp/iat/nbf/jti
# are ours (RFC 7519 §4.1); sub and aud come from the rule's ``subject``/``audience``; the
# AWS tags claim is rendered from ``session_tags``/``transitive_tag_keys``, the source identity
# claim from ``source_identity``. Every other claim of AWS's namespace is refused as well
# (``aws.is_aws_claim``): only a field that checks it may emit one.
RESERVED_CLAIMS = frozenset(
    {"iss", "sub", "aud", "exp", "nbf", "iat", "jti", AWS_TAGS_CLAIM, AWS_SOURCE_IDENTITY_CLAIM}
)


def _check_key(signer: SignerKey) -> None:
    # RFC 7518 §3.4: ES256 is ECDSA on P-256 with SHA-256; §3.3: RS256 is RSASSA-PKCS1-v1_5
    # with SHA-256 and a key of at least 2048 bits.
    key = signer.private_key
    if signer.remote_sign is not None:  # the key lives elsewhere (AWS KMS): its public part was checked
        if signer.algorithm not in ("ES256", "RS256"):
            raise ValueError(f"Signing key {signer.kid!r}: unsupported algorithm {signer.algorithm!r}.")
        if signer.algorithm == "RS256" and signer.signature_size < 256:
            raise ValueError(f"Signing key {signer.kid!r}: RS256 needs an RSA key of at least 2048 bits.")
    elif signer.algorithm == "ES256":
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


def payload_build(
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
    # Rules cannot name reserved claims (rules.rule_spec_validate); skip them here as well
    # so no Decision, however built, can override iss/sub/aud/exp/… or the tags claim.
    for name, value in decision.extra_claims.items():
        if name not in RESERVED_CLAIMS and not is_aws_claim(name):
            payload[name] = value
    if decision.source_identity is not None:
        payload[AWS_SOURCE_IDENTITY_CLAIM] = decision.source_identity
    if decision.tags_claim is not None:  # a mapper's, as it wrote it (docs/mapper.md#the-answer); a copy, never shared
        payload[AWS_TAGS_CLAIM] = json.loads(json.dumps(decision.tags_claim))
    elif decision.session_tags:
        payload[AWS_TAGS_CLAIM] = _aws_tags_claim(decision)
    return payload


def _b64_length(size: int) -> int:
    return (4 * size + 2) // 3  # base64url without padding


def encoded_length(payload: dict[str, Any], *, header: dict[str, Any], signature_size: int) -> int:
    """The length of the compact JWS PyJWT makes of ``payload``: its JSON encodes them the same
    way (compact separators, ASCII escapes), so this is exact, without signing anything."""
    encoded_header = json.dumps(header, separators=(",", ":")).encode()
    encoded_payload = json.dumps(payload, separators=(",", ":")).encode()
    return _b64_length(len(encoded_header)) + _b64_length(len(encoded_payload)) + _b64_length(signature_size) + 2


def signature_bytes(signer: SignerKey) -> int:
    """ES256: r||s, 64 bytes (RFC 7518 §3.4); RS256: the modulus length (a KMS RSA_2048 key: 256)."""
    if signer.algorithm == "ES256":
        return 64
    if signer.private_key is None:
        return signer.signature_size
    return (signer.private_key.key_size + 7) // 8


def _header(signer: SignerKey) -> dict[str, Any]:
    return {"alg": signer.algorithm, "kid": signer.kid, "typ": "JWT"}


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def jwt_sign(payload: Mapping[str, Any], *, signer: SignerKey, headers: Mapping[str, Any] | None = None) -> str:
    """The compact JWS (RFC 7515 §7.1) of ``payload`` signed by ``signer``, local or AWS KMS: the one
    signing step of every token jwtex makes. Header ``alg``, ``kid`` and ``typ: JWT`` (RFC 7519
    §5.1) plus ``headers`` (which may not change ``alg`` or ``kid``), members sorted, JSON compact
    and ASCII-escaped: byte for byte what PyJWT's ``jwt.encode`` makes, which ``encoded_length``
    counts. A remote signer's ``TemporarilyUnavailable`` passes through (nothing is signed)."""
    _check_key(signer)
    header = _header(signer)
    for name, value in (headers or {}).items():
        if name in ("alg", "kid") and value != header[name]:
            raise ValueError(f"The {name!r} header is the signing key's own; it cannot be {value!r}.")
        header[name] = value
    signing_input = b".".join(
        [
            _b64url(json.dumps(header, separators=(",", ":"), sort_keys=True).encode()),
            _b64url(json.dumps(payload, separators=(",", ":")).encode()),
        ]
    )
    signature = signer.sign(signing_input)
    if len(signature) != signature_bytes(signer):  # a wrong length would make encoded_length lie
        raise ValueError(
            f"Signing key {signer.kid!r} made a {len(signature)}-byte signature, not {signature_bytes(signer)}."
        )
    return (signing_input + b"." + _b64url(signature)).decode("ascii")


def token_length_bound(
    *,
    tags: Sequence[tuple[str, str]],
    transitive_tag_keys: Sequence[str],
    claim_names: Sequence[str],
    audiences: Sequence[str],
    subject: str,
    largest: bool,
    source_identity: str | None = None,
) -> int:
    """The length of a token with these tags (key, value) and this subject: with ``largest``, the
    issuer, audience and signature at the largest jwtex produces, extra claims with empty strings
    (their size is known only at exchange time); without, at the smallest (extra claims ``0``).
    ``audiences``: the rule's audience ("" for the tenant's default), then those it allows."""
    audience_choices = [a for a in audiences if a]
    if largest:
        audience = max(audience_choices or ["a" * _LARGEST_AUDIENCE], key=len)
    else:  # the shortest a caller may get (the tenant's default may be one character)
        own = audiences[0] if audiences and audiences[0] else "a"
        audience = min([own, *(a for a in audiences[1:] if a)], key=len)
    decision = Decision(
        rule_id=None,
        rule_name="",
        subject=subject,
        audience=audience,
        lifetime=3600,
        session_tags=tuple(tags),
        transitive_tag_keys=tuple(transitive_tag_keys),
        extra_claims={name: "" if largest else 0 for name in claim_names},
        source_identity=source_identity,
    )
    issuer = "i" * (_LARGEST_ISSUER if largest else _SMALLEST_ISSUER)
    payload = payload_build(decision=decision, issuer=issuer, issued_at=9_999_999_999, jti="j" * 32)
    header = {"alg": "RS256", "kid": "k" * 43, "typ": "JWT"}
    return encoded_length(payload, header=header, signature_size=_LARGEST_SIGNATURE if largest else _SMALLEST_SIGNATURE)


def token_length(*, decision: Decision, issuer: str, signer: SignerKey, now: int) -> int:
    """How long the token ``jwt_mint`` would make is (its ``jti`` is always 32 characters),
    without signing: what the simulator shows."""
    payload = payload_build(decision=decision, issuer=issuer, issued_at=int(now), jti="0" * 32)
    return encoded_length(payload, header=_header(signer), signature_size=signature_bytes(signer))


def jwt_mint(*, decision: Decision, issuer: str, signer: SignerKey, now: int, jti: str | None = None) -> MintedToken:
    """Sign the token ``decision`` describes with ``signer``, issued by ``issuer`` at ``now``;
    ``TokenTooLong`` (before signing) for a token AWS STS would refuse."""
    _check_key(signer)
    if decision.lifetime <= 0:
        raise ValueError(f"A token needs a positive lifetime, not {decision.lifetime}.")
    issued_at = int(now)
    token_id = jti or uuid.uuid4().hex
    payload = payload_build(decision=decision, issuer=issuer, issued_at=issued_at, jti=token_id)
    length = encoded_length(payload, header=_header(signer), signature_size=signature_bytes(signer))
    if length > MAX_WEB_IDENTITY_TOKEN_LENGTH:
        raise TokenTooLong(length)

    # ES256 signatures as raw r||s (RFC 7518 §3.4), not DER; header alg, kid and typ (RFC 7519 §5.1).
    token = jwt_sign(payload, signer=signer)
    if len(token) > MAX_WEB_IDENTITY_TOKEN_LENGTH:  # encoded_length is exact (tested); this is the last word
        raise TokenTooLong(len(token))
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
