"""The one exchange pipeline (docs/design/pipeline.md): verify → decide → mint → record.

``token_exchange`` is the four steps and nothing else; each step is a function of its own, so
the simulator (and the shadow rules and the mapper after it) call the very same ones:

- ``token_parse`` / ``issuer_select`` / ``token_verify``: the upstream token, strictly, against
  the chosen issuer's keys (an unknown ``kid`` refetches once per cool-down);
- ``rules_decide``: the tenant's rules over the verified claims (``trace`` for the simulator);
- ``token_mint``: the one-time-token mark, then the signature by the tenant's active key;
- the audit record of every attempt, allowed or not (exchange.services.audit).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .. import timeline
from ..conf import jwtex_settings
from ..core.aws import MAX_WEB_IDENTITY_TOKEN_LENGTH
from ..core.compact_jws import jwt_parse
from ..core.errors import (
    AccessDenied,
    ExchangeError,
    InvalidToken,
    NotFound,
    RateLimited,
    TemporarilyUnavailable,
    UnknownKeyId,
)
from ..core.minting import TokenTooLong, jwt_mint, token_length
from ..core.rules import engine
from ..core.rules.compiled import Delegation
from ..core.values import Decision, IssuerSnapshot, MintedToken, ParsedToken, RuleTrace, VerifiedToken
from ..core.verification import jwt_verify, short_value
from ..runtime import TenantRuntime, tenant_runtime_get
from ..upstream.issuer_keys import issuer_keys_get, issuer_keys_refetch_for_unknown_kid
from ..upstream.request_fetch import request_deadline
from .audit import Attempt, attempt_log, attempt_record
from .mapper import MapperCall, MapperMode, mapper_decide
from .rate_limits import exchange_rate_limit, upstream_jti_consume
from .shadow import shadow_divergence

logger = logging.getLogger("jwtex.exchange")


def token_exchange(
    *,
    tenant_slug: str,
    subject_token: str | bytes,
    issuer_id: str | None = None,
    audience: str | None = None,
    client_address: str | None = None,
    endpoint: str = "api",
    now: float | None = None,
) -> MintedToken:
    """Verify → decide → mint → record. Raises an ExchangeError subclass on any refusal."""
    now = time.time() if now is None else now
    # The request's budget for upstream keys counts from its start (docs/errors.md#bursts).
    deadline = request_deadline()
    runtime = tenant_runtime_get(slug=tenant_slug)
    attempt = Attempt(runtime.tenant_id, runtime.slug, endpoint, client_address, datetime.fromtimestamp(now, UTC))
    exchange_admit(runtime, attempt, now=now)
    timeline.mark("admitted")
    try:
        attempt.parsed = token_parse(subject_token)
        attempt.issuer = issuer_select(runtime, issuer_id=issuer_id, parsed=attempt.parsed)
        verified = token_verify(attempt.issuer, attempt.parsed, now=now, deadline=deadline)
        timeline.mark("verified")
        decision = rules_step(runtime, attempt, verified, audience=audience, now=now)
        attempt.decided_by(rule_id=decision.rule_id, rule_name=decision.rule_name)
        timeline.mark("decided")
        minted = token_mint(runtime, attempt.issuer, verified, decision, now=now)
        timeline.mark("minted, jti marked")
    except ExchangeError as exc:
        attempt.decided_by(rule_id=exc.rule_id, rule_name=exc.rule_name)  # a deny rule, or the refused allow rule
        attempt_record(attempt, error=exc)
        raise
    if not attempt_record(attempt, minted=minted):  # no token without its record (docs/operations.md#audit)
        raise TemporarilyUnavailable(
            "The exchange cannot be recorded right now; retry later.", reason="audit not durable"
        )
    return minted


def exchange_admit(runtime: TenantRuntime, attempt: Attempt, *, now: float) -> None:
    """The rate limits; a refusal is logged, not audited row by row (a flood must not turn into
    a flood of inserts)."""
    try:
        exchange_rate_limit(
            tenant_id=runtime.tenant_id,
            tenant_limit=runtime.rate_limit_per_minute,
            client_address=attempt.client_address,
            now=now,
        )
    except RateLimited as exc:
        attempt_log(attempt, error=exc)
        raise


def token_parse(subject_token: str | bytes) -> ParsedToken:
    return jwt_parse(subject_token, max_bytes=jwtex_settings.max_token_bytes)


def issuer_select(runtime: TenantRuntime, *, issuer_id: str | None, parsed: ParsedToken) -> IssuerSnapshot:
    """The issuer whose configuration verifies ``parsed``: the pinned one (``issuerId``), else the
    tenant's issuer for the token's ``iss``. A pinned issuer whose ``iss`` the token does not
    carry is refused here, before any key lookup or fetch (docs/errors.md#bursts)."""
    iss = parsed.claims.get("iss")
    if issuer_id is not None:
        issuer = runtime.issuers.get(issuer_id)
        if issuer is None:
            raise NotFound("Unknown issuer.", reason=f"no enabled issuer {issuer_id!r} in tenant {runtime.slug}")
        if iss != issuer.issuer:
            raise InvalidToken(
                f"The token's issuer does not match issuer '{issuer.issuer_id}'.",
                reason=f"iss {short_value(iss)} is not {issuer.issuer!r} of the pinned issuer {issuer.issuer_id!r}",
            )
        return issuer
    ids = runtime.issuer_ids_by_iss.get(iss) if isinstance(iss, str) else None
    if not ids:
        raise InvalidToken("The token's issuer is not accepted here.", reason="no issuer of this tenant has this iss")
    # Several issuers may share an iss (e.g. different audiences); the first by id decides
    # which config verifies, deterministically. Callers can pin one with issuerId.
    return runtime.issuers[sorted(ids)[0]]


def issuer_admit(issuer: IssuerSnapshot) -> None:
    """Refuse an issuer outside the operators' list, before any key lookup or fetch: one saved
    before the list changed is refused here (docs/operators.md#allowed-upstream-issuers)."""
    problem = jwtex_settings.upstream_issuer_problem(issuer.issuer)
    if problem is not None:
        raise AccessDenied(
            f"Issuer '{issuer.issuer_id}' is not one this service allows.",
            reason=(
                f"issuer {issuer.issuer_id!r} ({short_value(issuer.issuer)}) is outside JWTEX_ALLOWED_UPSTREAM_ISSUERS"
            ),
        )


def token_verify(
    issuer: IssuerSnapshot, parsed: ParsedToken, *, now: float, deadline: float | None = None, fetch: bool = True
) -> VerifiedToken:
    """Verify against the issuer's keys; an unknown ``kid`` refetches once per cool-down
    (docs/verification.md#unknown-kid). Fetching or waiting for keys ends by ``deadline``
    (``time.monotonic()``; default: the budget from now). ``fetch=False`` (an auditor's
    simulation): the stored keys only, nothing fetched."""
    at = datetime.fromtimestamp(now, UTC)
    # One budget for all its waits (docs/errors.md#bursts).
    deadline = request_deadline() if deadline is None else deadline
    issuer_admit(issuer)
    keys = issuer_keys_get(issuer=issuer, now=at, deadline=deadline, fetch=fetch)
    try:
        return jwt_verify(parsed, issuer=issuer.config, keys=keys.keys, now=now)
    except UnknownKeyId:
        if not fetch:
            raise
        # The upstream may have rotated: refetch at most once per cool-down, or wait for the
        # refetch in flight, then verify with what it stored (docs/errors.md#bursts).
        try:
            fresh = issuer_keys_refetch_for_unknown_kid(issuer=issuer, now=at, tried=keys, deadline=deadline)
        except ExchangeError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. the cool-down's cache is down: no refetch
            logger.error(
                "unknown-kid refetch skipped",
                extra={"jwtex": {"issuer": issuer.issuer_id, "error": type(exc).__name__}},
            )
            fresh = None
        if fresh is None:
            raise
        return jwt_verify(parsed, issuer=issuer.config, keys=fresh.keys, now=now)


def rules_decide(
    runtime: TenantRuntime,
    *,
    issuer_id: str,
    claims: Any,
    audience: str | None,
    trace: list[RuleTrace] | None = None,
    on_mapper: Callable[[MapperCall], None] | None = None,
    now: float | None = None,
    mapper: MapperMode = MapperMode.LIVE,
) -> Decision:
    """The tenant's rules over verified claims (docs/rules.md#session-tags); ``AccessDenied`` unless an allow rule
    (or a mapper rule's webhook, docs/mapper.md#the-answer) decides. A tenant with a rule that does not compile
    denies everything. With ``trace``, every rule's part is appended to it (the simulator);
    ``on_mapper`` hears of a mapper call (the audit record, the simulator); ``mapper`` says
    how a simulation calls it (exchange.services.mapper)."""
    if runtime.rules_error:
        raise AccessDenied("No rule allows this exchange.", reason=runtime.rules_error)
    decided = engine.compiled_rules_decide(
        runtime.rules,
        issuer_id=issuer_id,
        claims=claims,
        requested_audience=audience,
        default_audience=runtime.default_audience,
        max_lifetime=runtime.max_token_lifetime,
        trace=trace,
    )
    if isinstance(decided, Delegation):
        return mapper_decide(
            runtime,
            decided,
            issuer_id=issuer_id,
            claims=claims,
            audience=audience,
            now=time.time() if now is None else now,
            on_call=on_mapper,
            mode=mapper,
        )
    return decided


def rules_step(
    runtime: TenantRuntime, attempt: Attempt, verified: VerifiedToken, *, audience: str | None, now: float
) -> Decision:
    """``rules_decide`` for an exchange: the attempt hears of a mapper call, keeps the verified
    claims if the tenant asks for it, and — only when the tenant has a candidate set — notes
    what the shadow rules would have done differently (docs/operations.md#shadow-rules)."""
    if runtime.keep_upstream_claims:
        attempt.claims = verified.claims
    issuer_id = attempt.issuer.issuer_id
    try:
        decided: Decision | ExchangeError = rules_decide(
            runtime,
            issuer_id=issuer_id,
            claims=verified.claims,
            audience=audience,
            on_mapper=attempt.mapper_called,
            now=now,
        )
    except ExchangeError as exc:
        decided = exc
    if runtime.shadow_rules is not None:
        attempt.shadow = shadow_divergence(
            runtime, issuer_id=issuer_id, claims=verified.claims, audience=audience, live=decided
        )
    if isinstance(decided, ExchangeError):
        raise decided
    return decided


def token_mint(
    runtime: TenantRuntime, issuer: IssuerSnapshot, verified: VerifiedToken, decision: Decision, *, now: float
) -> MintedToken:
    """Sign the decided token with the tenant's active key, then use up the upstream token's
    one-time ``jti``: only a token that is granted uses it up — not one AWS would refuse."""
    if runtime.signer is None:
        raise TemporarilyUnavailable(
            "The tenant's signing key is unavailable.", reason=runtime.signer_error or "no signing key"
        )
    try:
        minted = jwt_mint(decision=decision, issuer=runtime.issuer_url, signer=runtime.signer, now=int(now))
    except TokenTooLong as exc:
        raise _too_long(decision, exc) from None
    upstream_jti_consume(issuer=issuer, claims=verified.claims, now=now)
    return minted


def token_size_check(runtime: TenantRuntime, decision: Decision, *, now: float) -> None:
    """``AccessDenied`` when the decided token would be longer than AWS STS accepts, as
    ``token_mint`` would refuse it — without signing (the simulator)."""
    if runtime.signer is None:
        return
    length = token_length(decision=decision, issuer=runtime.issuer_url, signer=runtime.signer, now=int(now))
    if length > MAX_WEB_IDENTITY_TOKEN_LENGTH:
        raise _too_long(decision, TokenTooLong(length))


def _too_long(decision: Decision, exc: TokenTooLong) -> AccessDenied:
    return AccessDenied(
        f"Rule '{decision.rule_name}' makes a token longer than AWS STS accepts.",
        reason=f"rule {decision.rule_name!r}: {exc} (fewer or shorter session tags or claims)",
        rule_id=decision.rule_id,
        rule_name=decision.rule_name,
    )


def tenant_check(*, slug: str) -> None:
    """``NotFound`` for an unknown or disabled tenant (404 on every ``/t/T/…`` path,
    docs/endpoints.md#unknown-or-disabled-tenants;
    before anything about the request itself is judged)."""
    tenant_runtime_get(slug=slug)


def tenant_documents(*, slug: str) -> tuple[bytes, bytes]:
    """The tenant's rendered discovery document and JWKS, from its warm runtime
    (docs/endpoints.md#tenant-issuer-endpoints)."""
    runtime = tenant_runtime_get(slug=slug)
    return runtime.discovery_json, runtime.jwks_json
