"""The rule simulator: what would this tenant answer to this token — without answering.

Runs the same steps as ``services.exchange_token`` up to the mint (parse → pick the issuer →
verify against the issuer's real keys → ``rules.explain`` over the tenant's compiled rules)
and renders the payload ``minting.mint_token`` would sign, minus the per-token ``iat``,
``nbf``, ``exp`` and ``jti``. It signs nothing, writes no audit row and counts no rate limit.

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
from .errors import ExchangeError, InvalidRequest, InvalidToken, NotFound, UnknownKeyId
from .models import Issuer
from .rules import AWS_TAGS_CLAIM, RESERVED_CLAIMS, Decision, RuleTrace, explain
from .runtime import issuer_config, tenant_rules_compile
from .upstream import issuer_keys_get, issuer_keys_refetch_for_unknown_kid
from .verification import parse_compact, verify_token

__all__ = ["Simulation", "emitted_payload", "simulate_claims", "simulate_token"]

# Claims of the emitted token that depend on the moment of issue; the simulator leaves them out.
PER_TOKEN_CLAIMS = ("iat", "nbf", "exp", "jti")


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


def emitted_payload(*, decision: Decision, issuer: str) -> dict[str, Any]:
    """The payload ``mint_token`` signs for ``decision``, without ``iat``/``nbf``/``exp``/``jti``.

    Mirrors ``minting.mint_token`` step by step (tests compare the two on real mints)."""
    payload: dict[str, Any] = {"iss": issuer, "sub": decision.subject, "aud": decision.audience}
    for name, value in decision.extra_claims.items():
        if name not in RESERVED_CLAIMS:
            payload[name] = value
    if decision.session_tags:
        tags: dict[str, Any] = {"principal_tags": {key: [value] for key, value in decision.session_tags}}
        if decision.transitive_tag_keys:
            tags["transitive_tag_keys"] = list(decision.transitive_tag_keys)
        payload[AWS_TAGS_CLAIM] = tags
    return payload


def _notes(tenant: Tenant, issuer: Issuer | None) -> list[str]:
    notes = []
    if not tenant.enabled:
        notes.append("The tenant is disabled: a real exchange would answer 404 not_found.")
    if issuer is not None and not issuer.enabled:
        notes.append("The issuer is disabled: a real exchange would not accept its tokens.")
    return notes


def _decide(tenant: Tenant, issuer: Issuer, claims: Mapping[str, Any], *, audience: str | None, verified: bool,
            notes: list[str]) -> Simulation:
    rules, rules_error = tenant_rules_compile(tenant=tenant)
    if rules_error:
        from .errors import AccessDenied

        return Simulation(
            verified, issuer.issuer_id, claims, error=AccessDenied("No rule allows this exchange.", reason=rules_error),
            stage="rules", notes=(*notes, "A rule does not compile, so the tenant denies every exchange."),
        )
    trace, decision, error = explain(
        rules,
        issuer_id=issuer.issuer_id,
        claims=claims,
        requested_audience=audience or None,
        default_audience=tenant.default_audience,
        max_lifetime=tenant.max_token_lifetime,
    )
    emitted = emitted_payload(decision=decision, issuer=tenant.issuer_url) if decision is not None else None
    return Simulation(
        verified, issuer.issuer_id, claims, trace=trace, decision=decision, error=error, stage="rules",
        emitted=emitted, lifetime=decision.lifetime if decision is not None else None, notes=tuple(notes),
    )


def _select_issuer(tenant: Tenant, issuer: Issuer | None, claims: Mapping[str, Any]) -> Issuer:
    """As the exchange does: the pinned issuer, else the tenant's enabled issuer for ``iss``
    (the first by id when several share it)."""
    if issuer is not None:
        if issuer.tenant_id != tenant.pk:
            raise NotFound("Unknown issuer.", reason="the issuer belongs to another tenant")
        return issuer
    iss = claims.get("iss")
    candidates = (
        Issuer.objects.filter(tenant=tenant, enabled=True, issuer=iss).order_by("issuer_id") if isinstance(iss, str) else []
    )
    chosen = next(iter(candidates), None)
    if chosen is None:
        raise InvalidToken("The token's issuer is not accepted here.", reason="no issuer of this tenant has this iss")
    return chosen


def simulate_token(
    *, tenant: Tenant, token: str | bytes, issuer: Issuer | None = None, audience: str | None = None,
    now: float | None = None,
) -> Simulation:
    """Verify ``token`` for real (the issuer's keys, its audiences, algorithms and clock rules)
    and run the tenant's rules over its claims."""
    now = time.time() if now is None else now
    try:
        parsed = parse_compact(token.strip() if isinstance(token, str) else token, max_bytes=conf.max_token_bytes())
    except ExchangeError as exc:
        return Simulation(True, None, None, error=exc, stage="token")
    try:
        chosen = _select_issuer(tenant, issuer, parsed.claims)
    except ExchangeError as exc:
        return Simulation(True, None, dict(parsed.claims), error=exc, stage="issuer")
    notes = _notes(tenant, chosen)
    config = issuer_config(chosen)
    at = datetime.fromtimestamp(now, UTC)
    try:
        keys = issuer_keys_get(issuer=chosen, now=at)
        try:
            verified = verify_token(parsed, issuer=config, keys=keys.keys, now=now)
        except UnknownKeyId:
            # Like the exchange: the upstream may have rotated; one refetch per cool-down.
            fresh = issuer_keys_refetch_for_unknown_kid(issuer=chosen, now=at)
            if fresh is None:
                raise
            verified = verify_token(parsed, issuer=config, keys=fresh.keys, now=now)
    except ExchangeError as exc:
        return Simulation(True, chosen.issuer_id, dict(parsed.claims), error=exc, stage="verification", notes=tuple(notes))
    return _decide(tenant, chosen, verified.claims, audience=audience, verified=True, notes=notes)


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
    return _decide(tenant, issuer, claims, audience=audience, verified=False, notes=notes)
