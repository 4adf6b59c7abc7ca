"""The values the exchange passes between its steps (frozen: safe to share across threads).

IssuerSnapshot ─(jwt_parse)→ ParsedToken ─(jwt_verify)→ VerifiedToken
    ─(rules engine)→ Decision ─(minting)→ MintedToken
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .jwk import private_key_sign
from .limits import DEFAULT_ALGORITHMS, DEFAULT_LEEWAY, DEFAULT_MAX_TOKEN_AGE


@dataclass(frozen=True)
class IssuerConfig:
    """What verifies one upstream issuer's tokens (docs/verification.md#issuer-settings)."""

    issuer_id: str
    issuer: str  # the exact expected ``iss``
    audiences: tuple[str, ...]
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    leeway: int = DEFAULT_LEEWAY
    max_token_age: int = DEFAULT_MAX_TOKEN_AGE


@dataclass(frozen=True)
class IssuerSnapshot:
    """One upstream issuer of a tenant as the exchange reads it: its verification config, where
    its keys come from and the key set cached when the snapshot was taken (never an ORM row)."""

    pk: int
    tenant_id: int
    config: IssuerConfig
    replay_protection: bool = False
    static_jwks: Mapping[str, Any] | None = None
    jwks: Mapping[str, Any] | None = None  # the last good fetched set
    jwks_fetched_at: datetime | None = None
    jwks_expires_at: datetime | None = None
    # Its key sets once parsed ("static", "stored"), filled on first use: they live and die with
    # the snapshot, so a warm exchange never parses a JWKS however many issuers there are.
    parsed_keys: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def issuer_id(self) -> str:
        return self.config.issuer_id

    @property
    def issuer(self) -> str:
        return self.config.issuer


@dataclass(frozen=True)
class ParsedToken:
    header: Mapping[str, Any]
    claims: Mapping[str, Any]
    signing_input: bytes
    signature: bytes


@dataclass(frozen=True)
class VerifiedToken:
    issuer_id: str
    claims: Mapping[str, Any]
    header: Mapping[str, Any]
    kid: str | None
    alg: str


@dataclass(frozen=True)
class Decision:
    """What an allow rule decided to emit (docs/rules.md#the-emitted-token)."""

    rule_id: int | None
    rule_name: str
    subject: str
    audience: str
    lifetime: int
    session_tags: tuple[tuple[str, str], ...]
    transitive_tag_keys: tuple[str, ...]
    extra_claims: Mapping[str, Any]
    # The tags claim exactly as a mapper wrote it (docs/mapper.md#the-answer: its members, their order, an empty
    # transitive_tag_keys list), checked to say the same as session_tags/transitive_tag_keys.
    # None: rendered from those (a rule's token, docs/rules.md#session-tags).
    tags_claim: Mapping[str, Any] | None = None
    # The session's SourceIdentity (docs/rules.md#source-identity), checked; None: no such claim.
    source_identity: str | None = None


@dataclass(frozen=True)
class RuleTrace:
    """One rule's part in a decision, for the simulator."""

    rule_id: int | None
    rule_name: str
    applies: bool  # the token's issuer is one of the rule's issuers
    result: str  # "matched" | "not matched" | "error" | "skipped (other issuer)" | "not evaluated"
    error: str | None = None


@dataclass(frozen=True)
class SignerKey:
    """A key that signs: a local private key, or a ``remote_sign`` callable that returns the JWS
    signature of a signing input (AWS KMS, exchange.kms: its private key never leaves KMS, and
    ``private_key`` is None). ``sign`` is the one call either way (exchange.core.minting)."""

    kid: str
    algorithm: str  # "ES256" | "RS256"
    private_key: Any = None  # a cryptography private key object (backend "local")
    remote_sign: Callable[[bytes], bytes] | None = field(default=None, compare=False)
    signature_size: int = 0  # bytes of a remote signer's signatures (RS256: the modulus length)
    backend: str = "local"  # "local" | "aws-kms"

    def sign(self, signing_input: bytes) -> bytes:
        """The JWS signature of ``signing_input`` (RFC 7515 §5.1): ES256 as raw r||s (RFC 7518
        §3.4), RS256 as is. A remote signer may raise ``TemporarilyUnavailable``."""
        if self.remote_sign is not None:
            return self.remote_sign(signing_input)
        return private_key_sign(self.private_key, algorithm=self.algorithm, signing_input=signing_input)

    def __repr__(self) -> str:  # never show key material in logs or tracebacks
        return f"SignerKey(kid={self.kid!r}, algorithm={self.algorithm!r}, backend={self.backend!r})"


@dataclass(frozen=True)
class MintedToken:
    token: str
    jti: str
    kid: str
    subject: str
    audience: str
    issued_at: int
    expires_at: int
    claims: Mapping[str, Any]  # the full payload
