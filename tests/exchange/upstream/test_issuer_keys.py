"""exchange.upstream: the issuer's key set (discovery, JWKS, cache headers, last good set, unknown-kid refetch)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection

from exchange.core.errors import TemporarilyUnavailable
from exchange.core.jwks import KeySet
from exchange.models import Issuer
from exchange.upstream import flights, keysets
from exchange.upstream.issuer_keys import issuer_jwks_refresh, issuer_keys_get, issuer_keys_refetch_for_unknown_kid
from exchange.upstream.refresh import Outcome
from tests.conftest import poll
from tests.exchange.upstream.keys import K1, K2, K3
from tests.upstreams import DISCOVERY, Route


def reloaded(issuer: Issuer) -> Issuer:
    return Issuer.objects.get(pk=issuer.pk)


def kids(keys) -> set:
    return {k.kid for k in keys.keys.keys}


# --------------------------------------------------------------------------- first need


@pytest.mark.django_db
def test_the_first_need_fetches_discovery_then_the_jwks(issuer, server, now):
    keys = issuer_keys_get(issuer=issuer.snapshot(), now=now)

    assert kids(keys) == {"k1"}
    assert (keys.fetched_at, keys.stale) == (now, False)
    assert [r.path for r in server.requests] == [DISCOVERY, "/jwks"]
    row = reloaded(issuer)
    assert row.jwks == {"keys": [K1]}
    assert row.jwks_resolved_uri == server.url + "/jwks"
    assert (row.jwks_fetched_at, row.jwks_changed_at) == (now, now)
    assert row.jwks_expires_at == now + timedelta(seconds=issuer.jwks_refresh_interval)
    assert (row.jwks_consecutive_failures, row.jwks_last_error) == (0, "")


@pytest.mark.django_db
def test_stored_keys_are_used_without_fetching(issuer, server, now):
    issuer_keys_get(issuer=issuer.snapshot(), now=now)
    requests = len(server.requests)

    keys = issuer_keys_get(issuer=reloaded(issuer).snapshot(), now=now + timedelta(minutes=5))
    # The caller's instance may be older than the row (a per-process runtime cache): the row is read, not refetched.
    keys_via_old_instance = issuer_keys_get(issuer=issuer.snapshot(), now=now + timedelta(minutes=5))

    assert kids(keys) == kids(keys_via_old_instance) == {"k1"}
    assert len(server.requests) == requests


@pytest.mark.django_db
def test_a_keyset_is_parsed_once_per_change_per_process(issuer, now, monkeypatch):
    issuer_jwks_refresh(issuer=issuer, now=now)
    row = reloaded(issuer)
    keysets._KEYSETS.clear()
    parsed = []
    original = KeySet.from_jwks.__func__
    monkeypatch.setattr(KeySet, "from_jwks", classmethod(lambda cls, jwks: parsed.append(1) or original(cls, jwks)))

    first = issuer_keys_get(issuer=row.snapshot(), now=now).keys
    second = issuer_keys_get(issuer=reloaded(issuer).snapshot(), now=now).keys

    assert first is second
    assert len(parsed) == 1


@pytest.mark.django_db
def test_a_refresh_skips_discovery_while_the_remembered_jwks_uri_works(issuer, server, now):
    issuer_jwks_refresh(issuer=issuer, now=now)
    server.requests.clear()

    issuer_jwks_refresh(issuer=issuer, now=now + timedelta(hours=2))

    assert [r.path for r in server.requests] == ["/jwks"]


@pytest.mark.django_db
def test_discovery_is_repeated_when_the_remembered_jwks_uri_fails(issuer, server, now):
    issuer_jwks_refresh(issuer=issuer, now=now)
    server.requests.clear()
    server.json(DISCOVERY, {"issuer": server.url, "jwks_uri": server.url + "/v2/jwks"})
    server.json("/v2/jwks", {"keys": [K2]})
    server.routes["/jwks"] = Route(status=404)

    assert issuer_jwks_refresh(issuer=issuer, now=now + timedelta(hours=2)) is True

    assert [r.path for r in server.requests] == ["/jwks", DISCOVERY, "/v2/jwks"]
    row = reloaded(issuer)
    assert (row.jwks_resolved_uri, row.jwks) == (server.url + "/v2/jwks", {"keys": [K2]})


@pytest.mark.django_db
def test_a_configured_jwks_uri_skips_discovery(issuer, server, now):
    server.json("/custom", {"keys": [K3]})
    issuer.jwks_uri = server.url + "/custom"
    issuer.save()

    assert kids(issuer_keys_get(issuer=issuer.snapshot(), now=now)) == {"k3"}
    assert [r.path for r in server.requests] == ["/custom"]


@pytest.mark.django_db
def test_a_trailing_slash_issuer_discovers_without_a_double_slash(tenant, server, now):
    server.json(DISCOVERY, {"issuer": server.url + "/", "jwks_uri": server.url + "/jwks"})
    issuer = Issuer.objects.create(tenant=tenant, issuer_id="slash", issuer=server.url + "/", audiences=["x"])

    assert kids(issuer_keys_get(issuer=issuer.snapshot(), now=now)) == {"k1"}
    assert server.requests[0].path == DISCOVERY


# --------------------------------------------------------------------------- cache headers


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("cache_control", "expected"),
    [("max-age=600", 600), ("max-age=10", 300), ("max-age=1000000", 86400), (None, 1200), ("no-store", 1200)],
)
def test_max_age_sets_the_expiry_clamped_to_5_minutes_and_a_day(issuer, server, now, cache_control, expected):
    issuer.jwks_refresh_interval = 1200
    issuer.save()
    server.json("/jwks", {"keys": [K1]}, headers={"Cache-Control": cache_control} if cache_control else {})

    issuer_jwks_refresh(issuer=issuer, now=now)

    assert reloaded(issuer).jwks_expires_at == now + timedelta(seconds=expected)


@pytest.mark.django_db
def test_a_refresh_that_is_not_due_fetches_nothing_unless_forced(issuer, server, now):
    server.json("/jwks", {"keys": [K1]}, headers={"Cache-Control": "max-age=600"})
    issuer_jwks_refresh(issuer=issuer, now=now)
    server.requests.clear()

    assert issuer_jwks_refresh(issuer=issuer, now=now + timedelta(seconds=599)) is False
    assert server.requests == []

    issuer_jwks_refresh(issuer=issuer, now=now + timedelta(seconds=600))
    issuer_jwks_refresh(issuer=issuer, now=now + timedelta(seconds=601), force=True)
    assert [r.path for r in server.requests] == ["/jwks", "/jwks"]


@pytest.mark.django_db
def test_the_etag_is_sent_and_a_304_keeps_the_keys_and_extends_the_expiry(issuer, server, now):
    server.json("/jwks", {"keys": [K1]}, etag='"v1"', headers={"Cache-Control": "max-age=900"})
    issuer_jwks_refresh(issuer=issuer, now=now)
    assert reloaded(issuer).jwks_etag == '"v1"'
    later = now + timedelta(hours=1)

    assert issuer_jwks_refresh(issuer=issuer, now=later) is False

    assert server.requests[-1].headers["if-none-match"] == '"v1"'
    row = reloaded(issuer)
    assert row.jwks == {"keys": [K1]}
    assert (row.jwks_fetched_at, row.jwks_expires_at) == (later, later + timedelta(seconds=900))
    assert row.jwks_changed_at == now
    assert kids(issuer_keys_get(issuer=row.snapshot(), now=later)) == {"k1"}


@pytest.mark.django_db
def test_no_etag_is_sent_for_a_first_fetch(issuer, server, now):
    issuer.jwks_etag = '"stale"'
    issuer.save()

    issuer_jwks_refresh(issuer=issuer, now=now)

    assert all("if-none-match" not in r.headers for r in server.requests)


# --------------------------------------------------------------------------- failures


@pytest.mark.django_db
def test_upstream_down_keeps_the_last_good_keys_until_the_staleness_bound(issuer, server, now, settings):
    settings.JWTEX_JWKS_MAX_STALENESS = 6 * 3600
    issuer_keys_get(issuer=issuer.snapshot(), now=now)
    server.routes["/jwks"] = Route(status=500)
    server.routes[DISCOVERY] = Route(status=500)

    two_hours = now + timedelta(hours=2)  # past the 1 h expiry
    assert issuer_jwks_refresh(issuer=issuer, now=two_hours) is False
    row = reloaded(issuer)
    assert row.jwks == {"keys": [K1]}
    assert "HTTP 500" in row.jwks_last_error
    assert (row.jwks_last_error_at, row.jwks_consecutive_failures) == (two_hours, 1)
    keys = issuer_keys_get(issuer=row.snapshot(), now=two_hours)
    assert (kids(keys), keys.stale, keys.fetched_at) == ({"k1"}, True, now)

    issuer_jwks_refresh(issuer=issuer, now=two_hours + timedelta(minutes=1))
    assert reloaded(issuer).jwks_consecutive_failures == 2

    requests = len(server.requests)
    with pytest.raises(TemporarilyUnavailable) as caught:
        issuer_keys_get(issuer=reloaded(issuer).snapshot(), now=now + timedelta(hours=6, seconds=1))
    assert (caught.value.status, caught.value.code) == (503, "temporarily_unavailable")
    assert len(server.requests) > requests  # it did try once more before failing closed
    assert reloaded(issuer).jwks_consecutive_failures == 3


@pytest.mark.django_db
def test_beyond_the_staleness_bound_a_successful_refresh_serves_the_new_keys(issuer, server, now):
    issuer_keys_get(issuer=issuer.snapshot(), now=now)
    server.json("/jwks", {"keys": [K2]})

    keys = issuer_keys_get(issuer=reloaded(issuer).snapshot(), now=now + timedelta(days=1, seconds=1))

    assert kids(keys) == {"k2"}


@pytest.mark.django_db
def test_a_failure_then_success_resets_the_failure_count(issuer, server, now):
    server.routes["/jwks"] = Route(status=503)
    issuer_jwks_refresh(issuer=issuer, now=now)
    server.json("/jwks", {"keys": [K1]})

    assert issuer_jwks_refresh(issuer=issuer, now=now + timedelta(minutes=1)) is True

    row = reloaded(issuer)
    assert row.jwks_consecutive_failures == 0
    assert row.jwks_last_error_at == now  # kept as history; the count says it recovered


@pytest.mark.django_db
def test_no_keys_and_upstream_down_is_503_and_requests_back_off(issuer, server, now):
    server.routes[DISCOVERY] = Route(status=500)

    with pytest.raises(TemporarilyUnavailable) as caught:
        issuer_keys_get(issuer=issuer.snapshot(), now=now)
    assert (caught.value.status, caught.value.code) == (503, "temporarily_unavailable")
    assert "HTTP 500" in caught.value.reason
    assert "HTTP 500" not in caught.value.description
    assert len(server.requests) == 1

    # Within the back-off every request answers 503 at once, without another fetch.
    for seconds in (1, 10, 29):
        with pytest.raises(TemporarilyUnavailable):
            issuer_keys_get(issuer=issuer.snapshot(), now=now + timedelta(seconds=seconds))
    assert len(server.requests) == 1

    server.json(DISCOVERY, {"issuer": server.url, "jwks_uri": server.url + "/jwks"})
    assert kids(issuer_keys_get(issuer=issuer.snapshot(), now=now + timedelta(seconds=31))) == {"k1"}


@pytest.mark.django_db
def test_a_discovery_document_for_another_issuer_is_refused(issuer, server, now):
    server.json(DISCOVERY, {"issuer": server.url + "/other", "jwks_uri": server.url + "/jwks"})

    with pytest.raises(TemporarilyUnavailable):
        issuer_keys_get(issuer=issuer.snapshot(), now=now)

    assert [r.path for r in server.requests] == [DISCOVERY]
    row = reloaded(issuer)
    assert "another issuer" in row.jwks_last_error
    assert row.jwks is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    "document",
    [
        {"issuer": "same", "jwks_uri": ""},
        {"issuer": "same"},
        {"issuer": "same", "jwks_uri": 42},
        {"issuer": "same", "jwks_uri": "ftp://example.com/jwks"},
    ],
)
def test_a_discovery_document_without_a_usable_jwks_uri_is_refused(issuer, server, now, document):
    server.json(DISCOVERY, {**document, "issuer": server.url})

    assert issuer_jwks_refresh(issuer=issuer, now=now) is False

    assert "jwks_uri" in reloaded(issuer).jwks_last_error
    assert server.count("/jwks") == 0


@pytest.mark.django_db
def test_an_http_jwks_uri_is_refused_when_insecure_issuers_are_off(issuer, server, now, settings, monkeypatch):
    # Discovery reached over "https" (stubbed); its jwks_uri is plain http.
    from exchange.upstream import fetch, refresh

    monkeypatch.setattr(
        refresh,
        "json_fetch",
        lambda url, **kw: fetch.FetchResult(
            200, {"issuer": issuer.issuer, "jwks_uri": "http://x.example/j"}, "", None, url
        ),
    )
    settings.JWTEX_ALLOW_INSECURE_ISSUERS = False

    assert issuer_jwks_refresh(issuer=issuer, now=now) is False
    assert "not https" in reloaded(issuer).jwks_last_error


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}, "no usable signature key"),  # HMAC: never
        ({"keys": [{**K2, "use": "enc"}]}, "no usable signature key"),
        ({"keys": []}, "no usable signature key"),
        ({"not": "a jwks"}, "not a JWKS"),
    ],
)
def test_a_jwks_without_a_usable_key_is_refused_and_the_last_good_set_kept(issuer, server, now, document, message):
    issuer_jwks_refresh(issuer=issuer, now=now)
    server.json("/jwks", document)
    later = now + timedelta(hours=2)

    assert issuer_jwks_refresh(issuer=issuer, now=later) is False

    row = reloaded(issuer)
    assert row.jwks == {"keys": [K1]}
    assert message in row.jwks_last_error
    assert (row.jwks_fetched_at, row.jwks_consecutive_failures) == (now, 1)
    assert kids(issuer_keys_get(issuer=row.snapshot(), now=later)) == {"k1"}


# --------------------------------------------------------------------------- changes


@pytest.mark.django_db
def test_jwks_changed_at_moves_only_on_a_real_change(issuer, server, now):
    server.json("/jwks", {"keys": [K1, K2]})
    assert issuer_jwks_refresh(issuer=issuer, now=now) is True

    t1 = now + timedelta(hours=1)
    assert issuer_jwks_refresh(issuer=issuer, now=t1, force=True) is False  # same document
    server.json("/jwks", {"keys": [K2, K1]})
    assert issuer_jwks_refresh(issuer=issuer, now=t1 + timedelta(minutes=1), force=True) is False  # reordered
    row = reloaded(issuer)
    assert (row.jwks_changed_at, row.jwks_fetched_at) == (now, t1 + timedelta(minutes=1))

    t2 = now + timedelta(hours=2)
    server.json("/jwks", {"keys": [K2, K3]})
    assert issuer_jwks_refresh(issuer=issuer, now=t2, force=True) is True
    row = reloaded(issuer)
    assert (row.jwks_changed_at, row.jwks) == (t2, {"keys": [K2, K3]})
    assert kids(issuer_keys_get(issuer=row.snapshot(), now=t2)) == {"k2", "k3"}


# --------------------------------------------------------------------------- unknown kid


@pytest.mark.django_db
def test_an_unknown_kid_refetches_once_per_cooldown_however_many_ask(issuer, server, now, django_assert_num_queries):
    issuer_keys_get(issuer=issuer.snapshot(), now=now)
    before_rotation = reloaded(issuer).snapshot()
    server.json("/jwks", {"keys": [K1, K2]})
    before = server.count("/jwks")

    keys = issuer_keys_refetch_for_unknown_kid(issuer=before_rotation, now=now + timedelta(seconds=1))
    assert kids(keys) == {"k1", "k2"}
    assert server.count("/jwks") == before + 1

    # Within the cool-down, a token whose snapshot predates the refetch verifies with what it stored.
    again = issuer_keys_refetch_for_unknown_kid(issuer=before_rotation, now=now + timedelta(seconds=2))
    assert kids(again) == {"k1", "k2"}
    # Made-up kids against the keys stored now: 401 (None), no fetch and no database read.
    current = reloaded(issuer).snapshot()
    later = now + timedelta(seconds=2)
    with django_assert_num_queries(0):
        assert issuer_keys_refetch_for_unknown_kid(issuer=current, now=later) is None
    with ThreadPoolExecutor(max_workers=10) as pool:
        flood = list(pool.map(lambda _: issuer_keys_refetch_for_unknown_kid(issuer=current, now=later), range(50)))
    assert flood == [None] * 50
    assert server.count("/jwks") == before + 1
    assert [r.path for r in server.requests].count(DISCOVERY) == 1


@pytest.mark.django_db
def test_the_unknown_kid_cooldown_expires(issuer, server, now, settings):
    settings.JWTEX_UNKNOWN_KID_COOLDOWN = 30
    issuer_keys_get(issuer=issuer.snapshot(), now=now)
    snapshot = reloaded(issuer).snapshot()
    assert issuer_keys_refetch_for_unknown_kid(issuer=snapshot, now=now) is None  # fetched: still only k1
    assert server.count("/jwks") == 2
    assert issuer_keys_refetch_for_unknown_kid(issuer=snapshot, now=now + timedelta(seconds=29)) is None
    assert server.count("/jwks") == 2
    # The cool-down is measured on the clock the caller passes (no test waits for it).
    assert issuer_keys_refetch_for_unknown_kid(issuer=snapshot, now=now + timedelta(seconds=30)) is None
    assert server.count("/jwks") == 3


@pytest.mark.django_db
def test_the_cooldown_is_per_issuer(issuer, tenant, server, now):
    other = Issuer.objects.create(tenant=tenant, issuer_id="other", issuer=server.url, audiences=["x"])
    issuer_keys_refetch_for_unknown_kid(issuer=issuer, now=now)

    assert issuer_keys_refetch_for_unknown_kid(issuer=other, now=now) is not None


@pytest.mark.django_db
def test_an_unknown_kid_whose_refetch_fails_is_503_and_the_keys_are_kept(issuer, server, now):
    """The kid may be a new key the upstream cannot tell us of right now: 503 (retry), not 401."""
    issuer_keys_get(issuer=issuer.snapshot(), now=now)
    snapshot = reloaded(issuer).snapshot()
    server.routes["/jwks"] = Route(status=500)
    server.routes[DISCOVERY] = Route(status=500)

    for seconds in (0, 1, 29):  # the refetch, then its failure for the whole cool-down, at once
        with pytest.raises(TemporarilyUnavailable) as caught:
            issuer_keys_refetch_for_unknown_kid(issuer=snapshot, now=now + timedelta(seconds=seconds))
        assert (caught.value.status, caught.value.code) == (503, "temporarily_unavailable")
    assert "failed within the cool-down" in caught.value.reason
    assert server.count("/jwks") == 2 and server.count(DISCOVERY) == 2  # the first fetch, then one refetch
    assert kids(issuer_keys_get(issuer=reloaded(issuer).snapshot(), now=now)) == {"k1"}


# --------------------------------------------------------------------------- static JWKS


@pytest.mark.django_db
def test_a_static_jwks_issuer_never_fetches(tenant, server, now):
    issuer = Issuer.objects.create(
        tenant=tenant, issuer_id="k8s", issuer=server.url, audiences=["x"], static_jwks={"keys": [K3]}
    )

    keys = issuer_keys_get(issuer=issuer.snapshot(), now=now + timedelta(days=30))
    assert (kids(keys), keys.fetched_at, keys.stale) == ({"k3"}, None, False)
    assert issuer_jwks_refresh(issuer=issuer, now=now, force=True) is False
    assert issuer_keys_refetch_for_unknown_kid(issuer=issuer, now=now) is None

    assert server.requests == []
    assert reloaded(issuer).jwks is None


@pytest.mark.django_db
def test_a_static_jwks_without_a_usable_key_is_503(tenant, server, now):
    issuer = Issuer.objects.create(
        tenant=tenant, issuer_id="k8s", issuer=server.url, audiences=["x"], static_jwks={"keys": [{"kty": "oct"}]}
    )

    with pytest.raises(TemporarilyUnavailable) as caught:
        issuer_keys_get(issuer=issuer.snapshot(), now=now)
    assert (caught.value.status, caught.value.code) == (503, "temporarily_unavailable")
    assert server.requests == []


# --------------------------------------------------------------------------- one tenant never slows another


@pytest.mark.django_db(transaction=True)
def test_no_transaction_is_open_while_fetching(issuer, server, now, monkeypatch):
    from exchange.upstream import refresh

    real = refresh.json_fetch
    seen = []

    def checking(url, **kwargs):
        seen.append(connection.in_atomic_block)
        return real(url, **kwargs)

    monkeypatch.setattr(refresh, "json_fetch", checking)
    issuer_jwks_refresh(issuer=issuer, now=now, force=True)
    issuer_keys_refetch_for_unknown_kid(issuer=issuer.snapshot(), now=now)
    assert seen and not any(seen)


@pytest.mark.django_db
def test_a_fetch_in_flight_is_not_repeated_and_its_waiters_wait_no_longer_than_their_budget(
    issuer, server, now, settings
):
    """Single-flight per issuer: the leader fetches; everyone else meanwhile waits for it, each
    until its own budget ends (here the upstream is a tarpit), never fetching again."""
    from exchange.upstream import request_fetch

    settings.JWTEX_REQUEST_FETCH_BUDGET = 0.3
    settings.JWTEX_SERVER_THREADS = 40  # room for 20 waiters
    server.json("/jwks", {"keys": [K1]}, delay=5)  # a tarpit: it answers only when the test ends
    row = reloaded(issuer)
    started = time.monotonic()
    assert (
        request_fetch.jwks_refresh_within(row, now=now, force=False, max_staleness=timedelta(days=1))
        is Outcome.TIMED_OUT
    )
    assert time.monotonic() - started < 1  # the request's budget, not the upstream's whim

    def waiter(_):
        began = time.monotonic()
        outcome = request_fetch.jwks_refresh_within(row, now=now, force=False, max_staleness=timedelta(days=1))
        return outcome, time.monotonic() - began

    with ThreadPoolExecutor(max_workers=20) as pool:
        waited = list(pool.map(waiter, range(20)))
    assert {outcome for outcome, _ in waited} == {Outcome.TIMED_OUT}
    assert all(0.25 <= seconds < 1 for _, seconds in waited), waited
    assert issuer_jwks_refresh(issuer=issuer, now=now, force=True) is False  # a sweep skips it
    with pytest.raises(TemporarilyUnavailable) as caught:
        issuer_keys_get(issuer=issuer.snapshot(), now=now)
    assert "longer than the request's budget" in caught.value.reason
    assert time.monotonic() - started < 3
    assert server.count("/jwks") == 1 and server.count(DISCOVERY) == 1


@pytest.mark.django_db
def test_a_request_that_looked_before_a_failure_elsewhere_does_not_fetch_again(issuer, server, now, monkeypatch):
    """The race the served tarpit test once met: a request checks "failed recently?" (no), then,
    before it takes the flight, another process's fetch fails, marks the failure and lets go of the
    flight. Taking the free flight, the request must still honour the failure: one connection per
    cool-down window, whoever looked when."""

    looked = []
    real = flights.failed_recently

    def failing_elsewhere_after_the_look(pk, when):
        answer = real(pk, when)
        if not looked:  # the look in issuer_keys_get: then the other process's fetch fails
            looked.append(answer)
            flights.failed_mark(pk, when)
        return answer

    monkeypatch.setattr(flights, "failed_recently", failing_elsewhere_after_the_look)
    with pytest.raises(TemporarilyUnavailable):
        issuer_keys_get(issuer=reloaded(issuer).snapshot(), now=now)
    assert looked == [False] and server.requests == []
    assert cache.get(flights.mark_key("fetch", issuer.pk)) is None  # the flight is free again


@pytest.mark.django_db
def test_after_a_failure_requests_answer_503_at_once_without_a_query_or_a_fetch(
    issuer, server, now, django_assert_num_queries
):
    server.routes[DISCOVERY] = Route(status=500)
    with pytest.raises(TemporarilyUnavailable):
        issuer_keys_get(issuer=issuer.snapshot(), now=now)
    snapshot = reloaded(issuer).snapshot()
    with django_assert_num_queries(0):
        for _ in range(50):
            with pytest.raises(TemporarilyUnavailable):
                issuer_keys_get(issuer=snapshot, now=now + timedelta(seconds=5))
    assert len(server.requests) == 1


@pytest.mark.django_db(transaction=True)
def test_a_fetch_over_the_budget_completes_in_the_background_and_serves_the_next_request(issuer, server, now, settings):
    settings.JWTEX_REQUEST_FETCH_BUDGET = 0.2
    server.json("/jwks", {"keys": [K1]}, delay=0.6)
    with pytest.raises(TemporarilyUnavailable):
        issuer_keys_get(issuer=issuer.snapshot(), now=now)
    # The background thread stores the keys it fetched, then lets the flight go. Wait for that
    # rather than read the row while it is written: the test database (SQLite's shared-cache
    # memory) refuses a read of a table being written ("database table is locked") at once.
    assert poll(lambda: cache.get(flights.mark_key("fetch", issuer.pk)) is None, timeout=5, interval=0.05)
    stored = reloaded(issuer)
    assert stored.jwks and kids(issuer_keys_get(issuer=stored.snapshot(), now=now)) == {"k1"}
    assert server.count("/jwks") == 1
