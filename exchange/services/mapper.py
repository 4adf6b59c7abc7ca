"""The mapper webhook (docs/mapper.md#mapper-webhooks): a ``mapper`` rule's call, which cannot hurt other tenants.

- The request is the JSON of docs/mapper.md#the-request with ``Authorization: Bearer`` a 60-second JWT
  signed by the tenant's active key (``iss`` the tenant, ``aud`` the mapper URL, ``sub`` the issuer id), so
  the mapper checks its caller through the tenant's own JWKS.
- The call goes through the guarded client (exchange.upstream.webhook) with the rule's deadline.
- Per tenant and process at most ``MAPPER_CONCURRENCY`` calls at once; one more answers ``503``
  at once instead of queueing (a slow mapper holds its own tenant's slots, nobody else's).
- A circuit breaker per tenant and URL: after ``BREAKER_FAILURES`` failures in a row the mapper
  is not called for ``BREAKER_SECONDS`` (such exchanges are denied at once, logged, counted).
- Every outcome is noted for the audit record (``MapperCall``) and the metrics; the bearer
  token never is.

The simulator's calls (``MapperMode.SIMULATED``) say so to the mapper — ``"simulation": true``
in the body and in the bearer's claims (docs/mapper.md#in-the-simulator) — and touch nothing of real traffic: they have
slots of their own (``SIMULATION_CONCURRENCY`` per tenant and process), never count toward the
breaker, are not in the metrics, and are made even while the breaker keeps real exchanges from
the mapper (that is when an operator wants to see what it answers). An auditor's simulation
(``MapperMode.NOT_CALLED``) sends nothing: it shows the request a mapper would get.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..conf import jwtex_settings
from ..core.errors import AccessDenied, TemporarilyUnavailable
from ..core.minting import jwt_sign
from ..core.rules.compiled import Delegation
from ..core.rules.mapper_answer import mapper_decision
from ..core.values import Decision
from ..metrics import mapper_call_observed
from ..runtime import TenantRuntime
from ..upstream.webhook import WebhookError, json_post

__all__ = [
    "BREAKER_FAILURES",
    "BREAKER_SECONDS",
    "MAPPER_CONCURRENCY",
    "SIMULATION_CONCURRENCY",
    "SIMULATION_MARK",
    "MapperCall",
    "MapperMode",
    "MapperNotCalled",
    "mapper_decide",
    "mapper_state_reset",
]

logger = logging.getLogger("jwtex.mapper")

MAPPER_CONCURRENCY = 4
SIMULATION_CONCURRENCY = 2
BREAKER_FAILURES = 5
BREAKER_SECONDS = 30.0
BEARER_LIFETIME = 60
SIMULATION_MARK = "simulation"  # the body's member and the bearer's claim of a simulated call (docs/mapper.md)


class MapperMode(enum.Enum):
    LIVE = "live"  # an exchange
    SIMULATED = "simulated"  # the simulator of an owner or operator: called, and told so
    NOT_CALLED = "not called"  # the simulator of an auditor: nothing is sent


class MapperNotCalled(AccessDenied):
    """A mapper rule matched in a simulation that calls no webhook: nothing decided."""


@dataclass
class MapperCall:
    """One mapper call, as the audit record and the simulator show it."""

    rule_id: int | None
    rule_name: str
    url: str
    request: dict[str, Any]
    outcome: str = ""  # allowed, denied, failed, invalid, circuit open, busy
    latency_ms: int | None = None
    error: str = ""
    answer: Any = field(default=None, repr=False)
    simulated: bool = False  # the call said so to the mapper, and touched nothing of real traffic
    live_circuit_open: bool = False  # (a simulation) real exchanges are not calling this mapper now


class _Breaker:
    def __init__(self) -> None:
        self.failures = 0
        self.open_until = 0.0

    def is_open(self, clock: float) -> bool:
        return clock < self.open_until

    def failed(self, clock: float) -> bool:
        """Count a failure; True when it opens the circuit."""
        self.failures += 1
        if self.failures >= BREAKER_FAILURES and not self.is_open(clock):
            self.open_until, self.failures = clock + BREAKER_SECONDS, 0
            return True
        return False

    def succeeded(self) -> None:
        self.failures = 0


_lock = threading.Lock()
_slots: dict[int, threading.BoundedSemaphore] = {}
_simulation_slots: dict[int, threading.BoundedSemaphore] = {}
_breakers: dict[tuple[int, str], _Breaker] = {}


def mapper_state_reset() -> None:
    """Forget every breaker and slot of this process (tests; what a restart does)."""
    with _lock:
        _slots.clear()
        _simulation_slots.clear()
        _breakers.clear()


def _slots_of(tenant_id: int, *, simulated: bool = False) -> threading.BoundedSemaphore:
    with _lock:
        if simulated:
            return _simulation_slots.setdefault(tenant_id, threading.BoundedSemaphore(SIMULATION_CONCURRENCY))
        return _slots.setdefault(tenant_id, threading.BoundedSemaphore(MAPPER_CONCURRENCY))


def _breaker_of(tenant_id: int, url: str) -> _Breaker:
    with _lock:
        return _breakers.setdefault((tenant_id, url), _Breaker())


def mapper_bearer(runtime: TenantRuntime, *, url: str, issuer_id: str, now: float, simulated: bool = False) -> str:
    if runtime.signer is None:
        raise TemporarilyUnavailable(
            "The tenant's signing key is unavailable.", reason=runtime.signer_error or "no key"
        )
    issued = int(now)
    payload = {
        "iss": runtime.issuer_url,
        "aud": url,
        "sub": issuer_id,
        "iat": issued,
        "nbf": issued,
        "exp": issued + BEARER_LIFETIME,
        "jti": uuid.uuid4().hex,
    }
    if simulated:
        payload[SIMULATION_MARK] = True  # signed: the mapper can trust it, unlike the body
    return jwt_sign(payload, signer=runtime.signer)  # a KMS tenant's bearer is signed by KMS too


def mapper_decide(
    runtime: TenantRuntime,
    delegation: Delegation,
    *,
    issuer_id: str,
    claims: Mapping[str, Any],
    audience: str | None,
    now: float,
    on_call: Callable[[MapperCall], None] | None = None,
    mode: MapperMode = MapperMode.LIVE,
) -> Decision:
    """Call the delegating rule's mapper and turn its answer into the token's Decision; any
    failure denies (``AccessDenied``), a tenant over its concurrent calls gets ``503``. Not
    called (``MapperMode.NOT_CALLED``): ``MapperNotCalled``, after ``on_call`` heard of it."""
    rule = delegation.rule
    live = mode is MapperMode.LIVE
    request = delegation.request(issuer_id=issuer_id, claims=claims)
    if not live:
        request[SIMULATION_MARK] = True
    call = MapperCall(rule.rule_id, rule.name, rule.spec.mapper_url, request, simulated=not live)
    try:
        if mode is MapperMode.NOT_CALLED:
            call.outcome = "not called"
            raise MapperNotCalled(
                f"Rule '{rule.name}' hands the decision to its mapper, which this simulation does not call.",
                reason=f"rule {rule.name!r}: mapper not called (simulation)",
                rule_id=rule.rule_id,
                rule_name=rule.name,
            )
        call.answer = _call(runtime, call, timeout=rule.spec.mapper_timeout_ms / 1000, issuer_id=issuer_id, now=now)
        try:
            decision = mapper_decision(
                rule,
                call.answer,
                claims=claims,
                requested_audience=audience,
                default_audience=runtime.default_audience,
                max_lifetime=runtime.max_token_lifetime,
            )
        except AccessDenied as exc:
            said_no = isinstance(call.answer, dict) and call.answer.get("allow") is False
            call.outcome, call.error = ("denied", "") if said_no else ("invalid", exc.reason[:500])
            _settle(runtime, call, ok=said_no)
            raise
        call.outcome = "allowed"
        _settle(runtime, call, ok=True)
        return decision
    finally:
        if live:  # the metrics count real traffic only
            mapper_call_observed(tenant=runtime.slug, outcome=call.outcome or "failed")
        if on_call is not None:
            on_call(call)


def _call(runtime: TenantRuntime, call: MapperCall, *, timeout: float, issuer_id: str, now: float) -> Any:
    breaker = _breaker_of(runtime.tenant_id, call.url)
    if breaker.is_open(time.monotonic()):
        if call.simulated:  # shown, not obeyed: the breaker is real traffic's
            call.live_circuit_open = True
        else:
            call.outcome = "circuit open"
            raise AccessDenied(
                f"Rule '{call.rule_name}': its mapper is failing; not called for a while.",
                reason=f"rule {call.rule_name!r}: mapper circuit open after {BREAKER_FAILURES} failures",
                rule_id=call.rule_id,
                rule_name=call.rule_name,
            )
    slots = _slots_of(runtime.tenant_id, simulated=call.simulated)
    if not slots.acquire(blocking=False):
        call.outcome = "busy"
        kind = "simulated mapper calls" if call.simulated else "mapper calls"
        limit = SIMULATION_CONCURRENCY if call.simulated else MAPPER_CONCURRENCY
        raise TemporarilyUnavailable(
            f"Too many {kind} of this tenant at once; retry later.",
            reason=f"rule {call.rule_name!r}: {limit} {kind} already running",
            rule_id=call.rule_id,
            rule_name=call.rule_name,
        )
    started = time.monotonic()
    try:
        bearer = mapper_bearer(runtime, url=call.url, issuer_id=issuer_id, now=now, simulated=call.simulated)
        return json_post(
            call.url,
            call.request,
            headers={"Authorization": f"Bearer {bearer}"},
            timeout=timeout,
            allow_insecure=jwtex_settings.allow_insecure_issuers,
            private_hosts=jwtex_settings.mapper_allowed_hosts,
        )
    except WebhookError as exc:
        call.outcome, call.error = "failed", str(exc)[:500]
        _settle(runtime, call, ok=False)
        raise AccessDenied(
            f"Rule '{call.rule_name}': its mapper did not answer usably.",
            reason=f"rule {call.rule_name!r}: mapper failed: {exc}",
            rule_id=call.rule_id,
            rule_name=call.rule_name,
        ) from None
    finally:
        call.latency_ms = int((time.monotonic() - started) * 1000)
        slots.release()


def _settle(runtime: TenantRuntime, call: MapperCall, *, ok: bool) -> None:
    if call.simulated:
        return  # a simulation never counts toward the breaker, either way
    breaker = _breaker_of(runtime.tenant_id, call.url)
    if ok:
        breaker.succeeded()
    elif breaker.failed(time.monotonic()):
        logger.warning(
            "mapper circuit opened",
            extra={
                "jwtex": {
                    "tenant": runtime.slug,
                    "rule": call.rule_name,
                    "seconds": BREAKER_SECONDS,
                    "error": call.error,
                }
            },
        )
