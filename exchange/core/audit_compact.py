"""What an audit record stores of an issued token, and how the whole is read back
(docs/scale.md#the-audit-table).

An allowed record has columns for the token's ``sub``, ``aud``, ``exp`` and ``jti``; its claims
repeated them in every row, with ``nbf`` equal to ``iat`` and the AWS tags claim in its verbose
shape (``{"principal_tags": {"k": ["v"]}}``). ``claims_compact`` keeps only what the columns do
not hold; ``claims_full`` puts the rest back, so the record reads exactly as before. A claim set
that does not have the shape jwtex mints (``compactable`` is false) is stored whole, as it is.

And the issued subject: most rules emit the upstream ``sub`` unchanged, so an allowed record
stores an empty ``issued_sub`` when it equals ``upstream_sub`` (``issued_subject`` reads it back).

Pure: values in, values out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .aws import AWS_TAGS_CLAIM

__all__ = ["claims_compact", "claims_full", "compactable", "issued_sub_stored", "issued_subject"]

# The claims every minted token carries first (exchange.core.minting.payload_build), in its order.
_LEADING = ("iss", "sub", "aud", "iat", "nbf", "exp", "jti")


def _tags_compact(value: Any) -> list | None:
    """``{"principal_tags": {k: [v]}, "transitive_tag_keys": [t…]}`` as ``[{k: v}, [t…]]``; None
    when the value is not in exactly that shape."""
    if not isinstance(value, dict) or not set(value) <= {"principal_tags", "transitive_tag_keys"}:
        return None
    tags, transitive = value.get("principal_tags"), value.get("transitive_tag_keys")
    if not isinstance(tags, dict) or "principal_tags" not in value:
        return None
    flat = {}
    for key, values in tags.items():
        if not (isinstance(values, list) and len(values) == 1 and isinstance(values[0], str)):
            return None
        flat[key] = values[0]
    if "transitive_tag_keys" not in value:
        return [flat]
    if not (isinstance(transitive, list) and transitive and all(isinstance(t, str) for t in transitive)):
        return None
    return [flat, list(transitive)]


def _tags_full(value: list) -> dict[str, Any]:
    claim: dict[str, Any] = {"principal_tags": {key: [tag] for key, tag in value[0].items()}}
    if len(value) > 1:
        claim["transitive_tag_keys"] = list(value[1])
    return claim


def compactable(claims: Mapping[str, Any], *, subject: str, audience: str, expires_at: int | None, jti: str) -> bool:
    """True when the columns hold ``sub``, ``aud``, ``exp`` and ``jti`` exactly, ``nbf`` is ``iat``
    and the tags claim (if any) has the shape jwtex mints."""
    if not all(name in claims for name in _LEADING):
        return False
    exp = claims["exp"]
    return (
        claims["sub"] == subject
        and claims["aud"] == audience
        and type(exp) is int
        and exp == expires_at
        and claims["jti"] == jti
        and claims["nbf"] == claims["iat"]
        and type(claims["nbf"]) is type(claims["iat"])
        and (AWS_TAGS_CLAIM not in claims or _tags_compact(claims[AWS_TAGS_CLAIM]) is not None)
    )


def claims_compact(claims: Mapping[str, Any]) -> dict[str, Any]:
    """The claims without what the columns hold (only for ``compactable`` claims)."""
    compact: dict[str, Any] = {}
    for name, value in claims.items():
        if name in ("sub", "aud", "nbf", "exp", "jti"):
            continue
        compact[name] = _tags_compact(value) if name == AWS_TAGS_CLAIM else value
    return compact


def claims_full(
    compact: Mapping[str, Any], *, subject: str, audience: str, expires_at: int, jti: str
) -> dict[str, Any]:
    """The claims ``claims_compact`` was given, from what it kept and the record's columns."""
    claims: dict[str, Any] = {
        "iss": compact["iss"],
        "sub": subject,
        "aud": audience,
        "iat": compact["iat"],
        "nbf": compact["iat"],
        "exp": expires_at,
        "jti": jti,
    }
    for name, value in compact.items():
        if name not in claims:
            claims[name] = _tags_full(value) if name == AWS_TAGS_CLAIM else value
    return claims


def issued_sub_stored(*, decision: str, issued_sub: str, upstream_sub: str) -> str:
    """What an audit record stores as ``issued_sub``: empty for an allowed record whose issued
    subject is the upstream one."""
    return "" if decision == "allowed" and issued_sub == upstream_sub else issued_sub


def issued_subject(*, decision: str, stored: str, upstream_sub: str) -> str:
    return stored or (upstream_sub if decision == "allowed" else "")
