"""A burst of CI jobs always gets its tokens (docs/errors.md#bursts): a matrix build starts dozens of jobs in the
same second. Two ``make serve`` processes (two nodes, one process each) share PostgreSQL and the
Redis cache, as the README's production set-up runs; the upstream answers each request in 0.3 s.

- First use of an issuer (a new tenant; discovery, then the JWKS): 24 simultaneous exchanges, 12
  to each node, all ``200``; the upstream sees one discovery and one JWKS fetch.
- The upstream rotates its signing key (every token carries a new ``kid``): 24 simultaneous
  exchanges, all ``200``; the upstream sees one JWKS fetch.
- The same first-use burst with the default 8 threads a process (the cap: 4 waiters): every
  answer ``200`` or ``503``, still one fetch. Figures printed (``pytest -s``), for the README.

Run it as ``.ci/run`` does::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test CACHE_URL=redis://127.0.0.1:6379/15 \\
    JWTEX_TEST_SERVED=1 .venv/bin/python -m pytest -p no:xdist tests/exchange/test_served_burst.py -s
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings as django_settings
from django.db import connection

from exchange.models import Issuer, Rule
from tests.conftest import Upstream, make_tenant
from tests.servers import Client, Served, deployment_environment, serve
from tests.upstreams import DISCOVERY, oidc_upstream

RUN = os.environ.get("JWTEX_TEST_SERVED") == "1" and (
    os.environ.get("CACHE_URL", "").startswith(("redis://", "rediss://"))
)
pytestmark = [
    pytest.mark.served,
    pytest.mark.skipif(
        not RUN,
        reason="served burst tests: JWTEX_TEST_SERVED=1, DATABASE_URL=postgres://… and "
        "CACHE_URL=redis://…, as .ci/run sets them",
    ),
    pytest.mark.django_db(transaction=True),
]

JOBS = 24
LATENCY = 0.3  # seconds the upstream takes to answer each request


@pytest.fixture
def slow_upstream(upstream):
    """An OIDC upstream on loopback answering in 0.3 s, whose key set the test can rotate."""
    keys = {"jwks": upstream.jwks}
    server = oidc_upstream(lambda: keys["jwks"])
    for path in (DISCOVERY, "/jwks"):
        server.routes[path].delay = LATENCY
    minting = Upstream(issuer=server.url, rsa_key=upstream.rsa_key, ec_key=upstream.ec_key)
    yield server, minting, keys
    server.close()


def _nodes(tmp_path, threads: int) -> list[Served]:
    if connection.vendor != "postgresql":
        pytest.fail("JWTEX_TEST_SERVED=1 needs DATABASE_URL=postgres://…", pytrace=False)
    env = deployment_environment(
        db=connection.settings_dict, key_encryption_keys=django_settings.JWTEX_KEY_ENCRYPTION_KEYS
    )
    nodes: list[Served] = []
    try:
        for name in ("a", "b"):
            nodes.append(
                serve(
                    env,
                    tmp_path,
                    WEB_CONCURRENCY="1",
                    JWTEX_SERVER_THREADS=str(threads),
                    JWTEX_VAR_DIR=str(tmp_path / name / "var"),
                    JWTEX_AUDIT_SPOOL_DIR=str(tmp_path / name / "spool"),
                )
            )
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return nodes


def _tenant(slug: str, issuer_url: str, audience: str) -> None:
    tenant = make_tenant(slug, rate_limit_per_minute=0)
    issuer = Issuer.objects.create(tenant=tenant, issuer_id="ci", issuer=issuer_url, audiences=[audience])
    rule = Rule.objects.create(tenant=tenant, position=10, name="all", when="true", effect="allow")
    rule.issuers.add(issuer)


def _burst(nodes: list[Served], slug: str, tokens: list[str]) -> list[tuple[str, int, float, str]]:
    """Every token sent at the same moment, alternating between the nodes, each on a keep-alive
    connection opened beforehand: (node, status, seconds, error code) per token."""
    clients = [Client(nodes[i % len(nodes)].url, timeout=30) for i in range(len(tokens))]
    for client in clients:
        assert client.get("/healthz")[0] == 200  # connected, before the burst
    start = threading.Barrier(len(tokens))

    def one(i: int) -> tuple[str, int, float, str]:
        start.wait()
        began = time.monotonic()
        status, body = clients[i].exchange(slug, tokens[i], "ci")
        error = "" if status == 200 else json.loads(body).get("error", "")
        return "ab"[i % 2], status, time.monotonic() - began, error

    with ThreadPoolExecutor(max_workers=len(tokens)) as pool:
        return list(pool.map(one, range(len(tokens))))


def _figures(answers: list[tuple[str, int, float, str]]) -> str:
    seconds = sorted(s for _, _, s, _ in answers)
    statuses = Counter(status for _, status, _, _ in answers)
    by_node = {node: dict(Counter(status for n, status, _, _ in answers if n == node)) for node in "ab"}
    return (
        f"{dict(statuses)} (node a {by_node['a']}, node b {by_node['b']}); answered in {seconds[0]:.2f}–"
        f"{seconds[-1]:.2f} s, median {statistics.median(seconds):.2f} s"
    )


def test_a_burst_at_first_use_and_at_a_key_rotation_all_get_their_tokens(tmp_path, slow_upstream):
    server, minting, keys = slow_upstream
    _tenant("matrix", server.url, minting.audience)
    nodes = _nodes(tmp_path, threads=JOBS)  # 12 of a node's 24 threads may wait: the whole burst
    try:
        first = _burst(nodes, "matrix", [minting.mint() for _ in range(JOBS)])
        first_fetches = (server.count(DISCOVERY), server.count("/jwks"))
        print(
            f"\nburst at first use, 2 processes × {JOBS} threads, upstream {LATENCY} s: {_figures(first)}; "
            f"upstream fetches: discovery {first_fetches[0]}, JWKS {first_fetches[1]}"
        )

        rotated = Upstream(
            issuer=server.url,
            rsa_key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
            rsa_kid="upstream-rsa-2",
            ec_key=minting.ec_key,
        )
        keys["jwks"] = {"keys": [rotated.jwks["keys"][0], *minting.jwks["keys"]]}  # the new key first, as GitHub does
        second = _burst(nodes, "matrix", [rotated.mint() for _ in range(JOBS)])
        second_fetches = (server.count(DISCOVERY) - first_fetches[0], server.count("/jwks") - first_fetches[1])
        print(
            f"burst at an upstream key rotation (every token a new kid): {_figures(second)}; "
            f"upstream fetches: discovery {second_fetches[0]}, JWKS {second_fetches[1]}"
        )
    finally:
        for node in nodes:
            node.stop()
    assert Counter(status for _, status, _, _ in first) == {200: JOBS}, first
    assert first_fetches == (1, 1)
    assert Counter(status for _, status, _, _ in second) == {200: JOBS}, second
    assert second_fetches == (0, 1)


def test_a_burst_beyond_the_waiters_cap_is_refused_at_once_not_queued(tmp_path, slow_upstream):
    """With the default 8 threads a process, 4 requests of each process may wait for the fetch; the
    others answer 503 at once (they would hold threads other tenants need). What a job sees then."""
    server, minting, _ = slow_upstream
    _tenant("matrix", server.url, minting.audience)
    nodes = _nodes(tmp_path, threads=8)
    try:
        answers = _burst(nodes, "matrix", [minting.mint() for _ in range(JOBS)])
    finally:
        for node in nodes:
            node.stop()
    print(
        f"\nburst at first use, 2 processes × 8 threads (4 may wait), upstream {LATENCY} s: {_figures(answers)}; "
        f"upstream fetches: discovery {server.count(DISCOVERY)}, JWKS {server.count('/jwks')}"
    )
    assert {(status, error) for _, status, _, error in answers} <= {(200, ""), (503, "temporarily_unavailable")}
    assert sum(1 for _, status, _, _ in answers if status == 200) >= 2 * 4  # every waiter of both processes
    # Refused at once, not after waiting out a budget (2 s): a waiter's only 503 here would be that.
    refused = [seconds for _, status, seconds, _ in answers if status == 503]
    assert all(seconds < 2.0 for seconds in refused), refused
    assert (server.count(DISCOVERY), server.count("/jwks")) == (1, 1)
