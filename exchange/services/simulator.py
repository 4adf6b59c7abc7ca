"""The rule simulator: what would this tenant answer to this token — without answering.

Runs the exchange's own steps (exchange.services.exchange) on a fresh snapshot of the tenant
(``runtime.runtime_build``): ``token_parse`` → ``issuer_select`` → ``token_verify`` (the
issuer's real keys, with the unknown-``kid`` refetch) → ``rules_decide`` (with a trace) →
``minting.payload_build``. So it reaches the endpoints' decision for the same input — a token
with a trailing newline is refused here too. It signs nothing, writes no audit row, counts no
rate limit and uses up no one-time token. A mapper rule's webhook is called for real (with its
bearer token: the mapper must be able to check who calls), and the simulation says so — to the
operator, and to the mapper (``"simulation": true`` in the body and in the bearer's claims,
docs/mapper.md#in-the-simulator), without touching the breaker or the concurrency limit of real
exchanges. Only with ``outbound``: an auditor's simulation calls nothing outside (no webhook, no
upstream key fetch) and shows the request a mapper would have been sent.

Given claims instead of a token it skips verification and says so: the result is marked
unverified and shows what the rules make of those claims, nothing more. Typed-in claims are held
to what a token can carry (16 KiB of JSON), and the rules run within the same cost budget as an
exchange's (docs/rules.md#rule-cost-budget), so the simulator amplifies nothing.

A rule to try (``draft``, checked by the caller exactly as saving it would check it) is evaluated
first, before the tenant's own rules; nothing is saved. The rules' warnings (a token that may be
too long for AWS…) are shown as notes.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tenants.models import Tenant

from ..conf import jwtex_settings
from ..console.presets import preset_claim_types
from ..core import strict_json
from ..core.errors import ExchangeError, InvalidRequest, NotFound
from ..core.limits import MAX_CLAIMS_JSON_BYTES
from ..core.minting import payload_build
from ..core.rules.compiled import rule_compile
from ..core.rules.spec import RuleSpec
from ..core.values import Decision, RuleTrace
from ..models import Issuer
from ..runtime import TenantRuntime, runtime_build
from .exchange import issuer_select, rules_decide, token_parse, token_size_check, token_verify
from .mapper import BREAKER_FAILURES, MapperCall, MapperMode, MapperNotCalled

__all__ = ["Simulation", "claims_json_parse", "claims_simulate", "token_simulate"]


@dataclass(frozen=True)
class Simulation:
    verified: bool  # True only once a token passed verification (signature, issuer, audience, times)
    issuer_id: str | None
    claims: Mapping[str, Any] | None  # the (verified or given) upstream claims
    trace: list[RuleTrace] = field(default_factory=list)
    decision: Decision | None = None
    error: ExchangeError | None = None
    stage: str = "rules"  # where it stopped: "token", "issuer", "verification", "rules"
    emitted: dict[str, Any] | None = None  # the would-be payload without iat/nbf/exp/jti
    lifetime: int | None = None
    notes: tuple[str, ...] = ()
    mapper: MapperCall | None = None  # a mapper rule's webhook, really called (docs/mapper.md#mapper-webhooks)
    source: str = "token"  # what was simulated: "token" (pasted) or "claims" (typed in)

    @property
    def allowed(self) -> bool:
        return self.decision is not None and self.error is None

    @property
    def undecided(self) -> bool:
        """A mapper rule matched and was not called (an auditor's simulation): nothing decided."""
        return isinstance(self.error, MapperNotCalled)

    @property
    def session_tags(self) -> tuple[tuple[str, str], ...]:
        return self.decision.session_tags if self.decision is not None else ()


def _notes(tenant: Tenant, issuer: Issuer | None) -> list[str]:
    notes = []
    if not tenant.enabled:
        notes.append("The tenant is disabled: a real exchange would answer 404 not_found.")
    if issuer is not None and not issuer.enabled:
        notes.append("The issuer is disabled: a real exchange would not accept its tokens.")
    if issuer is not None and jwtex_settings.upstream_issuer_problem(issuer.issuer):
        notes.append(
            "The issuer is outside JWTEX_ALLOWED_UPSTREAM_ISSUERS: a real exchange would answer 403 access_denied."
        )
    return notes


_CALLED = "A mapper rule matched: its webhook was called for real, told it was a simulation, with the request shown."
_NOT_CALLED = (
    "A mapper rule matched: its webhook decides, and an auditor's simulation calls nothing outside — the "
    "request it would be sent is shown."
)
_CIRCUIT_OPEN = (
    f"Real exchanges are not calling this mapper at the moment: it failed {BREAKER_FAILURES} times in a row."
)


def _with_draft(runtime: TenantRuntime, draft: RuleSpec | None) -> TenantRuntime:
    """The tenant's rules with the rule to try first (compiled as a saved rule would be)."""
    if draft is None:
        return runtime
    issuers = [runtime.issuers[i] for i in sorted(draft.issuers) if i in runtime.issuers]
    compiled = rule_compile(
        draft, claim_types=preset_claim_types([(i.issuer, i.static_jwks is not None) for i in issuers])
    )
    return dataclasses.replace(runtime, rules=(compiled, *runtime.rules))


def _rule_notes(runtime: TenantRuntime) -> list[str]:
    return [f"Rule {rule.name!r}, {path}: {message}" for rule in runtime.rules for path, message in rule.warnings]


def _decide(
    runtime: TenantRuntime,
    issuer_id: str,
    claims: Mapping[str, Any],
    *,
    audience: str | None,
    verified: bool,
    notes: list[str],
    outbound: bool,
) -> Simulation:
    notes = [*notes, *_rule_notes(runtime)]
    if runtime.rules_error:
        notes = [*notes, "A rule does not compile, so the tenant denies every exchange."]
    trace: list[RuleTrace] = []
    decision: Decision | None = None
    error: ExchangeError | None = None
    calls: list[MapperCall] = []
    try:
        mode = MapperMode.SIMULATED if outbound else MapperMode.NOT_CALLED
        decision = rules_decide(
            runtime,
            issuer_id=issuer_id,
            claims=claims,
            audience=audience or None,
            trace=trace,
            on_mapper=calls.append,
            mapper=mode,
        )
        token_size_check(runtime, decision, now=time.time())
    except ExchangeError as exc:
        error = exc
    if calls:
        notes = [*notes, _CALLED if outbound else _NOT_CALLED, *([_CIRCUIT_OPEN] if calls[0].live_circuit_open else [])]
    emitted = payload_build(decision=decision, issuer=runtime.issuer_url) if decision is not None else None
    return Simulation(
        verified,
        issuer_id,
        claims,
        trace=trace,
        decision=decision,
        error=error,
        stage="rules",
        emitted=emitted,
        lifetime=decision.lifetime if decision is not None else None,
        notes=tuple(notes),
        mapper=calls[0] if calls else None,
        source="token" if verified else "claims",
    )


def token_simulate(
    *,
    tenant: Tenant,
    token: str | bytes,
    issuer: Issuer | None = None,
    audience: str | None = None,
    now: float | None = None,
    outbound: bool = False,
    draft: RuleSpec | None = None,
) -> Simulation:
    """Verify ``token`` for real (the issuer's keys, its audiences, algorithms and clock rules)
    and run the tenant's rules over its claims, exactly as the endpoints would (``draft`` first).
    Without ``outbound`` nothing outside is called: the stored keys only, no mapper webhook."""
    now = time.time() if now is None else now
    if issuer is not None and issuer.tenant_id != tenant.pk:
        return Simulation(False, None, None, error=NotFound("Unknown issuer."), stage="issuer")
    runtime = _with_draft(runtime_build(tenant=tenant, now=datetime.fromtimestamp(now, UTC)), draft)
    try:
        parsed = token_parse(token)
    except ExchangeError as exc:
        return Simulation(False, None, None, error=exc, stage="token")
    try:
        chosen = issuer_select(runtime, issuer_id=issuer.issuer_id if issuer is not None else None, parsed=parsed)
    except ExchangeError as exc:
        return Simulation(
            False, None, dict(parsed.claims), error=exc, stage="issuer", notes=tuple(_notes(tenant, issuer))
        )
    notes = _notes(tenant, issuer)
    try:
        verified = token_verify(chosen, parsed, now=now, fetch=outbound)
    except ExchangeError as exc:
        return Simulation(
            False, chosen.issuer_id, dict(parsed.claims), error=exc, stage="verification", notes=tuple(notes)
        )
    return _decide(
        runtime, chosen.issuer_id, verified.claims, audience=audience, verified=True, notes=notes, outbound=outbound
    )


def claims_json_parse(text: str) -> dict[str, Any]:
    """A JSON object of claims, by the same strict decoder as tokens, and no larger than a token's
    payload can be (16 KiB); ``InvalidRequest`` with a readable message otherwise."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_CLAIMS_JSON_BYTES:
        raise InvalidRequest(
            f"The claims are {size:,} bytes of JSON; a token, and so the simulator, carries at most "
            f"{MAX_CLAIMS_JSON_BYTES:,}."
        )
    try:
        claims = strict_json.loads(text)
    except strict_json.DuplicateMemberError as exc:
        raise InvalidRequest(f"The claims are not valid JSON: the member {exc.name!r} appears twice.") from None
    except RecursionError:
        raise InvalidRequest("The claims are nested too deeply.") from None
    except ValueError as exc:
        raise InvalidRequest(f"The claims are not valid JSON: {exc}") from None
    if not isinstance(claims, dict):
        raise InvalidRequest("The claims must be a JSON object.")
    return claims


def claims_simulate(
    *,
    tenant: Tenant,
    issuer: Issuer,
    claims: Mapping[str, Any],
    audience: str | None = None,
    outbound: bool = False,
    draft: RuleSpec | None = None,
) -> Simulation:
    """Run the tenant's rules (``draft`` first) over ``claims`` as if ``issuer`` had signed them.
    Unverified: signature, ``iss``, ``aud`` and times are not checked. A mapper webhook is called
    (marked as a simulation) only with ``outbound``."""
    if issuer.tenant_id != tenant.pk:
        return Simulation(False, None, claims, error=NotFound("Unknown issuer."), stage="issuer", source="claims")
    notes = ["Unverified simulation: the claims were typed in, not taken from a signed token."]
    notes += _notes(tenant, issuer)
    runtime = _with_draft(runtime_build(tenant=tenant, now=datetime.now(UTC)), draft)
    return _decide(runtime, issuer.issuer_id, claims, audience=audience, verified=False, notes=notes, outbound=outbound)
