"""Services: the one exchange pipeline and the few writes around it (CONVENTIONS §1, §5)."""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Mapping

from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from tenants.models import Tenant

from . import conf
from .errors import (
    AccessDenied,
    ExchangeError,
    InvalidToken,
    NotFound,
    RateLimited,
    TemporarilyUnavailable,
    UnknownKeyId,
)
from .keys import signing_key_ensure_active
from .minting import MintedToken, mint_token
from .models import Decision as AuditDecision
from .models import ExchangeRecord, Issuer
from .rules import decide
from .runtime import TenantRuntime, tenant_runtime_get
from .upstream import issuer_keys_get, issuer_keys_refetch_for_unknown_kid
from .verification import ParsedToken, VerifiedToken, parse_compact, short_value as _short, verify_token

logger = logging.getLogger("jwtex.exchange")


def tenant_create(*, slug: str, name: str, now: datetime | None = None, **fields: Any) -> Tenant:
    """A tenant is born with an active signing key, so its JWKS is never empty."""
    with transaction.atomic():
        tenant = Tenant(slug=slug, name=name, **fields)
        tenant.full_clean()
        tenant.save()
        signing_key_ensure_active(tenant=tenant, now=now or timezone.now())
    return tenant


# --- rate limits (SPEC §3): fixed one-minute windows counted in the shared cache -------------


def _rate_limit_hit(key: str, *, limit: int, now: float) -> None:
    if limit <= 0:
        return
    window = int(now // 60)
    cache_key = f"jwtex:rl:{key}:{window}"
    try:
        if cache.add(cache_key, 1, timeout=70):
            count = 1
        else:
            try:
                count = cache.incr(cache_key)
            except ValueError:  # expired between add() and incr()
                cache.add(cache_key, 1, timeout=70)
                count = 1
    except Exception as exc:  # noqa: BLE001 - the shared cache is down
        # Fail open: a cache outage must not become an outage of every exchange (a 500);
        # the limits are abuse protection, not authorization. Loud in the log.
        logger.error("rate limit not counted: cache unavailable", extra={"jwtex": {"error": type(exc).__name__}})
        return
    if count > limit:
        raise RateLimited(retry_after=max(1, 60 - int(now % 60)), reason=f"over {limit}/min for {key}")


def exchange_rate_limit(*, runtime: TenantRuntime, client_address: str | None, now: float) -> None:
    _rate_limit_hit(f"t:{runtime.tenant_id}", limit=runtime.rate_limit_per_minute, now=now)
    if client_address:
        _rate_limit_hit(f"a:{client_address}", limit=conf.rate_limit_per_address(), now=now)


# --- one-time upstream tokens (issue 5 §3) ------------------------------------------------------


def upstream_jti_consume(*, issuer: Issuer, leeway: int, claims: Mapping[str, Any], now: float) -> None:
    """Refuse a second use of the same upstream token while it is still valid, for an issuer
    with ``replay_protection`` on. The mark lives in the shared cache (across processes) as
    long as the verifier would still accept the token (exp + leeway), keyed by a digest of
    the jti, never the jti itself. A token without a jti cannot be told apart from its copies,
    so it is refused. A cache that cannot answer refuses too (fail closed, 503)."""
    if not issuer.replay_protection:
        return
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise InvalidToken(
            "The token has no jti claim; this issuer accepts one-time tokens only.",
            reason="replay protection: jti missing or not a non-empty string",
        )
    digest = hashlib.sha256(jti.encode("utf-8", "surrogatepass")).hexdigest()
    # exp was checked by the verifier: a finite number after now - leeway.
    timeout = max(1, math.ceil(claims["exp"] + leeway - now))
    try:
        first_use = cache.add(f"jwtex:jti:{issuer.pk}:{digest}", 1, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - e.g. Redis down: never mint a possibly replayed token
        raise TemporarilyUnavailable(
            "One-time token checks are unavailable; retry later.", reason=f"replay cache: {type(exc).__name__}"
        ) from None
    if not first_use:
        raise InvalidToken("The token has already been used.", reason=f"replay of jti sha256:{digest[:16]}")


# --- the pipeline ----------------------------------------------------------------------------


@dataclass
class _Attempt:
    """What the audit record will say about one attempt; filled as the pipeline advances."""

    runtime: TenantRuntime
    endpoint: str
    client_address: str | None
    started: datetime
    issuer: Issuer | None = None
    parsed: ParsedToken | None = None
    rule_id: int | None = None
    rule_name: str = ""


def issuer_select(runtime: TenantRuntime, *, issuer_id: str | None, parsed: ParsedToken) -> Issuer:
    """The issuer whose configuration verifies ``parsed``: the pinned one (``issuerId``), else the
    tenant's issuer for the token's ``iss``. A pinned issuer whose ``iss`` the token does not
    carry is refused here, before any key lookup or fetch (SPEC §3)."""
    if issuer_id is not None:
        issuer = runtime.issuers.get(issuer_id)
        if issuer is None:
            raise NotFound("Unknown issuer.", reason=f"no enabled issuer {issuer_id!r} in tenant {runtime.slug}")
        iss = parsed.claims.get("iss")
        if iss != issuer.issuer:
            raise InvalidToken(
                f"The token's issuer does not match issuer '{issuer.issuer_id}'.",
                reason=f"iss {_short(iss)} is not {issuer.issuer!r} of the pinned issuer {issuer.issuer_id!r}",
            )
        return issuer
    iss = parsed.claims.get("iss")
    ids = runtime.issuer_ids_by_iss.get(iss) if isinstance(iss, str) else None
    if not ids:
        raise InvalidToken("The token's issuer is not accepted here.", reason="no issuer of this tenant has this iss")
    # Several issuers may share an iss (e.g. different audiences); the first by id decides
    # which config verifies, deterministically. Callers can pin one with issuerId.
    return runtime.issuers[sorted(ids)[0]]


def token_verify(runtime: TenantRuntime, issuer: Issuer, parsed: ParsedToken, *, now: float) -> VerifiedToken:
    """Verify against the issuer's keys; an unknown ``kid`` refetches once per cool-down (SPEC §4)."""
    config = runtime.issuer_configs[issuer.issuer_id]
    keys = issuer_keys_get(issuer=issuer, now=datetime.fromtimestamp(now, UTC))
    try:
        return verify_token(parsed, issuer=config, keys=keys.keys, now=now)
    except UnknownKeyId:
        # The upstream may have rotated: refetch at most once per cool-down (SPEC §4).
        try:
            fresh = issuer_keys_refetch_for_unknown_kid(issuer=issuer, now=datetime.fromtimestamp(now, UTC))
        except ExchangeError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. the cool-down's cache is down: no refetch
            logger.error(
                "unknown-kid refetch skipped", extra={"jwtex": {"issuer": issuer.issuer_id, "error": type(exc).__name__}}
            )
            fresh = None
        if fresh is None:
            raise
        return verify_token(parsed, issuer=config, keys=fresh.keys, now=now)


def exchange_token(
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
    runtime = tenant_runtime_get(slug=tenant_slug)
    attempt = _Attempt(runtime, endpoint, client_address, datetime.fromtimestamp(now, UTC))
    try:
        exchange_rate_limit(runtime=runtime, client_address=client_address, now=now)
    except RateLimited as exc:
        # Not audited row by row: a flood must not turn into a flood of inserts. Logged instead.
        _log(attempt, error=exc)
        raise
    try:
        attempt.parsed = parse_compact(subject_token, max_bytes=conf.max_token_bytes())
        attempt.issuer = issuer_select(runtime, issuer_id=issuer_id, parsed=attempt.parsed)
        verified = token_verify(runtime, attempt.issuer, attempt.parsed, now=now)
        if runtime.rules_error:
            raise AccessDenied("No rule allows this exchange.", reason=runtime.rules_error)
        decision = decide(
            runtime.rules,
            issuer_id=attempt.issuer.issuer_id,
            claims=verified.claims,
            requested_audience=audience,
            default_audience=runtime.default_audience,
            max_lifetime=runtime.max_token_lifetime,
        )
        attempt.rule_id, attempt.rule_name = decision.rule_id, decision.rule_name
        if runtime.signer is None:
            raise TemporarilyUnavailable(
                "The tenant's signing key is unavailable.", reason=runtime.signer_error or "no signing key"
            )
        # Last before minting: only a token that would be granted uses up its jti.
        upstream_jti_consume(
            issuer=attempt.issuer,
            leeway=runtime.issuer_configs[attempt.issuer.issuer_id].leeway,
            claims=verified.claims,
            now=now,
        )
        minted = mint_token(decision=decision, issuer=runtime.issuer_url, signer=runtime.signer, now=int(now))
    except ExchangeError as exc:
        if exc.rule_name:  # a deny rule, or the allow rule whose output was refused
            attempt.rule_id, attempt.rule_name = exc.rule_id, exc.rule_name
        _record(attempt, error=exc)
        raise
    _record(attempt, minted=minted)
    return minted


# --- audit (SPEC §8) -------------------------------------------------------------------------


def _audit_safe(value: Any) -> Any:
    """``value`` with every NUL replaced: PostgreSQL text and jsonb refuse U+0000, and a
    token carrying one in its (unverified) ``sub`` must not make its attempt go unaudited."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, list):
        return [_audit_safe(item) for item in value]
    if isinstance(value, dict):
        return {_audit_safe(key): _audit_safe(item) for key, item in value.items()}
    return value


def _clip(value: Any, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _upstream_fields(parsed: ParsedToken | None) -> dict[str, Any]:
    claims: Mapping[str, Any] = parsed.claims if parsed is not None else {}
    aud = claims.get("aud")
    if isinstance(aud, list):
        aud = [a[:255] for a in aud[:10] if isinstance(a, str)]
    elif not isinstance(aud, str):
        aud = None
    return {
        "upstream_iss": _clip(claims.get("iss"), 512),
        "upstream_sub": _clip(claims.get("sub"), 512),
        "upstream_jti": _clip(claims.get("jti"), 256),
        "upstream_aud": aud,
    }


def _record(attempt: _Attempt, *, minted: MintedToken | None = None, error: ExchangeError | None = None) -> None:
    fields: dict[str, Any] = {
        "tenant_id": attempt.runtime.tenant_id,
        "created_at": attempt.started,
        "endpoint": attempt.endpoint,
        "issuer_id": attempt.issuer.pk if attempt.issuer else None,
        "issuer_ref": attempt.issuer.issuer_id if attempt.issuer else "",
        "rule_id": attempt.rule_id,
        "rule_name": attempt.rule_name[:200],
        "client_address": attempt.client_address,
    }
    upstream = _upstream_fields(attempt.parsed)
    fields.update(upstream)
    if minted is not None:
        fields.update(
            decision=AuditDecision.ALLOWED,
            status_code=200,
            issued_jti=minted.jti,
            issued_kid=minted.kid,
            issued_sub=minted.subject[:512],
            issued_aud=minted.audience[:255],
            issued_exp=datetime.fromtimestamp(minted.expires_at, UTC),
            issued_claims=dict(minted.claims),
        )
    else:
        assert error is not None
        fields.update(
            decision=AuditDecision.DENIED, status_code=error.status, error_code=error.code, reason=error.reason[:2000]
        )
    try:
        ExchangeRecord.objects.create(**{name: _audit_safe(value) for name, value in fields.items()})
    except Exception:  # noqa: BLE001 - losing the row must be loud, but must not change the answer
        logger.exception("audit record could not be written", extra={"jwtex": {"tenant": attempt.runtime.slug}})
    _log(attempt, minted=minted, error=error, upstream=upstream)


def _log(
    attempt: _Attempt,
    *,
    minted: MintedToken | None = None,
    error: ExchangeError | None = None,
    upstream: dict[str, Any] | None = None,
) -> None:
    if upstream is None:
        upstream = _upstream_fields(attempt.parsed)
    fields = {
        "event": "exchange",
        "tenant": attempt.runtime.slug,
        "endpoint": attempt.endpoint,
        "issuer": attempt.issuer.issuer_id if attempt.issuer else None,
        "rule": attempt.rule_name or None,
        "decision": "allowed" if minted is not None else "denied",
        "client_address": attempt.client_address,
        "upstream_sub": upstream["upstream_sub"] or None,
        "upstream_jti": upstream["upstream_jti"] or None,
    }
    if minted is not None:
        fields.update(issued_jti=minted.jti, issued_kid=minted.kid, issued_exp=minted.expires_at)
        logger.info("exchange allowed", extra={"jwtex": fields})
    else:
        fields.update(error=error.code, status=error.status, reason=error.reason)
        logger.info("exchange denied", extra={"jwtex": fields})
