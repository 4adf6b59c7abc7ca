"""An issuer's key set, as the exchange and the admin ask for it (docs/errors.md#bursts,
docs/verification.md#unknown-kid).

- ``issuer_keys_get`` is the request path's selector: the snapshot's stored set while it is
  within the staleness bound; else the row's (another process may have fetched); else the keys
  of one fetch made on the request's behalf, or of the fetch of this issuer already in flight
  (in this process or another), waited for until the request's deadline
  (``JWTEX_REQUEST_FETCH_BUDGET``). 503 when that deadline passes, when the issuer's last fetch
  failed within the cool-down (at once), or when half of the process's request threads already
  wait on upstream fetches (at once): fail closed (exchange.upstream.flights).
- ``issuer_keys_refetch_for_unknown_kid``: at most one refetch per issuer per cool-down across
  processes, so a flood of tokens with made-up ``kid``s cannot flood the upstream (docs/verification.md); the
  tokens that meet it in flight wait for it, so a burst at an upstream key rotation verifies.
- ``issuer_jwks_refresh`` (tasks, commands) and ``issuer_keys_fetch_now`` (the admin) fetch in
  the caller's thread, within the 10 s deadline.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, connection

from ..conf import jwtex_settings
from ..core.errors import TemporarilyUnavailable
from ..core.jwks import KeySet, kids_of
from ..core.values import IssuerSnapshot
from ..models import Issuer
from . import flights, refresh as refresher
from .flights import KidRefetch
from .keysets import jwks_digest, keyset_of
from .refresh import Outcome
from .request_fetch import jwks_refetch_within, jwks_refresh_within, request_deadline

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
    jwks: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)  # the stored document parsed


def max_staleness() -> timedelta:
    """How long the last good set may be used after it was fetched (or confirmed by a 304)."""
    return timedelta(seconds=jwtex_settings.jwks_max_staleness)


def issuer_jwks_refresh(*, issuer: Issuer, now: datetime, force: bool = False) -> bool:
    """Fetch the issuer's JWKS if due (or ``force``); True when the stored key set changed. An
    issuer another process is fetching right now is skipped (docs/design/layout.md#tasks-are-thin-and-idempotent)."""
    current = Issuer.objects.filter(pk=issuer.pk).first()  # as it is now: the caller's copy may be old
    if current is None or jwtex_settings.upstream_issuer_problem(current.issuer):
        # an issuer the operators' list refuses is never contacted (docs/operators.md#allowed-upstream-issuers)
        return False
    return refresher.jwks_refresh(current, now=now, force=force, max_staleness=max_staleness()) is Outcome.CHANGED


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
    return IssuerKeys(keys=keyset, fetched_at=issuer.jwks_fetched_at, stale=stale, jwks=issuer.jwks)


def _static_keys(issuer: IssuerSnapshot) -> IssuerKeys:
    try:
        keyset = _parsed(issuer, "static", issuer.static_jwks)
    except (ValueError, TypeError):
        keyset = None
    if keyset is None or not keyset.keys:
        raise TemporarilyUnavailable(reason=f"issuer {issuer.pk}: the static JWKS has no usable key")
    return IssuerKeys(keys=keyset, fetched_at=None, stale=False)


def _reloaded(issuer: IssuerSnapshot) -> Issuer:
    """The row as it is now (one read by primary key, no transaction); the caller's snapshot
    (perhaps shared by a runtime cache) is left alone."""
    return Issuer.objects.get(pk=issuer.pk)


_UNAVAILABLE = "The upstream issuer's keys are unavailable; retry later."
_WHY = {
    Outcome.BUSY: "this process already waits on enough upstream fetches",
    Outcome.TIMED_OUT: "the fetch took longer than the request's budget",
    Outcome.WAITED: "the fetch waited for stored none",
}


def issuer_keys_get(
    *, issuer: IssuerSnapshot, now: datetime, deadline: float | None = None, fetch: bool = True
) -> IssuerKeys:
    """The keys to verify this issuer's tokens with; ``TemporarilyUnavailable`` (503) when none
    can be had by ``deadline`` (``time.monotonic()``; default: the request's budget from now) —
    or, with ``fetch=False``, without fetching. Without usable stored keys it fetches them, or
    waits for the fetch in flight (docs/errors.md#bursts)."""
    if issuer.static_jwks is not None:
        return _static_keys(issuer)
    keys = _stored_keys(issuer, now)
    if keys is not None:
        return keys
    if not fetch:
        raise TemporarilyUnavailable(
            "The upstream issuer's keys are not stored, and nothing is fetched here.",
            reason=f"issuer {issuer.pk}: no usable stored keys; fetching was not allowed",
        )
    if flights.failed_recently(issuer.pk, now):
        raise TemporarilyUnavailable(reason=f"issuer {issuer.pk}: the last fetch failed within the cool-down")
    try:
        # The row may be newer than this snapshot (another process fetched); if not, fetch now.
        current = _reloaded(issuer)
        keys = _stored_keys(current.snapshot(), now)
        if keys is not None:
            return keys
        outcome = jwks_refresh_within(current, now=now, force=False, max_staleness=max_staleness(), deadline=deadline)
        if outcome.fetched or outcome in (Outcome.WAITED, Outcome.FAILED):
            current = _reloaded(issuer)  # what the fetch made or waited for stored
            keys = _stored_keys(current.snapshot(), now)
    except DatabaseError as exc:
        connection.close_if_unusable_or_obsolete()
        raise TemporarilyUnavailable(reason=f"issuer {issuer.pk}: database: {type(exc).__name__}") from None
    if keys is None:
        failed = outcome is Outcome.FAILED or (outcome is Outcome.WAITED and flights.failed_recently(issuer.pk, now))
        detail = current.jwks_last_error if failed else _WHY.get(outcome, outcome.value)
        raise TemporarilyUnavailable(reason=f"issuer {issuer.pk}: no usable keys ({detail or 'none fetched yet'})")
    return keys


def issuer_keys_refetch_for_unknown_kid(
    *, issuer: IssuerSnapshot, now: datetime, tried: IssuerKeys | None = None, deadline: float | None = None
) -> IssuerKeys | None:
    """The issuer's keys after the refetch for an unknown ``kid`` (docs/errors.md#bursts): at most one per
    issuer per cool-down across processes, made by this request or waited for (a burst of tokens
    signed by a new key all wait for the one refetch). None when the keys stored then are the
    ``tried`` ones (default: the snapshot's): the ``kid`` is unknown, 401. ``TemporarilyUnavailable``
    (503) when ``deadline`` (default: the request's budget from now) passes first, or the issuer's
    last fetch failed within the cool-down."""
    if issuer.static_jwks is not None:
        return None
    tried_jwks = tried.jwks if tried is not None else issuer.jwks
    tried_digest = jwks_digest(tried_jwks) if tried_jwks else None
    deadline = request_deadline() if deadline is None else deadline
    try:
        for _ in range(3):  # a fetch waited for that was not this refetch (a sweep's): once more
            done = flights.kid_refetched(issuer.pk, now)
            if done is not None:
                return _keys_after_refetch(issuer, done, now=now, tried_digest=tried_digest)
            if flights.failed_recently(issuer.pk, now):
                break
            outcome = jwks_refetch_within(issuer.pk, load=lambda: _reloaded(issuer), now=now, deadline=deadline)
            if outcome is Outcome.STATIC:
                return None
            if outcome in (Outcome.BUSY, Outcome.TIMED_OUT):
                raise TemporarilyUnavailable(reason=f"issuer {issuer.pk}: unknown kid: {_WHY[outcome]}")
            if outcome is not Outcome.WAITED:
                break  # this request refetched (or found a failure): what it stored decides
        done = flights.kid_refetched(issuer.pk, now)
        return _keys_after_refetch(issuer, done or KidRefetch(digest=None), now=now, tried_digest=tried_digest)
    except DatabaseError as exc:
        connection.close_if_unusable_or_obsolete()
        raise TemporarilyUnavailable(reason=f"issuer {issuer.pk}: database: {type(exc).__name__}") from None


def _keys_after_refetch(
    issuer: IssuerSnapshot, done: KidRefetch, *, now: datetime, tried_digest: str | None
) -> IssuerKeys | None:
    """The keys stored after the refetch ``done``: None when they are the ones tried; read from the
    row only when they may differ (a flood of made-up ``kid``s costs no database read)."""
    if done.digest is None and flights.failed_recently(issuer.pk, now):
        raise TemporarilyUnavailable(
            reason=f"issuer {issuer.pk}: unknown kid: the last fetch failed within the cool-down"
        )
    if done.digest is not None and done.digest == tried_digest:
        return None
    keys = _stored_keys(_reloaded(issuer).snapshot(), now)
    if keys is None:
        raise TemporarilyUnavailable(reason=f"issuer {issuer.pk}: unknown kid: no usable keys stored after the refetch")
    return None if jwks_digest(keys.jwks) == tried_digest else keys


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
    outcome = refresher.jwks_refresh(
        Issuer.objects.get(pk=issuer.pk), now=now, force=True, max_staleness=max_staleness()
    )
    if outcome is Outcome.IN_FLIGHT:
        return FetchOutcome(False, False, False, kids_of(issuer.jwks), "a fetch of this issuer is under way; try again")
    changed = outcome is Outcome.CHANGED
    current = Issuer.objects.get(pk=issuer.pk)
    failed = (
        current.jwks_last_error_at is not None
        and current.jwks_last_error_at >= now
        and (current.jwks_fetched_at is None or current.jwks_fetched_at < now)
    )
    if failed:
        return FetchOutcome(False, False, False, kids_of(current.jwks), current.jwks_last_error)
    return FetchOutcome(True, False, changed, kids_of(current.jwks), "")
