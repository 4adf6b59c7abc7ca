"""An issuer's key set: fetched from upstream, kept in the ``Issuer`` row, parsed once per process.

- ``issuer_jwks_refresh`` fetches (OIDC discovery, then the JWKS) and stores the last good set
  with its health fields. Periodic tasks call it; so does the request path, on first need.
- ``issuer_keys_get`` is the request path's selector: the stored set while it is not older
  than the staleness bound, else one refresh, else ``TemporarilyUnavailable`` (fail closed).
- ``issuer_keys_refetch_for_unknown_kid``: at most one fetch per issuer per cool-down across
  processes, so a flood of tokens with made-up ``kid``s cannot flood the upstream (SPEC §4).

Every refresh of one issuer, discovery and JWKS together, gives up within
``FETCH_TOTAL_TIMEOUT`` (SPEC §3: 10 s).
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping

from django.core.cache import cache
from django.db import transaction

from ..conf import jwtex_settings
from ..core.errors import TemporarilyUnavailable
from ..core.jwks import KeySet, kids_of
from ..core.limits import FETCH_TOTAL_TIMEOUT
from ..core.values import IssuerSnapshot
from ..models import Issuer
from .fetch import FetchError, FetchResult, fetch_json

__all__ = [
    "FetchOutcome",
    "IssuerKeys",
    "issuer_jwks_refresh",
    "issuer_keys_fetch_now",
    "issuer_keys_forget_if_source_changed",
    "issuer_keys_get",
    "issuer_keys_refetch_for_unknown_kid",
]

logger = logging.getLogger(__name__)

# Bounds on the upstream's Cache-Control max-age: not more often than every 5 minutes, at
# least once a day (keys rotate; a day-old set is also the default staleness bound).
JWKS_MIN_MAX_AGE = 300
JWKS_MAX_MAX_AGE = 86400
DISCOVERY_PATH = "/.well-known/openid-configuration"

# The fields a refresh writes (and a selector reads back).
JWKS_FIELDS = (
    "jwks",
    "jwks_fetched_at",
    "jwks_expires_at",
    "jwks_etag",
    "jwks_resolved_uri",
    "jwks_changed_at",
    "jwks_last_error",
    "jwks_last_error_at",
    "jwks_consecutive_failures",
)


@dataclass(frozen=True)
class IssuerKeys:
    keys: KeySet
    fetched_at: datetime | None  # None for a static JWKS
    stale: bool  # past its expiry (a refresh is due) but within the staleness bound


def max_staleness() -> timedelta:
    """How long the last good set may be used after it was fetched (or confirmed by a 304)."""
    return timedelta(seconds=jwtex_settings.jwks_max_staleness)


# ------------------------------------------------------------------------ per-process parse cache

# (issuer pk, digest of the JWKS document) → KeySet: a set is parsed once per change and
# process, not once per request. Bounded; a lock keeps eviction safe across threads.
_KEYSETS: dict[tuple[int, str], KeySet] = {}
_KEYSETS_MAX = 512
_KEYSETS_LOCK = threading.Lock()


def _digest(jwks: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(jwks, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _remember(key: tuple[int, str], keyset: KeySet) -> None:
    with _KEYSETS_LOCK:
        while len(_KEYSETS) >= _KEYSETS_MAX:
            _KEYSETS.pop(next(iter(_KEYSETS)))
        _KEYSETS[key] = keyset


# The exchange path hands us the same JWKS object (held by the tenant runtime's issuer
# snapshot) on every request: recognise it by identity first, so the warm path does not
# even hash the document. The entry keeps the object alive, so its id() stays unique.
_BY_IDENTITY: dict[int, tuple[Any, KeySet]] = {}


def _keyset(*, issuer_pk: int, jwks: Mapping[str, Any]) -> KeySet:
    """``KeySet.from_jwks`` (ValueError on a non-JWKS document), memoised per process."""
    known = _BY_IDENTITY.get(id(jwks))
    if known is not None and known[0] is jwks:
        return known[1]
    key = (issuer_pk, _digest(jwks))
    keyset = _KEYSETS.get(key)
    if keyset is None:
        keyset = KeySet.from_jwks(jwks)
        _remember(key, keyset)
    with _KEYSETS_LOCK:
        while len(_BY_IDENTITY) >= _KEYSETS_MAX:
            _BY_IDENTITY.pop(next(iter(_BY_IDENTITY)))
        _BY_IDENTITY[id(jwks)] = (jwks, keyset)
    return keyset


def _key_fingerprint(jwks: Any) -> frozenset[str] | None:
    """The keys of a JWKS, order-insensitive: a reordered or re-served set is not a change."""
    if not isinstance(jwks, Mapping) or not isinstance(jwks.get("keys"), list):
        return None
    return frozenset(json.dumps(k, sort_keys=True, separators=(",", ":")) for k in jwks["keys"])


# ------------------------------------------------------------------------ refresh


class _Outcome(enum.Enum):
    STATIC = "static"  # nothing to fetch
    LOCKED = "locked"  # another worker is refreshing this issuer
    NOT_DUE = "not_due"
    CHANGED = "changed"
    UNCHANGED = "unchanged"  # fetched (200 with the same keys, or 304)
    FAILED = "failed"


class _RefreshFailed(Exception):
    """A refresh failed; the message is safe to store as ``jwks_last_error``."""


def issuer_jwks_refresh(*, issuer: Issuer | IssuerSnapshot, now: datetime, force: bool = False, wait: bool = False) -> bool:
    """Fetch the issuer's JWKS if due (or ``force``); True when the stored key set changed.

    Takes the issuer's row lock for the fetch. By default a row locked by another worker is
    skipped (periodic tasks: CONVENTIONS §8); ``wait=True`` waits for that worker instead and
    then re-checks whether a fetch is still due (request path: the first requests for a new
    issuer should all get the keys one of them fetched, not 503).
    """
    return _refresh(issuer=issuer, now=now, force=force, wait=wait) is _Outcome.CHANGED


def _refresh(*, issuer: Issuer | IssuerSnapshot, now: datetime, force: bool, wait: bool) -> _Outcome:
    if issuer.static_jwks is not None:
        return _Outcome.STATIC
    with transaction.atomic():
        rows = Issuer.objects.select_for_update(skip_locked=not wait, of=("self",)).filter(pk=issuer.pk)
        locked = rows.first()
        if locked is None:
            return _Outcome.LOCKED
        if locked.static_jwks is not None:
            return _Outcome.STATIC
        if not force and not _refresh_due(locked, now):
            return _Outcome.NOT_DUE
        return _refresh_locked(locked, now)


def _refresh_due(issuer: Issuer, now: datetime) -> bool:
    if issuer.jwks_consecutive_failures and issuer.jwks_last_error_at:
        # Back off after a failure, so that requests for an issuer whose upstream is down
        # answer 503 at once rather than each waiting for its own timeout.
        if now - issuer.jwks_last_error_at < timedelta(seconds=jwtex_settings.unknown_kid_cooldown):
            return False
    if not issuer.jwks or issuer.jwks_fetched_at is None or issuer.jwks_expires_at is None:
        return True
    return issuer.jwks_expires_at <= now or now - issuer.jwks_fetched_at > max_staleness()


def _refresh_locked(issuer: Issuer, now: datetime) -> _Outcome:
    deadline = time.monotonic() + FETCH_TOTAL_TIMEOUT
    try:
        url, result, keyset = _fetch_jwks(issuer, deadline)
    except (_RefreshFailed, FetchError) as exc:
        issuer.jwks_last_error = str(exc)[:1000]
        issuer.jwks_last_error_at = now
        issuer.jwks_consecutive_failures += 1
        issuer.save(update_fields=["jwks_last_error", "jwks_last_error_at", "jwks_consecutive_failures"])
        logger.warning(
            "JWKS refresh failed for issuer %s (pk %s, %d in a row): %s",
            issuer.issuer_id,
            issuer.pk,
            issuer.jwks_consecutive_failures,
            issuer.jwks_last_error,
        )
        return _Outcome.FAILED

    max_age = issuer.jwks_refresh_interval if result.max_age is None else result.max_age
    max_age = min(max(max_age, JWKS_MIN_MAX_AGE), JWKS_MAX_MAX_AGE)
    changed = False
    if result.status == 200:
        changed = _key_fingerprint(result.document) != _key_fingerprint(issuer.jwks)
        issuer.jwks = result.document
        if changed:
            issuer.jwks_changed_at = now
    issuer.jwks_fetched_at = now  # a 304 confirms the set as of now
    issuer.jwks_expires_at = now + timedelta(seconds=max_age)
    issuer.jwks_etag = result.etag[:256]
    issuer.jwks_resolved_uri = url[:1024]
    issuer.jwks_consecutive_failures = 0
    issuer.save(update_fields=list(JWKS_FIELDS))
    if keyset is not None:
        _remember((issuer.pk, _digest(result.document)), keyset)  # parsed once, here
    logger.info(
        "JWKS refreshed for issuer %s (pk %s): %s, %s",
        issuer.issuer_id,
        issuer.pk,
        "changed" if changed else "unchanged",
        "304" if result.status == 304 else f"{len(keyset.keys) if keyset else 0} usable keys",
    )
    return _Outcome.CHANGED if changed else _Outcome.UNCHANGED


def _fetch_jwks(issuer: Issuer, deadline: float) -> tuple[str, FetchResult, KeySet | None]:
    """(the JWKS URL used, the fetch result, its parsed KeySet or None on 304)."""
    if issuer.jwks_uri:
        return _fetch_jwks_from(issuer, issuer.jwks_uri, deadline)
    if issuer.jwks_resolved_uri:
        # Skip discovery while the JWKS URL it gave last time still works.
        try:
            return _fetch_jwks_from(issuer, issuer.jwks_resolved_uri, deadline)
        except (_RefreshFailed, FetchError) as exc:
            first_error = exc
        url = _discover_jwks_uri(issuer, deadline)
        if url == issuer.jwks_resolved_uri:
            raise first_error
        return _fetch_jwks_from(issuer, url, deadline)
    return _fetch_jwks_from(issuer, _discover_jwks_uri(issuer, deadline), deadline)


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _RefreshFailed("no time left for the fetch")
    return remaining


def _discover_jwks_uri(issuer: Issuer, deadline: float) -> str:
    # OpenID Connect Discovery 1.0 §4: a terminating "/" of the issuer is removed first.
    url = issuer.issuer.rstrip("/") + DISCOVERY_PATH
    document = fetch_json(url, timeout=_remaining(deadline)).document
    # Discovery §4.3: the issuer in the document must be exactly the one configured.
    if document.get("issuer") != issuer.issuer:
        raise _RefreshFailed(f"{url}: the discovery document names another issuer")
    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str) or not jwks_uri:
        raise _RefreshFailed(f"{url}: the discovery document has no jwks_uri")
    scheme = jwks_uri.split(":", 1)[0].lower()
    if scheme != "https" and not (scheme == "http" and jwtex_settings.allow_insecure_issuers):
        raise _RefreshFailed(f"{url}: the discovery document's jwks_uri is not https")
    return jwks_uri


def _fetch_jwks_from(issuer: Issuer, url: str, deadline: float) -> tuple[str, FetchResult, KeySet | None]:
    # A conditional request only for the URL the stored set and ETag came from, and only
    # when there is a stored set to keep on a 304.
    etag = issuer.jwks_etag if issuer.jwks and url == issuer.jwks_resolved_uri else ""
    result = fetch_json(url, etag=etag, timeout=_remaining(deadline))
    if result.status == 304:
        return url, result, None
    try:
        keyset = KeySet.from_jwks(result.document)
    except (ValueError, TypeError) as exc:
        raise _RefreshFailed(f"{url}: not a JWKS ({exc})") from None
    if not keyset.keys:
        raise _RefreshFailed(f"{url}: the JWKS has no usable signature key")
    return url, result, keyset


# ------------------------------------------------------------------------ selectors


def _stored_keys(issuer: IssuerSnapshot, now: datetime) -> IssuerKeys | None:
    """The stored set if it exists, parses, has a key and is within the staleness bound."""
    if not issuer.jwks or issuer.jwks_fetched_at is None:
        return None
    if now - issuer.jwks_fetched_at > max_staleness():
        return None
    try:
        keyset = _keyset(issuer_pk=issuer.pk, jwks=issuer.jwks)
    except (ValueError, TypeError):
        return None
    if not keyset.keys:
        return None
    stale = issuer.jwks_expires_at is None or issuer.jwks_expires_at <= now
    return IssuerKeys(keys=keyset, fetched_at=issuer.jwks_fetched_at, stale=stale)


def _static_keys(issuer: IssuerSnapshot) -> IssuerKeys:
    try:
        keyset = _keyset(issuer_pk=issuer.pk, jwks=issuer.static_jwks)
    except (ValueError, TypeError):
        keyset = None
    if keyset is None or not keyset.keys:
        raise TemporarilyUnavailable(reason=f"issuer {issuer.pk}: the static JWKS has no usable key")
    return IssuerKeys(keys=keyset, fetched_at=None, stale=False)


def _reloaded(issuer: IssuerSnapshot) -> Issuer:
    """The row as it is now; the caller's snapshot (perhaps shared by a runtime cache) is left alone."""
    return Issuer.objects.get(pk=issuer.pk)


def issuer_keys_get(*, issuer: IssuerSnapshot, now: datetime) -> IssuerKeys:
    """The keys to verify this issuer's tokens with; ``TemporarilyUnavailable`` (503) when none can be had."""
    if issuer.static_jwks is not None:
        return _static_keys(issuer)
    keys = _stored_keys(issuer, now)
    if keys is not None:
        return keys
    # No keys yet, or beyond the staleness bound: the row may be newer than this snapshot;
    # if not, fetch now (waiting for a worker that is already fetching).
    current = _reloaded(issuer)
    keys = _stored_keys(current.snapshot(), now)
    if keys is None:
        _refresh(issuer=current, now=now, force=False, wait=True)
        current = _reloaded(issuer)
        keys = _stored_keys(current.snapshot(), now)
    if keys is None:
        raise TemporarilyUnavailable(
            reason=f"issuer {issuer.pk}: no usable keys ({current.jwks_last_error or 'none fetched yet'})"
        )
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
    """Refetch at most once per issuer per cool-down, across processes (SPEC §4).

    The keys after the fetch, or None when no fetch happened (cool-down, static JWKS, row
    locked) or it failed.
    """
    if issuer.static_jwks is not None:
        return None
    if not _cooldown_take(f"jwtex:kid-refetch:{issuer.pk}", now=now):
        return None
    outcome = _refresh(issuer=issuer, now=now, force=True, wait=True)
    if outcome not in (_Outcome.CHANGED, _Outcome.UNCHANGED):
        return None
    return _stored_keys(_reloaded(issuer).snapshot(), now)


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
    changed = issuer_jwks_refresh(issuer=issuer, now=now, force=True, wait=True)
    current = Issuer.objects.get(pk=issuer.pk)
    failed = current.jwks_last_error_at is not None and current.jwks_last_error_at >= now and (
        current.jwks_fetched_at is None or current.jwks_fetched_at < now
    )
    if failed:
        return FetchOutcome(False, False, False, kids_of(current.jwks), current.jwks_last_error)
    return FetchOutcome(True, False, changed, kids_of(current.jwks), "")
