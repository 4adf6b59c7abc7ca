"""The rate limits' counters (docs/errors.md#rate-limits) cost one round trip to Redis per exchange, both of them
together, and stay what Django's cache API reads and writes."""

from __future__ import annotations

import time

import pytest
from django.core.cache import cache

from exchange.core.errors import RateLimited
from exchange.services.rate_limits import exchange_rate_limit

from .test_abuse_limits import needs_shared_cache


@needs_shared_cache
def test_both_counters_take_one_round_trip(settings, monkeypatch):
    import redis

    settings.JWTEX_RATE_LIMIT_PER_ADDRESS = 5
    sent = {"pipelines": 0, "commands": 0}
    execute, command = redis.client.Pipeline.execute, redis.Redis.execute_command

    def pipeline_execute(self, *args, **kwargs):
        sent["pipelines"] += 1
        return execute(self, *args, **kwargs)

    def execute_command(self, *args, **kwargs):
        sent["commands"] += 1
        return command(self, *args, **kwargs)

    monkeypatch.setattr(redis.client.Pipeline, "execute", pipeline_execute)
    monkeypatch.setattr(redis.Redis, "execute_command", execute_command)
    now = time.time()
    window = int(now // 60)
    for _ in range(3):
        exchange_rate_limit(tenant_id=4242, tenant_limit=3, client_address="198.51.100.9", now=now)
    assert sent == {"pipelines": 3, "commands": 0}
    monkeypatch.undo()
    # Django's API reads what the pipeline wrote, and adds to it.
    assert cache.get(f"jwtex:rl:t:4242:{window}") == 3
    assert cache.get(f"jwtex:rl:a:198.51.100.9:{window}") == 3
    with pytest.raises(RateLimited):
        exchange_rate_limit(tenant_id=4242, tenant_limit=3, client_address="198.51.100.9", now=now)


def test_a_limit_of_zero_is_not_counted(settings):
    settings.JWTEX_RATE_LIMIT_PER_ADDRESS = 0
    now = time.time()
    for _ in range(5):
        exchange_rate_limit(tenant_id=4343, tenant_limit=0, client_address="198.51.100.10", now=now)
    assert cache.get(f"jwtex:rl:t:4343:{int(now // 60)}") is None
    assert cache.get(f"jwtex:rl:a:198.51.100.10:{int(now // 60)}") is None


def test_the_counters_expire(settings):
    settings.JWTEX_RATE_LIMIT_PER_ADDRESS = 0
    now = time.time()
    exchange_rate_limit(tenant_id=4444, tenant_limit=10, client_address=None, now=now)
    key = f"jwtex:rl:t:4444:{int(now // 60)}"
    assert cache.get(key) == 1
    if hasattr(cache, "_cache") and hasattr(cache._cache, "get_client"):  # Redis: its TTL, as the pipeline set it
        client = cache._cache.get_client(write=False)
        assert 0 < client.ttl(cache.make_and_validate_key(key)) <= 70
