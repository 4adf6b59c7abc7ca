"""The rule simulator: what would this tenant answer to this token — without answering.

Runs the exchange's own steps on a fresh snapshot of the tenant (``runtime.runtime_build``):
``parse_compact`` → ``services.issuer_select`` → ``services.token_verify`` (the issuer's real
keys, with the unknown-``kid`` refetch) → ``rules.explain`` (``decide`` with a trace) →
``minting.build_payload``. So it reaches the endpoints' decision for the same input — a token
with a trailing newline is refused here too. It signs nothing, writes no audit row, counts no
rate limit and uses up no one-time token.

Given claims instead of a token it skips verification and says so: the result is marked
unverified and shows what the rules make of those claims, nothing more.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tenants.models import Tenant

from . import conf
from .errors import AccessDenied, ExchangeError, InvalidRequest, NotFound
from .minting import build_payload
from .models import Issuer
from .rules import Decision, RuleTrace, explain
from .runtime import TenantRuntime, runtime_build
from .services import issuer_select, token_verify
from .verification import parse_compact

__all__ = ["Simulation", "simulate_claims", "simulate_token"]


@dataclass(frozen=True)
class Simulation:
    verified: bool  # False: claims were given, not a token
    issuer_id: str | None
    claims: Mapping[str, Any] | None  # the (verified or given) upstream claims
    trace: list[RuleTrace] = field(default_factory=list)
    decision: Decision | None = None
    error: ExchangeError | None = None
    stage: str = "rules"  # where it stopped: "token", "issuer", "verification", "rules"
    emitted: dict[str, Any] | None = None  # the would-be payload without iat/nbf/exp/jti
    lifetime: int | None = None
    notes: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.decision is not None and self.error is None

    @property
    def session_tags(self) -> tuple[tuple[str, str], ...]:
        return self.decision.session_tags if self.decision is not None else ()


def _notes(tenant: Tenant, issuer: Issuer | None) -> list[str]:
    notes = []
    if not tenant.enabled:
        notes.append("The tenant is disabled: a real exchange would answer 404 not_found.")
    if issuer is not None and not issuer.enabled:
        notes.append("The issuer is disabled: a real exchange would not accept its tokens.")
    return notes


def _decide(runtime: TenantRuntime, issuer_id: str, claims: Mapping[str, Any], *, audience: str | None,
            verified: bool, notes: list[str]) -> Simulation:
    if runtime.rules_error:
        return Simulation(
            verified, issuer_id, claims, error=AccessDenied("No rule allows this exchange.", reason=runtime.rules_error),
            stage="rules", notes=(*notes, "A rule does not compile, so the tenant denies every exchange."),
        )
    trace, decision, error = explain(
        runtime.rules,
        issuer_id=issuer_id,
        claims=claims,
        requested_audience=audience or None,
        default_audience=runtime.default_audience,
        max_lifetime=runtime.max_token_lifetime,
    )
    emitted = build_payload(decision=decision, issuer=runtime.issuer_url) if decision is not None else None
    return Simulation(
        verified, issuer_id, claims, trace=trace, decision=decision, error=error, stage="rules",
        emitted=emitted, lifetime=decision.lifetime if decision is not None else None, notes=tuple(notes),
    )


def simulate_token(
    *, tenant: Tenant, token: str | bytes, issuer: Issuer | None = None, audience: str | None = None,
    now: float | None = None,
) -> Simulation:
    """Verify ``token`` for real (the issuer's keys, its audiences, algorithms and clock rules)
    and run the tenant's rules over its claims, exactly as the endpoints would."""
    now = time.time() if now is None else now
    if issuer is not None and issuer.tenant_id != tenant.pk:
        return Simulation(True, None, None, error=NotFound("Unknown issuer."), stage="issuer")
    runtime = runtime_build(tenant=tenant, now=datetime.fromtimestamp(now, UTC))
    try:
        parsed = parse_compact(token, max_bytes=conf.max_token_bytes())
    except ExchangeError as exc:
        return Simulation(True, None, None, error=exc, stage="token")
    try:
        chosen = issuer_select(runtime, issuer_id=issuer.issuer_id if issuer is not None else None, parsed=parsed)
    except ExchangeError as exc:
        return Simulation(True, None, dict(parsed.claims), error=exc, stage="issuer", notes=tuple(_notes(tenant, issuer)))
    notes = _notes(tenant, chosen)
    try:
        verified = token_verify(runtime, chosen, parsed, now=now)
    except ExchangeError as exc:
        return Simulation(True, chosen.issuer_id, dict(parsed.claims), error=exc, stage="verification", notes=tuple(notes))
    return _decide(runtime, chosen.issuer_id, verified.claims, audience=audience, verified=True, notes=notes)


def parse_claims_json(text: str) -> dict[str, Any]:
    """A JSON object of claims; ``InvalidRequest`` with a readable message otherwise."""

    def no_constants(name: str) -> float:
        raise ValueError(f"{name} is not JSON")

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise ValueError(f"the member {key!r} appears twice")
            result[key] = value
        return result

    try:
        claims = json.loads(text, parse_constant=no_constants, object_pairs_hook=unique)
    except ValueError as exc:
        raise InvalidRequest(f"The claims are not valid JSON: {exc}") from None
    if not isinstance(claims, dict):
        raise InvalidRequest("The claims must be a JSON object.")
    if any(isinstance(v, float) and not math.isfinite(v) for v in claims.values()):
        raise InvalidRequest("The claims must be finite numbers.")
    return claims


def simulate_claims(
    *, tenant: Tenant, issuer: Issuer, claims: Mapping[str, Any], audience: str | None = None
) -> Simulation:
    """Run the tenant's rules over ``claims`` as if ``issuer`` had signed them. Unverified:
    signature, ``iss``, ``aud`` and times are not checked."""
    if issuer.tenant_id != tenant.pk:
        return Simulation(False, None, claims, error=NotFound("Unknown issuer."), stage="issuer")
    notes = ["Unverified simulation: the claims were typed in, not taken from a signed token."]
    notes += _notes(tenant, issuer)
    runtime = runtime_build(tenant=tenant, now=datetime.now(UTC))
    return _decide(runtime, issuer.issuer_id, claims, audience=audience, verified=False, notes=notes)
