"""Refreshing an issuer's key set from upstream, so that one tenant's upstream never slows
another tenant (docs/errors.md#one-tenant-never-slows-another, docs/design/upstream-fetch.md).

- The fetch (OIDC discovery, then the JWKS) is network only: no database transaction or row
  lock is ever held across it. Its result is written afterwards in one short conditional
  UPDATE (only if the issuer still names the source fetched from).
- One fetch per issuer at a time, across processes: a mark in the shared cache (per process
  without one). Whoever finds a fetch in flight does not start another.
- A failure is remembered for the cool-down: requests during it answer at once.
- ``refresh`` (tasks, the admin, commands) fetches in the caller's thread, within the 10 s
  deadline. ``refresh_within`` (the request path) fetches in a small bounded pool and waits at
  most ``JWTEX_REQUEST_FETCH_BUDGET`` (2 s); beyond it the request answers 503 while the fetch
  completes in the background and stores its result itself.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import F

from ..conf import jwtex_settings
from ..metrics import jwks_fetch_observed
from ..core.jwks import KeySet
from ..core.limits import FETCH_TOTAL_TIMEOUT
from ..invalidation import tenant_config_bump
from ..models import Issuer
from .fetch import FetchError, FetchResult, fetch_json
from .keysets import digest, remember

logger = logging.getLogger("jwtex.upstream")

# Bounds on the upstream's Cache-Control max-age: not more often than every 5 minutes, at
# least once a day (keys rotate; a day-old set is also the default staleness bound).
JWKS_MIN_MAX_AGE = 300
JWKS_MAX_MAX_AGE = 86400
DISCOVERY_PATH = "/.well-known/openid-configuration"
# Request-path fetches running in the background, per process; beyond: 503 at once.
MAX_BACKGROUND_FETCHES = 8


class Outcome(enum.Enum):
    STATIC = "static"  # nothing to fetch
    IN_FLIGHT = "in flight"  # another request or worker is fetching this issuer
    NOT_DUE = "not due"  # fresh enough, or backing off after a failure
    CHANGED = "changed"
    UNCHANGED = "unchanged"  # fetched (200 with the same keys, or 304)
    FAILED = "failed"
    TIMED_OUT = "timed out"  # the request's budget ran out; the fetch goes on in the background

    @property
    def fetched(self) -> bool:
        return self in (Outcome.CHANGED, Outcome.UNCHANGED)


class _RefreshFailed(Exception):
    """A refresh failed; the message is safe to store as ``jwks_last_error``."""


@dataclass(frozen=True)
class Source:
    """What a fetch needs to know of an issuer row: values, so the fetch touches no database."""

    pk: int
    tenant_id: int
    tenant_slug: str
    issuer_id: str
    issuer: str
    jwks_uri: str
    resolved_uri: str
    etag: str
    jwks: Mapping[str, Any] | None
    refresh_interval: int

    @classmethod
    def of(cls, row: Issuer) -> Source:
        return cls(row.pk, row.tenant_id, row.tenant.slug, row.issuer_id, row.issuer, row.jwks_uri,
                   row.jwks_resolved_uri, row.jwks_etag, row.jwks, row.jwks_refresh_interval)


@dataclass(frozen=True)
class Fetched:
    url: str = ""
    result: FetchResult | None = None
    keyset: KeySet | None = None  # None on a 304
    error: str = ""


# --------------------------------------------------------------------------- marks in the cache


def _mark_key(kind: str, pk: int) -> str:
    return f"jwtex:{kind}:{pk}"


_local_flights: set[int] = set()  # the fallback when the shared cache cannot answer
_local_lock = threading.Lock()


def _flight_take(pk: int) -> bool:
    try:
        return bool(cache.add(_mark_key("fetch", pk), uuid.uuid4().hex, timeout=int(FETCH_TOTAL_TIMEOUT) + 5))
    except Exception:  # noqa: BLE001 - the shared cache is down: single-flight within this process
        with _local_lock:
            if pk in _local_flights:
                return False
            _local_flights.add(pk)
            return True


def _flight_release(pk: int) -> None:
    with _local_lock:
        _local_flights.discard(pk)
    try:
        cache.delete(_mark_key("fetch", pk))
    except Exception:  # noqa: BLE001 - it expires by itself
        pass


def failed_recently(pk: int, now: datetime) -> bool:
    """A fetch of this issuer failed within the cool-down (on the caller's clock)."""
    try:
        until = cache.get(_mark_key("fetch-failed", pk))
    except Exception:  # noqa: BLE001
        return False
    return isinstance(until, (int, float)) and until > now.timestamp()


def _failed_mark(pk: int, now: datetime) -> None:
    cooldown = jwtex_settings.unknown_kid_cooldown
    try:
        cache.set(_mark_key("fetch-failed", pk), now.timestamp() + cooldown, timeout=max(1, int(cooldown) + 1))
    except Exception:  # noqa: BLE001 - the row's last error still backs the next refresh off
        pass


def _failed_clear(pk: int) -> None:
    try:
        cache.delete(_mark_key("fetch-failed", pk))
    except Exception:  # noqa: BLE001
        pass


# --------------------------------------------------------------------------- the fetch (network only)


def fetch(source: Source, *, deadline: float) -> Fetched:
    try:
        url, result, keyset = _fetch_jwks(source, deadline)
    except (_RefreshFailed, FetchError) as exc:
        return Fetched(error=str(exc)[:1000])
    return Fetched(url=url, result=result, keyset=keyset)


def _fetch_jwks(source: Source, deadline: float) -> tuple[str, FetchResult, KeySet | None]:
    if source.jwks_uri:
        return _fetch_jwks_from(source, source.jwks_uri, deadline)
    if source.resolved_uri:
        # Skip discovery while the JWKS URL it gave last time still works.
        try:
            return _fetch_jwks_from(source, source.resolved_uri, deadline)
        except (_RefreshFailed, FetchError) as exc:
            first_error = exc
        url = _discover_jwks_uri(source, deadline)
        if url == source.resolved_uri:
            raise first_error
        return _fetch_jwks_from(source, url, deadline)
    return _fetch_jwks_from(source, _discover_jwks_uri(source, deadline), deadline)


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _RefreshFailed("no time left for the fetch")
    return remaining


def _discover_jwks_uri(source: Source, deadline: float) -> str:
    # OpenID Connect Discovery 1.0 §4: a terminating "/" of the issuer is removed first.
    url = source.issuer.rstrip("/") + DISCOVERY_PATH
    document = fetch_json(url, timeout=_remaining(deadline)).document
    # Discovery §4.3: the issuer in the document must be exactly the one configured.
    if document.get("issuer") != source.issuer:
        raise _RefreshFailed(f"{url}: the discovery document names another issuer")
    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str) or not jwks_uri:
        raise _RefreshFailed(f"{url}: the discovery document has no jwks_uri")
    scheme = jwks_uri.split(":", 1)[0].lower()
    if scheme != "https" and not (scheme == "http" and jwtex_settings.allow_insecure_issuers):
        raise _RefreshFailed(f"{url}: the discovery document's jwks_uri is not https")
    return jwks_uri


def _fetch_jwks_from(source: Source, url: str, deadline: float) -> tuple[str, FetchResult, KeySet | None]:
    # A conditional request only for the URL the stored set and ETag came from, and only
    # when there is a stored set to keep on a 304.
    etag = source.etag if source.jwks and url == source.resolved_uri else ""
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


# --------------------------------------------------------------------------- storing the result


def _key_fingerprint(jwks: Any) -> frozenset[str] | None:
    """The keys of a JWKS, order-insensitive: a reordered or re-served set is not a change."""
    if not isinstance(jwks, Mapping) or not isinstance(jwks.get("keys"), list):
        return None
    return frozenset(json.dumps(k, sort_keys=True, separators=(",", ":")) for k in jwks["keys"])


def store(source: Source, fetched: Fetched, *, now: datetime) -> Outcome:
    """Write what a fetch found (one short conditional UPDATE): only if the row still names the
    source it was fetched from, so keys of an old URL never verify tokens for a new one."""
    row = Issuer.objects.filter(pk=source.pk, issuer=source.issuer, jwks_uri=source.jwks_uri, static_jwks__isnull=True)
    if fetched.error:
        row.update(jwks_last_error=fetched.error, jwks_last_error_at=now,
                   jwks_consecutive_failures=F("jwks_consecutive_failures") + 1)
        _failed_mark(source.pk, now)
        logger.warning("JWKS refresh failed", extra={"jwtex": {"issuer": source.issuer_id, "pk": source.pk,
                                                               "error": fetched.error}})
        jwks_fetch_observed(tenant=source.tenant_slug, issuer=source.issuer_id, outcome="failed")
        return Outcome.FAILED
    result = fetched.result
    max_age = source.refresh_interval if result.max_age is None else result.max_age
    fields: dict[str, Any] = {
        "jwks_fetched_at": now,  # a 304 confirms the set as of now
        "jwks_expires_at": now + timedelta(seconds=min(max(max_age, JWKS_MIN_MAX_AGE), JWKS_MAX_MAX_AGE)),
        "jwks_etag": result.etag[:256],
        "jwks_resolved_uri": fetched.url[:1024],
        "jwks_consecutive_failures": 0,
    }
    changed = result.status == 200 and _key_fingerprint(result.document) != _key_fingerprint(source.jwks)
    if result.status == 200:
        fields["jwks"] = result.document
    if changed:
        fields["jwks_changed_at"] = now
    with transaction.atomic():
        stored = row.update(**fields)
        if stored:
            tenant_config_bump(tenant_id=source.tenant_id)  # every process serves the new set
    _failed_clear(source.pk)
    if fetched.keyset is not None:
        remember((source.pk, digest(result.document)), fetched.keyset)  # parsed once, here
    logger.info("JWKS refreshed", extra={"jwtex": {"issuer": source.issuer_id, "pk": source.pk,
                                                   "changed": changed, "status": result.status}})
    jwks_fetch_observed(tenant=source.tenant_slug, issuer=source.issuer_id, outcome="changed" if changed else "unchanged")
    return Outcome.CHANGED if changed else Outcome.UNCHANGED


# --------------------------------------------------------------------------- refresh


def refresh_due(row: Issuer, now: datetime, max_staleness: timedelta) -> bool:
    if row.jwks_consecutive_failures and row.jwks_last_error_at:
        # Back off after a failure, so an issuer whose upstream is down is not fetched again and again.
        if now - row.jwks_last_error_at < timedelta(seconds=jwtex_settings.unknown_kid_cooldown):
            return False
    if not row.jwks or row.jwks_fetched_at is None or row.jwks_expires_at is None:
        return True
    return row.jwks_expires_at <= now or now - row.jwks_fetched_at > max_staleness


def refresh(row: Issuer, *, now: datetime, force: bool, max_staleness: timedelta) -> Outcome:
    """Fetch in the caller's thread (tasks, the admin, commands), within the 10 s deadline."""
    if row.static_jwks is not None:
        return Outcome.STATIC
    if not force and not refresh_due(row, now, max_staleness):
        return Outcome.NOT_DUE
    if not _flight_take(row.pk):
        return Outcome.IN_FLIGHT
    source = Source.of(row)
    try:
        return store(source, fetch(source, deadline=time.monotonic() + FETCH_TOTAL_TIMEOUT), now=now)
    finally:
        _flight_release(row.pk)


class _Job:
    """A request-path fetch: stored by the request if it is done within the budget, else by the
    background thread itself when it finishes."""

    def __init__(self, source: Source, now: datetime) -> None:
        self.source, self.now = source, now
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.abandoned = False
        self.fetched = Fetched(error="not fetched")

    def run(self) -> None:
        try:
            self.fetched = fetch(self.source, deadline=time.monotonic() + FETCH_TOTAL_TIMEOUT)
        finally:
            with self.lock:
                self.done.set()
                orphan = self.abandoned
            if orphan:
                try:
                    store(self.source, self.fetched, now=self.now)
                except Exception:  # noqa: BLE001 - logged; the next request or sweep fetches again
                    logger.exception("background JWKS store failed", extra={"jwtex": {"pk": self.source.pk}})
                finally:
                    connection.close()  # this pool thread's own connection
                    _finish(self.source.pk)

    def claim(self, budget: float) -> bool:
        """True when the caller should store the result; False: abandoned to the background."""
        self.done.wait(budget)
        with self.lock:
            if self.done.is_set():
                return True
            self.abandoned = True
            return False


_pool: ThreadPoolExecutor | None = None
_pool_pid = 0
_slots = threading.BoundedSemaphore(MAX_BACKGROUND_FETCHES)


def _executor() -> ThreadPoolExecutor:
    global _pool, _pool_pid
    with _local_lock:
        if _pool is None or _pool_pid != os.getpid():  # a fork (server workers) gets its own pool
            _pool, _pool_pid = ThreadPoolExecutor(MAX_BACKGROUND_FETCHES, thread_name_prefix="jwtex-fetch"), os.getpid()
        return _pool


def _finish(pk: int) -> None:
    _flight_release(pk)
    _slots.release()


def refresh_within(row: Issuer, *, now: datetime, force: bool, max_staleness: timedelta) -> Outcome:
    """Fetch for a request: at most ``JWTEX_REQUEST_FETCH_BUDGET`` of its time
    (docs/design/upstream-fetch.md#the-request-budget)."""
    if row.static_jwks is not None:
        return Outcome.STATIC
    if not force and not refresh_due(row, now, max_staleness):
        return Outcome.NOT_DUE
    if not _flight_take(row.pk):
        return Outcome.IN_FLIGHT
    if failed_recently(row.pk, now):
        # The caller looked before a fetch elsewhere failed and let go of the flight: that
        # failure holds for the whole cool-down here too (one upstream connection per window).
        _flight_release(row.pk)
        return Outcome.FAILED
    if not _slots.acquire(blocking=False):
        _flight_release(row.pk)
        return Outcome.IN_FLIGHT  # this process already waits on enough upstreams
    job = _Job(Source.of(row), now)
    try:
        _executor().submit(job.run)
    except RuntimeError:  # the interpreter is shutting down
        _finish(row.pk)
        return Outcome.FAILED
    if not job.claim(jwtex_settings.request_fetch_budget):
        logger.warning("upstream fetch over the request budget; finishing in the background",
                       extra={"jwtex": {"issuer": row.issuer_id, "pk": row.pk}})
        return Outcome.TIMED_OUT
    try:
        return store(job.source, job.fetched, now=now)
    finally:
        _finish(row.pk)
