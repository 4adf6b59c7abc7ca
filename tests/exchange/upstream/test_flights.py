"""exchange.upstream.flights: a request that finds its issuer's fetch in flight — in this process or
another — waits for it within its own budget and verifies with what it stored (docs/errors.md#bursts); at most
half of the process's request threads wait at once, one more answers 503 at once."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection

from exchange.core.errors import TemporarilyUnavailable
from exchange.models import Issuer
from exchange.upstream import flights
from exchange.upstream.issuer_keys import issuer_keys_get, issuer_keys_refetch_for_unknown_kid
from exchange.upstream.keysets import jwks_digest
from tests.conftest import poll
from tests.exchange.upstream.keys import K1, K2
from tests.upstreams import DISCOVERY

ELSEWHERE = "a flight of another process"


def reloaded(issuer: Issuer) -> Issuer:
    return Issuer.objects.get(pk=issuer.pk)


def kids(keys) -> set:
    return {k.kid for k in keys.keys.keys}


def in_threads(count: int, call):
    """``call()`` in ``count`` threads at once, each with its own database connection (closed after)."""
    start = threading.Barrier(count)

    def one(_):
        start.wait()
        try:
            began = time.monotonic()
            try:
                return call(), time.monotonic() - began
            except Exception as exc:  # noqa: BLE001 - returned, for the assertions
                return exc, time.monotonic() - began
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


def stored_elsewhere(issuer: Issuer, jwks: dict, now) -> None:
    """What another process's fetch leaves behind (exchange.upstream.refresh.store), then its
    flight let go."""
    Issuer.objects.filter(pk=issuer.pk).update(jwks=jwks, jwks_fetched_at=now, jwks_expires_at=now + timedelta(hours=1))
    cache.delete(flights.mark_key("fetch", issuer.pk))


class MarkReads:
    """Counts reads of the issuer's flight mark (from any thread): a waiter is looking at a flight
    of another process."""

    def __init__(self, monkeypatch, pk: int) -> None:
        self.count = 0
        reads, real, mark = self, flights.cache, flights.mark_key("fetch", pk)

        class Counting:
            def __getattr__(self, name):
                return getattr(real, name)

            def get(self, key, *args, **kwargs):
                if key == mark:
                    reads.count += 1
                return real.get(key, *args, **kwargs)

        monkeypatch.setattr(flights, "cache", Counting())


# --------------------------------------------------------------------------- first use of an issuer


@pytest.mark.django_db(transaction=True)
def test_a_burst_at_first_use_waits_for_the_one_fetch_and_every_request_gets_its_keys(issuer, server, now, settings):
    settings.JWTEX_SERVER_THREADS = 24  # 12 may wait
    server.routes[DISCOVERY].delay = server.routes["/jwks"].delay = 0.3
    snapshot = issuer.snapshot()  # no keys yet, as every process's runtime holds it

    answers = in_threads(12, lambda: issuer_keys_get(issuer=snapshot, now=now))

    assert [kids(keys) for keys, _ in answers] == [{"k1"}] * 12, answers
    assert (server.count(DISCOVERY), server.count("/jwks")) == (1, 1)


@pytest.mark.django_db(transaction=True)
def test_without_the_shared_cache_a_burst_waits_for_this_processs_one_fetch(issuer, server, now, settings, monkeypatch):
    settings.JWTEX_SERVER_THREADS = 16

    class Down:
        def __getattr__(self, name):
            def down(*args, **kwargs):
                raise ConnectionError("cache down")

            return down

    monkeypatch.setattr(flights, "cache", Down())
    server.routes["/jwks"].delay = 0.3
    snapshot = issuer.snapshot()

    answers = in_threads(8, lambda: issuer_keys_get(issuer=snapshot, now=now))

    assert [kids(keys) for keys, _ in answers] == [{"k1"}] * 8, answers
    assert (server.count(DISCOVERY), server.count("/jwks")) == (1, 1)


@pytest.mark.django_db(transaction=True)
def test_a_waiter_gets_the_keys_a_fetch_in_another_process_stored(issuer, server, now, monkeypatch):
    cache.add(flights.mark_key("fetch", issuer.pk), ELSEWHERE)  # another process is fetching
    reads = MarkReads(monkeypatch, issuer.pk)
    got = []
    waiter = threading.Thread(target=lambda: got.append(issuer_keys_get(issuer=issuer.snapshot(), now=now)))
    waiter.start()
    assert poll(lambda: reads.count >= 3, timeout=5, interval=0.01)  # it waits, looking at the flight
    assert waiter.is_alive() and got == []

    stored_elsewhere(issuer, {"keys": [K1, K2]}, now)
    waiter.join(5)

    assert [kids(keys) for keys in got] == [{"k1", "k2"}]
    assert server.requests == []  # it fetched nothing itself


@pytest.mark.django_db
def test_a_waiter_whose_budget_ends_gets_503_and_reads_nothing_while_it_waits(
    issuer, server, now, settings, django_assert_num_queries
):
    settings.JWTEX_REQUEST_FETCH_BUDGET = 0.3
    cache.add(flights.mark_key("fetch", issuer.pk), ELSEWHERE)  # a fetch elsewhere that does not end
    started = time.monotonic()
    with django_assert_num_queries(1):  # the row, once, before waiting
        with pytest.raises(TemporarilyUnavailable) as caught:
            issuer_keys_get(issuer=issuer.snapshot(), now=now)
    waited = time.monotonic() - started
    assert (caught.value.status, caught.value.code) == (503, "temporarily_unavailable")
    assert "longer than the request's budget" in caught.value.reason
    assert 0.3 <= waited < 1.0, waited
    assert server.requests == []


@pytest.mark.django_db(transaction=True)
def test_a_fetch_that_failed_elsewhere_is_503_for_its_waiters_and_at_once_for_the_cool_down(
    issuer, server, now, monkeypatch
):
    cache.add(flights.mark_key("fetch", issuer.pk), ELSEWHERE)
    reads = MarkReads(monkeypatch, issuer.pk)
    got = []

    def wait() -> None:
        try:
            issuer_keys_get(issuer=issuer.snapshot(), now=now)
        except TemporarilyUnavailable as exc:
            got.append(exc)
        finally:
            connection.close()

    waiter = threading.Thread(target=wait)
    waiter.start()
    assert poll(lambda: reads.count >= 2, timeout=5, interval=0.01)
    Issuer.objects.filter(pk=issuer.pk).update(
        jwks_last_error="HTTP 500", jwks_last_error_at=now, jwks_consecutive_failures=1
    )
    flights.failed_mark(issuer.pk, now)  # the other process's fetch failed; then its flight is let go
    cache.delete(flights.mark_key("fetch", issuer.pk))
    waiter.join(5)

    assert [exc.reason for exc in got] == [f"issuer {issuer.pk}: no usable keys (HTTP 500)"]
    started = time.monotonic()
    with pytest.raises(TemporarilyUnavailable) as caught:
        issuer_keys_get(issuer=issuer.snapshot(), now=now + timedelta(seconds=5))
    assert "failed within the cool-down" in caught.value.reason
    assert time.monotonic() - started < 1  # at once, not after the 2 s budget (room for a busy machine)
    assert server.requests == []


# --------------------------------------------------------------------------- the cap


@pytest.mark.parametrize(("threads", "cap"), [(8, 4), (24, 12), (3, 1), (1, 1)])
def test_the_waiters_cap_is_half_of_the_server_threads(settings, threads, cap):
    settings.JWTEX_SERVER_THREADS = threads
    assert flights.waiters_cap() == cap


@pytest.mark.django_db(transaction=True)
def test_beyond_half_of_the_threads_waiting_a_request_answers_503_at_once(tenant_pair, now, settings):
    """Two requests of a tarpit issuer wait (its fetch in flight elsewhere); with 4 threads, the
    third — of any issuer that needs a fetch — is refused at once. Issuers with keys never wait."""
    settings.JWTEX_SERVER_THREADS = 4
    settings.JWTEX_REQUEST_FETCH_BUDGET = 5
    tarpit, other, ready = tenant_pair
    cache.add(flights.mark_key("fetch", tarpit.pk), ELSEWHERE)
    waiters = [
        threading.Thread(
            target=lambda: pytest.raises(TemporarilyUnavailable, issuer_keys_get, issuer=tarpit.snapshot(), now=now)
        )
        for _ in range(2)
    ]
    for waiter in waiters:
        waiter.start()
    try:
        assert poll(lambda: flights._waiters == 2, timeout=5, interval=0.01)
        for busy in (tarpit, other):
            started = time.monotonic()
            with pytest.raises(TemporarilyUnavailable) as caught:
                issuer_keys_get(issuer=busy.snapshot(), now=now)
            assert time.monotonic() - started < 1  # at once, not after the 5 s budget
            assert "already waits on enough upstream fetches" in caught.value.reason
        assert kids(issuer_keys_get(issuer=ready.snapshot(), now=now)) == {"k1"}  # its keys are stored: no wait
    finally:
        flights.failed_mark(tarpit.pk, now)
        cache.delete(flights.mark_key("fetch", tarpit.pk))  # the tarpit's fetch ends (failed)
        for waiter in waiters:
            waiter.join(5)
    assert flights._waiters == 0


@pytest.fixture
def tenant_pair(issuer, server, now):
    """The issuer (no keys), another issuer without keys, and one whose keys are stored."""
    other = Issuer.objects.create(tenant=issuer.tenant, issuer_id="other", issuer=server.url + "/o", audiences=["x"])
    ready = Issuer.objects.create(
        tenant=issuer.tenant,
        issuer_id="ready",
        issuer=server.url + "/r",
        audiences=["x"],
        jwks={"keys": [K1]},
        jwks_fetched_at=now,
        jwks_expires_at=now + timedelta(hours=1),
    )
    return issuer, other, ready


# --------------------------------------------------------------------------- an upstream key rotation


@pytest.mark.django_db(transaction=True)
def test_a_burst_at_a_key_rotation_waits_for_the_one_refetch_and_verifies(issuer, server, now, settings):
    settings.JWTEX_SERVER_THREADS = 24
    issuer_keys_get(issuer=issuer.snapshot(), now=now)
    before_rotation = reloaded(issuer).snapshot()  # k1, as the runtimes hold it
    server.json("/jwks", {"keys": [K1, K2]}, delay=0.3)  # the upstream now signs with k2
    fetched = server.count("/jwks")

    answers = in_threads(12, lambda: issuer_keys_refetch_for_unknown_kid(issuer=before_rotation, now=now))

    assert [kids(keys) for keys, _ in answers] == [{"k1", "k2"}] * 12, answers
    assert server.count("/jwks") == fetched + 1


@pytest.mark.django_db
def test_after_a_refetch_in_another_process_the_new_keys_are_read_and_unknown_kids_cost_nothing(
    issuer, server, now, django_assert_num_queries
):
    issuer_keys_get(issuer=issuer.snapshot(), now=now)
    before_rotation = reloaded(issuer).snapshot()
    # Another process refetched for a new kid: the row holds k1 and k2, the mark their digest.
    Issuer.objects.filter(pk=issuer.pk).update(jwks={"keys": [K1, K2]})
    flights.kid_refetch_mark(issuer.pk, now, digest=jwks_digest({"keys": [K1, K2]}))
    fetched = len(server.requests)

    assert kids(issuer_keys_refetch_for_unknown_kid(issuer=before_rotation, now=now)) == {"k1", "k2"}
    current = reloaded(issuer).snapshot()
    with django_assert_num_queries(0):  # a made-up kid against the current keys: 401 from the mark alone
        assert issuer_keys_refetch_for_unknown_kid(issuer=current, now=now) is None
    assert len(server.requests) == fetched


@pytest.mark.django_db
def test_an_unknown_kid_whose_refetch_is_in_flight_elsewhere_past_the_budget_is_503(issuer, server, now, settings):
    issuer_keys_get(issuer=issuer.snapshot(), now=now)
    settings.JWTEX_REQUEST_FETCH_BUDGET = 0.2
    cache.add(flights.mark_key("fetch", issuer.pk), ELSEWHERE)
    fetched = len(server.requests)
    with pytest.raises(TemporarilyUnavailable) as caught:
        issuer_keys_refetch_for_unknown_kid(issuer=reloaded(issuer).snapshot(), now=now)
    assert "unknown kid: the fetch took longer than the request's budget" in caught.value.reason
    assert len(server.requests) == fetched
