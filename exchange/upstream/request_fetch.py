"""A request's fetch of an issuer's key set, within the request's budget (docs/errors.md#bursts).

``jwks_refresh_within`` and ``jwks_refetch_within`` (the request path) fetch in a small bounded
pool, or wait for the fetch in flight (in this process or another, exchange.upstream.flights),
until the request's deadline (``JWTEX_REQUEST_FETCH_BUDGET``, 2 s); beyond it the request
answers 503 while the fetch completes in the background and stores its result itself. The fetch
and the store are exchange.upstream.refresh's, as for tasks and the admin.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from django.db import connection

from ..conf import jwtex_settings
from ..core.limits import FETCH_TOTAL_TIMEOUT
from ..models import Issuer
from . import flights
from .keysets import jwks_digest
from .refresh import Fetched, Outcome, Source, fetch, refresh_due, store

logger = logging.getLogger("jwtex.upstream")

# Request-path fetches running in the background, per process; beyond: 503 at once.
MAX_BACKGROUND_FETCHES = 8


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
                except Exception:  # logged; the next request or sweep fetches again
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


def jwks_refresh_within(
    row: Issuer, *, now: datetime, force: bool, max_staleness: timedelta, deadline: float | None = None
) -> Outcome:
    """Fetch for a request whose issuer has no usable keys, or wait for the fetch of it in flight
    (in this process or another), until ``deadline`` at most (docs/errors.md#bursts). ``WAITED``: that fetch
    ended, its outcome is stored."""
    if row.static_jwks is not None:
        return Outcome.STATIC
    if not force and not refresh_due(row, now, max_staleness):
        return Outcome.NOT_DUE
    return _within(
        row.pk,
        load=lambda: row,
        now=now,
        kid_refetch=False,
        deadline=request_deadline() if deadline is None else deadline,
    )


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
            logger.warning(
                "upstream fetch over the request budget; finishing in the background",
                extra={"jwtex": {"issuer": job.source.issuer_id, "pk": pk}},
            )
            return Outcome.TIMED_OUT
        return job.finish()
