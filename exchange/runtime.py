"""Per-process cache of everything one exchange reads, so the warm path does no database reads.

A ``TenantRuntime`` is an immutable snapshot of a tenant — values only, never an ORM row, so
threads can share it: its issuers (``IssuerSnapshot``), its rules compiled once, its active
signing key decrypted once, and its discovery and JWKS documents rendered once. Each process
keeps one per tenant and trusts them all for ``JWTEX_CONFIG_RECHECK_SECONDS`` (default 1.5 s);
after that one read of the global ``ConfigEpoch`` (moved after every committed change,
exchange.invalidation) tells whether anything changed, and only then one query of every
tenant's ``config_version`` says which snapshots to drop. So the cost is one tiny read per
interval per process, whether it serves one tenant or ten thousand; a full comparison also runs
every ``_RECONCILE_SECONDS`` in case an epoch bump was lost with a crashed process.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from django.db import DatabaseError, connection
from django.dispatch import receiver
from django.utils import timezone

from tenants.models import SLUG_PATTERN, ConfigEpoch, Tenant

from . import timeline
from .conf import jwtex_settings
from .console.presets import preset_claim_types
from .core.errors import NotFound, TemporarilyUnavailable
from .core.rules.cel_guard import RuleSyntaxError
from .core.rules.compiled import CompiledRule, rule_compile
from .core.values import IssuerSnapshot, SignerKey
from .invalidation import config_changed
from .keys import (
    KeyDecryptionError,
    SigningKeyUnavailable,
    signing_key_ensure_active,
    signing_key_load,
)
from .models import Issuer, Rule
from .publish.documents import tenant_discovery, tenant_issuer_url, tenant_jwks, tenant_live_keys

logger = logging.getLogger("jwtex.runtime")


@dataclass(frozen=True)
class TenantRuntime:
    tenant_id: int
    slug: str
    version: int
    issuer_url: str
    default_audience: str
    max_token_lifetime: int
    rate_limit_per_minute: int
    issuers: Mapping[str, IssuerSnapshot]  # enabled issuers, by issuer id
    issuer_ids_by_iss: Mapping[str, tuple[str, ...]]
    rules: tuple[CompiledRule, ...]
    rules_error: str | None  # a rule that does not compile makes the tenant deny everything
    # The candidate set (docs/operations.md#shadow-rules): None when the tenant has none — the exchange then does no
    # shadow work at all. A candidate that does not compile is reported, never used.
    shadow_rules: tuple[CompiledRule, ...] | None
    shadow_error: str | None
    keep_upstream_claims: bool  # the audit keeps the verified claims (for replays)
    signer: SignerKey | None
    signer_error: str | None
    jwks_json: bytes
    discovery_json: bytes


_SLUG = re.compile(SLUG_PATTERN)
_lock = threading.Lock()
_by_slug: dict[str, TenantRuntime] = {}
# Slugs found to be no tenant, and when: a flood of random slugs is not a query each.
_missing: dict[str, float] = {}
_MISSING_MAX = 10_000
_RECONCILE_SECONDS = 60.0


@dataclass
class _Freshness:
    """When this process last compared its snapshots with the database, and what it saw."""

    epoch: int | None = None
    checked_at: float = float("-inf")
    reconciled_at: float = float("-inf")
    generation: int = 0  # moves with every comparison: a build that raced one is served, not kept
    lock: threading.Lock = field(default_factory=threading.Lock)


_fresh = _Freshness()


def runtime_reset() -> None:
    """Forget every snapshot and comparison this process holds (what a restart does)."""
    with _lock:
        _by_slug.clear()
        _missing.clear()
        _fresh.epoch, _fresh.checked_at, _fresh.reconciled_at = None, float("-inf"), float("-inf")


def runtime_forget(*, tenant_id: int) -> None:
    with _lock:
        for slug, runtime in list(_by_slug.items()):
            if runtime.tenant_id == tenant_id:
                del _by_slug[slug]


@receiver(config_changed, dispatch_uid="jwtex.runtime.forget")
def _forget_changed(sender, tenant_id: int, **kwargs) -> None:
    runtime_forget(tenant_id=tenant_id)
    _missing.clear()  # perhaps the tenant was just created


def tenant_rules_compile(*, tenant: Tenant, shadow: bool = False) -> tuple[tuple[CompiledRule, ...], str | None]:
    """The tenant's live rules (or, with ``shadow``, its candidate set), compiled, in order."""
    rules = (
        Rule.objects.filter(tenant=tenant, enabled=True, shadow=shadow)
        .prefetch_related("issuers")
        .order_by("position", "id")
    )
    compiled = []
    for rule in rules:
        enabled = [i for i in rule.issuers.all() if i.enabled]
        ids = frozenset(i.issuer_id for i in enabled)
        platforms = preset_claim_types([(i.issuer, i.static_jwks is not None) for i in enabled])
        try:
            compiled.append(rule_compile(rule.spec(issuer_ids=ids), claim_types=platforms))
        except RuleSyntaxError as exc:
            # Fail closed: a broken rule could have been the deny that protects everything below it.
            return (), f"rule {rule.name!r} does not compile: {exc}"
    return tuple(compiled), None


def _signer(tenant: Tenant, now: datetime) -> tuple[SignerKey | None, str | None]:
    """The active key, ready to sign (a KMS key signs through KMS: nothing is read from it here).
    Unusable — undecryptable, or AWS KMS unable to make a new tenant's first key — means no
    signer: the exchange answers 503, and the key sweep makes the key once KMS can. With a
    published issuer URL, a key that the read-back of the published JWKS has not confirmed is no
    signer either (docs/endpoints.md#published-issuer-url): AWS could not verify its tokens."""
    try:
        active = signing_key_ensure_active(tenant=tenant, now=now)
        live = tenant_live_keys(tenant=tenant)
        if live is not None and active.kid not in live:
            error = f"signing key {active.kid} is not yet confirmed at the published issuer URL"
            logger.warning("tenant signing key not published", extra={"jwtex": {"tenant": tenant.slug, "error": error}})
            return None, error
        return signing_key_load(active), None
    except (KeyDecryptionError, SigningKeyUnavailable) as exc:
        error = exc.messages[0] if isinstance(exc, SigningKeyUnavailable) else str(exc)
        logger.error("tenant signing key unusable", extra={"jwtex": {"tenant": tenant.slug, "error": error}})
        return None, error


def runtime_build(*, tenant: Tenant, now: datetime) -> TenantRuntime:
    """A fresh snapshot of ``tenant`` (uncached): what its endpoints serve once the caches catch up."""
    issuers = {i.issuer_id: i.snapshot() for i in Issuer.objects.filter(tenant=tenant, enabled=True)}
    by_iss: dict[str, list[str]] = {}
    for snapshot in issuers.values():
        by_iss.setdefault(snapshot.issuer, []).append(snapshot.issuer_id)
    rules, rules_error = tenant_rules_compile(tenant=tenant)
    shadow_rules, shadow_error = (
        tenant_rules_compile(tenant=tenant, shadow=True)
        if Rule.objects.filter(tenant=tenant, shadow=True).exists()
        else (None, None)
    )
    signer, signer_error = _signer(tenant, now)
    jwks = tenant_jwks(tenant=tenant)
    issuer_url = tenant_issuer_url(tenant)
    return TenantRuntime(
        tenant_id=tenant.pk,
        slug=tenant.slug,
        version=tenant.config_version,
        issuer_url=issuer_url,
        default_audience=tenant.default_audience,
        max_token_lifetime=tenant.max_token_lifetime,
        rate_limit_per_minute=tenant.rate_limit_per_minute,
        issuers=MappingProxyType(issuers),
        issuer_ids_by_iss=MappingProxyType({k: tuple(v) for k, v in by_iss.items()}),
        rules=rules,
        rules_error=rules_error,
        shadow_rules=shadow_rules,
        shadow_error=shadow_error,
        keep_upstream_claims=tenant.keep_upstream_claims,
        signer=signer,
        signer_error=signer_error,
        jwks_json=json.dumps(jwks, separators=(",", ":")).encode(),
        discovery_json=json.dumps(tenant_discovery(tenant=tenant, jwks=jwks), separators=(",", ":")).encode(),
    )


def tenant_runtime_get(*, slug: str) -> TenantRuntime:
    """The runtime of an enabled tenant, or NotFound. Thread-safe; rebuilds at most when changed.

    While the database cannot be read, warm snapshots keep serving (the epoch is read again an
    interval later) and a tenant without one answers 503: never a 500."""
    clock = time.monotonic()
    interval = jwtex_settings.config_recheck_seconds
    if clock - _fresh.checked_at >= interval:
        _freshness_check(clock)
    runtime = _by_slug.get(slug)
    if runtime is not None:
        return runtime
    if not _SLUG.fullmatch(slug):
        # Not a slug any tenant could have (NUL bytes, 10 KiB of junk…): no query at all.
        raise NotFound("Unknown tenant.", reason="not a tenant slug")
    missing_since = _missing.get(slug)
    if missing_since is not None and clock - missing_since < jwtex_settings.config_recheck_seconds:
        raise NotFound("Unknown tenant.", reason=f"tenant {slug!r} does not exist or is disabled")
    try:
        return _built(slug, clock)
    except DatabaseError as exc:
        connection.close_if_unusable_or_obsolete()
        raise TemporarilyUnavailable(
            "The service cannot read its configuration right now; retry later.",
            reason=f"database: {type(exc).__name__}",
        ) from None


def _freshness_check(clock: float) -> None:
    """Read the epoch (one thread at a time; the others keep serving) and drop what changed."""
    if not _fresh.lock.acquire(blocking=False):
        return
    started = time.perf_counter()
    try:
        epoch = ConfigEpoch.objects.filter(pk=1).values_list("value", flat=True).first() or 0
        if epoch != _fresh.epoch or clock - _fresh.reconciled_at >= _RECONCILE_SECONDS:
            _reconcile()
            _fresh.reconciled_at = clock
        _fresh.epoch = epoch
    except DatabaseError as exc:
        connection.close_if_unusable_or_obsolete()
        logger.warning(
            "configuration not checked: database unavailable; serving warm snapshots",
            extra={"jwtex": {"error": type(exc).__name__, "tenants": len(_by_slug)}},
        )
    finally:
        _fresh.checked_at = clock
        _fresh.lock.release()
        timeline.event("configuration re-check", started, time.perf_counter())


def _reconcile() -> None:
    current = {
        slug: version for slug, version in Tenant.objects.filter(enabled=True).values_list("slug", "config_version")
    }
    with _lock:
        stale = [slug for slug, runtime in _by_slug.items() if current.get(slug) != runtime.version]
        for slug in stale:
            del _by_slug[slug]
        for slug in [slug for slug in _missing if slug in current]:
            del _missing[slug]
        _fresh.generation += 1


def _built(slug: str, clock: float) -> TenantRuntime:
    generation = _fresh.generation
    tenant = Tenant.objects.filter(slug=slug, enabled=True).first()
    if tenant is None:
        with _lock:
            if len(_missing) >= _MISSING_MAX:
                _missing.clear()
            _missing[slug] = clock
        raise NotFound("Unknown tenant.", reason=f"tenant {slug!r} does not exist or is disabled")
    runtime = runtime_build(tenant=tenant, now=timezone.now())
    with _lock:
        # A snapshot read while a comparison ran may already be stale: serve it once, keep it not.
        if generation == _fresh.generation:
            _by_slug[slug] = runtime
        _missing.pop(slug, None)
    return runtime
