"""Refreshing an issuer's key set from upstream, so that one tenant's upstream never slows
another tenant (docs/errors.md#bursts).

- The fetch (OIDC discovery, then the JWKS) is network only: no database transaction or row
  lock is ever held across it. Its result is written afterwards in one short conditional
  UPDATE (only if the issuer still names the source fetched from).
- One fetch per issuer at a time, across processes (exchange.upstream.flights). Whoever finds a
  fetch in flight does not start another: a task or the admin skips it, a request waits for it.
- A failure is remembered for the cool-down: requests during it answer at once.
- ``refresh`` (tasks, the admin, commands) fetches in the caller's thread, within the 10 s
  deadline. ``jwks_refresh_within`` and ``jwks_refetch_within`` (the request path) fetch in a small bounded
  pool, or wait for the fetch in flight, until the request's deadline
  (``JWTEX_REQUEST_FETCH_BUDGET``, 2 s); beyond it the request answers 503 while the fetch
  completes in the background and stores its result itself.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import F

from ..conf import jwtex_settings
from ..metrics import jwks_fetch_observed
from ..core.jwks import KeySet
from ..core.limits import FETCH_TOTAL_TIMEOUT
from ..invalidation import tenant_config_bump
from ..models import Issuer
from . import flights
from .fetch import FetchError, FetchResult, json_fetch
from .keysets import jwks_digest, keyset_remember

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
    IN_FLIGHT = "in flight"  # another request or worker is fetching this issuer (tasks, the admin)
    WAITED = "waited"  # a request waited for the fetch in flight, which has ended: read what it stored
    BUSY = "busy"  # the process's waiters' cap, or its background fetches, are full: 503 at once
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
    document = json_fetch(url, timeout=_remaining(deadline)).document
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
    result = json_fetch(url, etag=etag, timeout=_remaining(deadline))
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
        flights.failed_mark(source.pk, now)
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
    flights.failed_clear(source.pk)
    if fetched.keyset is not None:
        keyset_remember((source.pk, jwks_digest(result.document)), fetched.keyset)  # parsed once, here
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


def jwks_refresh(row: Issuer, *, now: datetime, force: bool, max_staleness: timedelta) -> Outcome:
    """Fetch in the caller's thread (tasks, the admin, commands), within the 10 s deadline."""
    if row.static_jwks is not None:
        return Outcome.STATIC
    if not force and not refresh_due(row, now, max_staleness):
        return Outcome.NOT_DUE
    if not flights.flight_take(row.pk):
        return Outcome.IN_FLIGHT
    source = Source.of(row)
    try:
        return store(source, fetch(source, deadline=time.monotonic() + FETCH_TOTAL_TIMEOUT), now=now)
    finally:
        flights.flight_release(row.pk)


class _Job:
    """A request-path fetch: finished (stored, then the flight let go) by the request if it is
    done within the budget, else by the background thread itself when it is."""

    def __init__(self, source: Source, now: datetime, *, kid_refetch: bool) -> None:
        self.source, self.now, self.kid_refetch = source, now, kid_refetch
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
                    self.finish()
                except Exception:  # noqa: BLE001 - logged; the next request or sweep fetches again
                    logger.exception("background JWKS store failed", extra={"jwtex": {"pk": self.source.pk}})
                finally:
                    connection.close()  # this pool thread's own connection

    def claim(self, budget: float) -> bool:
        """True when the caller should finish the job; False: abandoned to the background."""
        self.done.wait(max(0.0, budget))
        with self.lock:
            if self.done.is_set():
                return True
            self.abandoned = True
            return False

    def finish(self) -> Outcome:
        """Store the outcome, note a refetch for an unknown ``kid`` as done, then let the flight go:
        its waiters find all of it in place."""
        outcome = Outcome.FAILED
        try:
            outcome = store(self.source, self.fetched, now=self.now)
            return outcome
        finally:
            try:
                if self.kid_refetch:  # also when the store failed: no second refetch this cool-down
                    flights.kid_refetch_mark(self.source.pk, self.now, digest=_stored_digest(self, outcome))
            finally:
                flights.flight_release(self.source.pk)
                _slots.release()


def _stored_digest(job: _Job, outcome: Outcome) -> str | None:
    """The digest of the key set a finished fetch left stored; None when it failed."""
    if not outcome.fetched or job.fetched.result is None:
        return None
    if job.fetched.result.status == 200:
        return jwks_digest(job.fetched.result.document)
    return jwks_digest(job.source.jwks) if job.source.jwks else None  # a 304 confirms the stored set


_pool: ThreadPoolExecutor | None = None
_pool_pid = 0
_pool_lock = threading.Lock()
_slots = threading.BoundedSemaphore(MAX_BACKGROUND_FETCHES)


def _executor() -> ThreadPoolExecutor:
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():  # a fork (server workers) gets its own pool
            _pool, _pool_pid = ThreadPoolExecutor(MAX_BACKGROUND_FETCHES, thread_name_prefix="jwtex-fetch"), os.getpid()
        return _pool


def request_deadline() -> float:
    """The ``time.monotonic()`` by which a request stops waiting for upstream keys (docs/errors.md#bursts)."""
    return time.monotonic() + jwtex_settings.request_fetch_budget


def jwks_refresh_within(row: Issuer, *, now: datetime, force: bool, max_staleness: timedelta,
                   deadline: float | None = None) -> Outcome:
    """Fetch for a request whose issuer has no usable keys, or wait for the fetch of it in flight
    (in this process or another), until ``deadline`` at most (docs/errors.md#bursts). ``WAITED``: that fetch
    ended, its outcome is stored."""
    if row.static_jwks is not None:
        return Outcome.STATIC
    if not force and not refresh_due(row, now, max_staleness):
        return Outcome.NOT_DUE
    return _within(row.pk, load=lambda: row, now=now, kid_refetch=False,
                   deadline=request_deadline() if deadline is None else deadline)


def jwks_refetch_within(pk: int, *, load: Callable[[], Issuer], now: datetime, deadline: float) -> Outcome:
    """The refetch for an unknown ``kid`` (docs/verification.md): made here, or the fetch in flight waited for,
    until ``deadline``; ``load`` reads the issuer row, only when this request fetches."""
    return _within(pk, load=load, now=now, kid_refetch=True, deadline=deadline)


def _start(pk: int, *, load: Callable[[], Issuer], now: datetime, kid_refetch: bool) -> _Job | Outcome:
    """With the flight taken: the job fetching in the background pool, or why there is none (the
    flight let go again). From here the job lets the flight go when it is finished."""
    slot = False
    try:
        # A fetch elsewhere may have ended between the caller's look and the take: its outcome
        # holds for the cool-down here too (one upstream connection per window).
        if flights.failed_recently(pk, now):
            outcome = Outcome.FAILED
        elif kid_refetch and flights.kid_refetched(pk, now) is not None:
            outcome = Outcome.WAITED
        elif not (slot := _slots.acquire(blocking=False)):
            outcome = Outcome.BUSY  # this process already fetches from enough upstreams
        elif (row := load()).static_jwks is not None:
            outcome = Outcome.STATIC  # changed meanwhile: nothing to fetch
        else:
            job = _Job(Source.of(row), now, kid_refetch=kid_refetch)
            _executor().submit(job.run)
            return job
    except RuntimeError:  # the interpreter is shutting down
        outcome = Outcome.FAILED
    except BaseException:
        flights.flight_release(pk)
        if slot:
            _slots.release()
        raise
    flights.flight_release(pk)
    if slot:
        _slots.release()
    return outcome


def _within(pk: int, *, load: Callable[[], Issuer], now: datetime, kid_refetch: bool, deadline: float) -> Outcome:
    with flights.waiting() as admitted:
        if not admitted:
            return Outcome.BUSY  # half of this process's threads already wait on upstreams
        if not flights.flight_take(pk):
            return Outcome.WAITED if flights.flight_wait(pk, deadline=deadline) else Outcome.TIMED_OUT
        job = _start(pk, load=load, now=now, kid_refetch=kid_refetch)
        if not isinstance(job, _Job):
            return job
        if not job.claim(deadline - time.monotonic()):
            logger.warning("upstream fetch over the request budget; finishing in the background",
                           extra={"jwtex": {"issuer": job.source.issuer_id, "pk": pk}})
            return Outcome.TIMED_OUT
        return job.finish()
