"""One fetch per issuer at a time across processes, and waiting for it (docs/errors.md#bursts: "a burst of one
tenant's jobs all succeed", "one tenant never slows another").

Marks in the shared cache (``CACHE_URL``; per process without one), per issuer row:

- ``fetch:{pk}`` — a fetch is in flight; its value names the flight. It is let go only once the
  fetch's outcome is stored (the row, or the failure mark), so whoever sees it gone can read it.
- ``fetch-failed:{pk}`` — the last fetch failed; holds when the cool-down ends.
- ``kid-refetch:{pk}`` — the last refetch for an unknown ``kid``: when its cool-down ends and the
  digest of the key set it left stored (None: it failed). Written before the flight is let go.

A request that finds its issuer's fetch in flight waits for it, within its own budget: on an
event when the flight is this process's, else by reading the mark with a short back-off (a few
cache reads a second; no database read and no transaction while it waits). At most half of the
process's request threads (``JWTEX_SERVER_THREADS``) wait on upstream fetches at once, leaders
and followers alike; one more is refused at once (``waiting`` says so), so a tarpit upstream
cannot take the threads other tenants need.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from django.core.cache import cache

from ..conf import jwtex_settings
from ..core.limits import FETCH_TOTAL_TIMEOUT

__all__ = [
    "KidRefetch",
    "failed_clear",
    "failed_mark",
    "failed_recently",
    "flight_release",
    "flight_take",
    "flight_wait",
    "kid_refetch_mark",
    "kid_refetched",
    "waiters_cap",
    "waiting",
]

# How often a waiter looks at another process's flight: at first soon (most fetches take a few
# hundred milliseconds), then every 50 ms at most.
FIRST_LOOK = 0.01
LONGEST_PAUSE = 0.05


def mark_key(kind: str, pk: int) -> str:
    return f"jwtex:{kind}:{pk}"


# --------------------------------------------------------------------------- the flight

_held: dict[int, tuple[str, threading.Event]] = {}  # the flights this process holds: id, and "it ended"
_lock = threading.Lock()


def flight_take(pk: int) -> bool:
    """Take the issuer's flight: True for the one caller that is to fetch, False while a fetch of
    it is in flight anywhere. Without the shared cache, single flight within this process."""
    flight = uuid.uuid4().hex
    with _lock:
        if pk in _held:  # this process fetches it already: no need to ask the cache
            return False
    try:
        taken = bool(cache.add(mark_key("fetch", pk), flight, timeout=int(FETCH_TOTAL_TIMEOUT) + 5))
    except Exception:  # noqa: BLE001 - the shared cache is down: this process's own flights decide
        taken = True
    if not taken:
        return False
    with _lock:
        if pk in _held:  # another thread of this process took it meanwhile (only without the cache)
            return False
        _held[pk] = (flight, threading.Event())
    return True


def flight_release(pk: int) -> None:
    """Let go of the flight once its outcome is stored: its waiters go and read it."""
    with _lock:
        held = _held.pop(pk, None)
    try:
        cache.delete(mark_key("fetch", pk))
    except Exception:  # noqa: BLE001 - it expires by itself
        pass
    if held is not None:
        held[1].set()


def flight_wait(pk: int, *, deadline: float) -> bool:
    """Wait (``time.monotonic()`` ``deadline``) until the issuer's flight in progress ends: True
    when it has (its outcome is stored), False when the deadline came first."""
    seen: str | None = None
    pause = FIRST_LOOK
    while True:
        with _lock:
            held = _held.get(pk)
        if held is not None:  # this process's own fetch: its end is an event, no polling
            return held[1].wait(max(0.0, deadline - time.monotonic()))
        try:
            current = cache.get(mark_key("fetch", pk))
        except Exception:  # noqa: BLE001 - the flight cannot be seen: go and read what is stored
            return True
        if current is None or (seen is not None and current != seen):
            return True  # let go (a flight after it is another fetch: ours has ended)
        seen = current
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        threading.Event().wait(min(pause, left))
        pause = min(pause * 1.5, LONGEST_PAUSE)


# --------------------------------------------------------------------------- the waiters' cap

_waiters = 0


def waiters_cap() -> int:
    """At most half of a process's request threads wait on upstream fetches (docs/errors.md#bursts)."""
    return max(1, jwtex_settings.server_threads // 2)


@contextmanager
def waiting() -> Iterator[bool]:
    """A place among this process's waiters for the ``with`` block: True, or False when the cap
    is reached (the caller answers 503 at once)."""
    global _waiters
    with _lock:
        admitted = _waiters < waiters_cap()
        if admitted:
            _waiters += 1
    try:
        yield admitted
    finally:
        if admitted:
            with _lock:
                _waiters -= 1


# --------------------------------------------------------------------------- outcomes


def failed_recently(pk: int, now: datetime) -> bool:
    """A fetch of this issuer failed within the cool-down (on the caller's clock)."""
    try:
        until = cache.get(mark_key("fetch-failed", pk))
    except Exception:  # noqa: BLE001 - a cache down: fetch as if nothing failed
        return False
    return isinstance(until, (int, float)) and until > now.timestamp()


def failed_mark(pk: int, now: datetime) -> None:
    cooldown = jwtex_settings.unknown_kid_cooldown
    try:
        cache.set(mark_key("fetch-failed", pk), now.timestamp() + cooldown, timeout=max(1, int(cooldown) + 1))
    except Exception:  # noqa: BLE001 - the row's last error still backs the next refresh off
        pass


def failed_clear(pk: int) -> None:
    try:
        cache.delete(mark_key("fetch-failed", pk))
    except Exception:  # noqa: BLE001 - a cache down: the mark expires on its own
        pass


@dataclass(frozen=True)
class KidRefetch:
    """The last refetch for an unknown ``kid``, while its cool-down lasts."""

    digest: str | None  # of the key set it left stored; None when it failed


def kid_refetch_mark(pk: int, now: datetime, *, digest: str | None) -> None:
    """Note a refetch for an unknown ``kid`` as done (before its flight is let go): no other for
    the cool-down, measured on the clock of the request that asked for it."""
    cooldown = jwtex_settings.unknown_kid_cooldown
    value = {"ends": now.timestamp() + cooldown, "digest": digest}
    try:
        cache.set(mark_key("kid-refetch", pk), value, timeout=max(1, math.ceil(cooldown)))
    except Exception:  # noqa: BLE001 - without the cache, no cool-down across processes (logged by the caller)
        pass


def kid_refetched(pk: int, now: datetime) -> KidRefetch | None:
    """The refetch for an unknown ``kid`` within the cool-down (on the caller's clock), if any.
    Raises when the shared cache cannot answer: the caller then refetches nothing."""
    value = cache.get(mark_key("kid-refetch", pk))
    if not isinstance(value, dict) or not isinstance(value.get("ends"), (int, float)):
        return None
    if value["ends"] <= now.timestamp():
        return None
    digest = value.get("digest")
    return KidRefetch(digest=digest if isinstance(digest, str) else None)
