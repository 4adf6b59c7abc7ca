"""An issuer's key set, as the exchange and the admin ask for it (SPEC §4).

- ``issuer_keys_get`` is the request path's selector: the snapshot's stored set while it is
  within the staleness bound; else the row's (another process may have fetched); else one fetch
  made on the request's behalf within its budget (exchange.upstream.refresh) — or 503 at once
  when that fetch is in flight elsewhere or failed within the cool-down (fail closed).
- ``issuer_keys_refetch_for_unknown_kid``: at most one fetch per issuer per cool-down across
  processes, so a flood of tokens with made-up ``kid``s cannot flood the upstream (SPEC §4).
- ``issuer_jwks_refresh`` (tasks, commands) and ``issuer_keys_fetch_now`` (the admin) fetch in
  the caller's thread, within the 10 s deadline.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.cache import cache
from django.db import DatabaseError, connection

from ..conf import jwtex_settings
from ..core.errors import TemporarilyUnavailable
from ..core.jwks import KeySet, kids_of
from ..core.values import IssuerSnapshot
from ..models import Issuer
from . import refresh as refresher
from .keysets import keyset_of
from .refresh import Outcome

__all__ = [
    "FetchOutcome",
    "IssuerKeys",
    "issuer_jwks_refresh",
    "issuer_keys_fetch_now",
    "issuer_keys_forget_if_source_changed",
    "issuer_keys_get",
    "issuer_keys_refetch_for_unknown_kid",
    "max_staleness",
]


@dataclass(frozen=True)
class IssuerKeys:
    keys: KeySet
    fetched_at: datetime | None  # None for a static JWKS
    stale: bool  # past its expiry (a refresh is due) but within the staleness bound


def max_staleness() -> timedelta:
    """How long the last good set may be used after it was fetched (or confirmed by a 304)."""
    return timedelta(seconds=jwtex_settings.jwks_max_staleness)


def issuer_jwks_refresh(*, issuer: Issuer, now: datetime, force: bool = False) -> bool:
    """Fetch the issuer's JWKS if due (or ``force``); True when the stored key set changed. An
    issuer another process is fetching right now is skipped (CONVENTIONS §8)."""
    current = Issuer.objects.filter(pk=issuer.pk).first()  # as it is now: the caller's copy may be old
    if current is None:
        return False
    return refresher.refresh(current, now=now, force=force, max_staleness=max_staleness()) is Outcome.CHANGED


# ------------------------------------------------------------------------ selectors


def _parsed(issuer: IssuerSnapshot, slot: str, jwks) -> KeySet:
    """The snapshot's key set, parsed once per snapshot (then held by it)."""
    keyset = issuer.parsed_keys.get(slot)
    if keyset is None:
        keyset = issuer.parsed_keys[slot] = keyset_of(issuer_pk=issuer.pk, jwks=jwks)
    return keyset


def _stored_keys(issuer: IssuerSnapshot, now: datetime) -> IssuerKeys | None:
    """The stored set if it exists, parses, has a key and is within the staleness bound."""
    if not issuer.jwks or issuer.jwks_fetched_at is None:
        return None
    if now - issuer.jwks_fetched_at > max_staleness():
        return None
    try:
        keyset = _parsed(issuer, "stored", issuer.jwks)
    except (ValueError, TypeError):
        return None
    if not keyset.keys:
        return None
    stale = issuer.jwks_expires_at is None or issuer.jwks_expires_at <= now
    return IssuerKeys(keys=keyset, fetched_at=issuer.jwks_fetched_at, stale=stale)


def _static_keys(issuer: IssuerSnapshot) -> IssuerKeys:
    try:
        keyset = _parsed(issuer, "static", issuer.static_jwks)
    except (ValueError, TypeError):
        keyset = None
    if keyset is None or not keyset.keys:
        raise TemporarilyUnavailable(reason=f"issuer {issuer.pk}: the static JWKS has no usable key")
    return IssuerKeys(keys=keyset, fetched_at=None, stale=False)


def _reloaded(issuer: IssuerSnapshot) -> Issuer:
    """The row as it is now; the caller's snapshot (perhaps shared by a runtime cache) is left alone."""
    return Issuer.objects.get(pk=issuer.pk)


_UNAVAILABLE = "The upstream issuer's keys are unavailable; retry later."


def issuer_keys_get(*, issuer: IssuerSnapshot, now: datetime, fetch: bool = True) -> IssuerKeys:
    """The keys to verify this issuer's tokens with; ``TemporarilyUnavailable`` (503) when none
    can be had within the request's budget — or, with ``fetch=False``, without fetching."""
    if issuer.static_jwks is not None:
        return _static_keys(issuer)
    keys = _stored_keys(issuer, now)
    if keys is not None:
        return keys
    if not fetch:
        raise TemporarilyUnavailable("The upstream issuer's keys are not stored, and nothing is fetched here.",
                                     reason=f"issuer {issuer.pk}: no usable stored keys; fetching was not allowed")
    if refresher.failed_recently(issuer.pk, now):
        raise TemporarilyUnavailable(reason=f"issuer {issuer.pk}: the last fetch failed within the cool-down")
    try:
        # The row may be newer than this snapshot (another process fetched); if not, fetch now.
        current = _reloaded(issuer)
        keys = _stored_keys(current.snapshot(), now)
        if keys is not None:
            return keys
        outcome = refresher.refresh_within(current, now=now, force=False, max_staleness=max_staleness())
        if outcome.fetched or outcome is Outcome.FAILED:
            current = _reloaded(issuer)
        keys = _stored_keys(current.snapshot(), now) if outcome.fetched else None
    except DatabaseError as exc:
        connection.close_if_unusable_or_obsolete()
        raise TemporarilyUnavailable(reason=f"issuer {issuer.pk}: database: {type(exc).__name__}") from None
    if keys is None:
        detail = current.jwks_last_error if outcome is Outcome.FAILED else outcome.value
        raise TemporarilyUnavailable(reason=f"issuer {issuer.pk}: no usable keys ({detail or 'none fetched yet'})")
    return keys


def _cooldown_take(key: str, *, now: datetime) -> bool:
    """Take the issuer's refetch slot if its cool-down (on the caller's clock) is over. The mark
    holds the time it ends; the cache's own expiry only cleans up."""
    cooldown = jwtex_settings.unknown_kid_cooldown
    ends = now.timestamp() + cooldown
    timeout = max(1, math.ceil(cooldown))
    if cache.add(key, ends, timeout=timeout):
        return True
    current = cache.get(key)
    if isinstance(current, (int, float)) and current > now.timestamp():
        return False
    cache.set(key, ends, timeout=timeout)
    return True


def issuer_keys_refetch_for_unknown_kid(*, issuer: IssuerSnapshot, now: datetime) -> IssuerKeys | None:
    """Refetch at most once per issuer per cool-down, across processes (SPEC §4), within the
    request's budget. The keys after the fetch, or None when no fetch happened (cool-down,
    static JWKS, a fetch in flight elsewhere) or it failed; 503 when the budget ran out."""
    if issuer.static_jwks is not None:
        return None
    if not _cooldown_take(f"jwtex:kid-refetch:{issuer.pk}", now=now):
        return None
    try:
        outcome = refresher.refresh_within(_reloaded(issuer), now=now, force=True, max_staleness=max_staleness())
        if outcome is Outcome.TIMED_OUT:
            raise TemporarilyUnavailable(reason=f"issuer {issuer.pk}: refetch over the request budget")
        return _stored_keys(_reloaded(issuer).snapshot(), now) if outcome.fetched else None
    except DatabaseError as exc:
        connection.close_if_unusable_or_obsolete()
        raise TemporarilyUnavailable(reason=f"issuer {issuer.pk}: database: {type(exc).__name__}") from None


# The upstream keys cached on an issuer row and where they came from. When what the keys
# are fetched from changes, keys cached from the old source must not verify tokens for the
# new one: config apply and the admin both call this before saving.
ISSUER_KEY_CACHE_FIELDS = ("jwks", "jwks_fetched_at", "jwks_expires_at", "jwks_etag", "jwks_resolved_uri")
ISSUER_KEY_SOURCE_FIELDS = ("issuer", "jwks_uri", "static_jwks")


def issuer_keys_forget_if_source_changed(*, issuer: Issuer, changed: Iterable[str]) -> list[str]:
    """Reset ``issuer``'s cached keys (in memory, not saved) if a key-source field is among
    ``changed``; returns the fields it reset, for ``save(update_fields=…)``."""
    if not set(changed) & set(ISSUER_KEY_SOURCE_FIELDS):
        return []
    for name in ISSUER_KEY_CACHE_FIELDS:
        setattr(issuer, name, Issuer._meta.get_field(name).get_default())
    return list(ISSUER_KEY_CACHE_FIELDS)


# --- "fetch keys now" (the admin's button) ---------------------------------------------------


@dataclass(frozen=True)
class FetchOutcome:
    ok: bool
    static: bool
    changed: bool
    kids: tuple[str, ...]
    error: str


def issuer_keys_fetch_now(*, issuer: Issuer, now: datetime) -> FetchOutcome:
    """Refresh the issuer's JWKS at once (waiting for a worker that is already at it) and say
    which keys are stored now, or why the fetch failed. A failure keeps the last good set."""
    if issuer.static_jwks is not None:
        return FetchOutcome(True, True, False, kids_of(issuer.static_jwks), "")
    outcome = refresher.refresh(Issuer.objects.get(pk=issuer.pk), now=now, force=True, max_staleness=max_staleness())
    if outcome is Outcome.IN_FLIGHT:
        return FetchOutcome(False, False, False, kids_of(issuer.jwks), "a fetch of this issuer is under way; try again")
    changed = outcome is Outcome.CHANGED
    current = Issuer.objects.get(pk=issuer.pk)
    failed = current.jwks_last_error_at is not None and current.jwks_last_error_at >= now and (
        current.jwks_fetched_at is None or current.jwks_fetched_at < now
    )
    if failed:
        return FetchOutcome(False, False, False, kids_of(current.jwks), current.jwks_last_error)
    return FetchOutcome(True, False, changed, kids_of(current.jwks), "")
