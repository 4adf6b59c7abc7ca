"""Abuse limits of the exchange: rate limits (docs/errors.md#rate-limits) and one-time upstream tokens
(docs/rules.md#replay-protection).

Both count in the shared cache (``CACHE_URL``), so they hold across processes with Redis.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping
from typing import Any

from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache

from ..ablation import off
from ..conf import jwtex_settings
from ..core.errors import InvalidToken, RateLimited, TemporarilyUnavailable
from ..core.values import IssuerSnapshot

logger = logging.getLogger("jwtex.exchange")


def rate_limit_hit(key: str, *, limit: int, now: float) -> None:
    """One hit on a fixed one-minute window; ``RateLimited`` over ``limit``."""
    _rate_limit_hits([(key, limit)], now=now)


def _rate_limit_hits(hits: list[tuple[str, int]], *, now: float) -> None:
    """One hit on each ``(key, limit)``'s fixed one-minute window (a limit of 0: not counted);
    ``RateLimited`` when any is over its limit."""
    hits = [(key, limit) for key, limit in hits if limit > 0]
    if not hits:
        return
    window = int(now // 60)
    try:
        counts = _counted([f"jwtex:rl:{key}:{window}" for key, _ in hits])
    except Exception as exc:  # noqa: BLE001 - the shared cache is down
        # Fail open: a cache outage must not become an outage of every exchange (a 500);
        # the limits are abuse protection, not authorization. Loud in the log.
        logger.error("rate limit not counted: cache unavailable", extra={"jwtex": {"error": type(exc).__name__}})
        return
    for (key, limit), count in zip(hits, counts, strict=True):
        if count > limit:
            raise RateLimited(retry_after=max(1, 60 - int(now % 60)), reason=f"over {limit}/min for {key}")


def _counted(keys: list[str]) -> list[int]:
    """Each counter incremented (made, expiring after 70 s, on its first hit), its new value
    returned. With Redis, all of them in one round trip (``SET … NX EX`` then ``INCR``, pipelined:
    Django's ``add`` and ``incr`` are three round trips a key); otherwise through the cache's API."""
    backend = caches["default"]
    if isinstance(backend, RedisCache):
        made = [backend.make_and_validate_key(key) for key in keys]
        # Django's own client for these keys (its pool, timeouts and key prefix); values are
        # stored as Django stores integers, so cache.get() reads them as it wrote them.
        with backend._cache.get_client(made[0], write=True).pipeline(transaction=False) as pipe:
            for key in made:
                pipe.set(key, 0, ex=70, nx=True)
                pipe.incr(key)
            return [int(count) for count in pipe.execute()[1::2]]
    counts = []
    for key in keys:
        if cache.add(key, 1, timeout=70):
            counts.append(1)
            continue
        try:
            counts.append(cache.incr(key))
        except ValueError:  # expired between add() and incr()
            cache.add(key, 1, timeout=70)
            counts.append(1)
    return counts


def exchange_rate_limit(*, tenant_id: int, tenant_limit: int, client_address: str | None, now: float) -> None:
    """Per tenant (its own limit) and per client address (``JWTEX_RATE_LIMIT_PER_ADDRESS``)."""
    if off("rate-limits"):  # a benchmark's (exchange/ablation.py)
        return
    hits = [(f"t:{tenant_id}", tenant_limit)]
    if client_address:
        hits.append((f"a:{client_address}", jwtex_settings.rate_limit_per_address))
    _rate_limit_hits(hits, now=now)


def upstream_jti_consume(*, issuer: IssuerSnapshot, claims: Mapping[str, Any], now: float) -> None:
    """Refuse a second use of the same upstream token while it is still valid, for an issuer
    with ``replay_protection`` on. The mark lives in the shared cache (across processes) as
    long as the verifier would still accept the token (exp + leeway), keyed by a digest of
    the jti, never the jti itself. A token without a jti cannot be told apart from its copies,
    so it is refused. A cache that cannot answer refuses too (fail closed, 503)."""
    if not issuer.replay_protection or off("jti-mark"):  # off: a benchmark's (exchange/ablation.py)
        return
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise InvalidToken(
            "The token has no jti claim; this issuer accepts one-time tokens only.",
            reason="replay protection: jti missing or not a non-empty string",
        )
    digest = hashlib.sha256(jti.encode("utf-8", "surrogatepass")).hexdigest()
    # exp was checked by the verifier: a finite number after now - leeway.
    timeout = max(1, math.ceil(claims["exp"] + issuer.config.leeway - now))
    try:
        first_use = cache.add(f"jwtex:jti:{issuer.pk}:{digest}", 1, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - e.g. Redis down: never mint a possibly replayed token
        raise TemporarilyUnavailable(
            "One-time token checks are unavailable; retry later.", reason=f"replay cache: {type(exc).__name__}"
        ) from None
    if not first_use:
        raise InvalidToken("The token has already been used.", reason=f"replay of jti sha256:{digest[:16]}")
