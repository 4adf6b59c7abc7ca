"""Several nodes, proven (docs/operations.md#several-nodes): two web nodes (``make serve`` on two ports),
one Celery worker, one PostgreSQL and one Redis between them, as the README's deployment runs.

- A change made through ``jwtex_apply`` is served by both nodes within 2 s (measured, printed).
- A tenant's rate limit holds over both nodes combined (it is counted in the shared cache).
- A key rotation run by the worker: both nodes publish the same JWKS within 2 s; once the new key
  signs, a token from either node verifies through the other node's JWKS, and so does one the
  old key signed.
- One node SIGKILLed (its whole process group) under load: the other answers every request 200,
  and every token issued anywhere in the test has exactly one audit record within 15 s.

Each node runs one server process (``WEB_CONCURRENCY=1``), so what a node answers comes from one
runtime cache: "served by both nodes" is then "by every process". The nodes run with production's
defaults (``tests.servers.deployment_environment``), among them the 2 s configuration re-check.

Run it as ``.ci/run`` does::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test CELERY_BROKER_URL=redis://127.0.0.1:6379/14 \\
    CACHE_URL=redis://127.0.0.1:6379/15 JWTEX_TEST_SERVED=1 JWTEX_TEST_CELERY_WORKER=1 \\
    .venv/bin/python -m pytest -p no:xdist tests/exchange/test_multinode.py -s
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import jwt
import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from exchange.models import PUBLISHED_KEY_STATES, ExchangeRecord, KeyState, SigningKey
from jwtex_site.celery import app
from tenants.models import Tenant
from tests.conftest import poll
from tests.servers import (
    Client,
    Served,
    celery_worker_start,
    celery_worker_stop,
    celery_workers,
    deployment_environment,
    serve,
)


def _missing() -> list[str]:
    """What this run lacks for the test, in the words of its environment."""
    missing = [f"{name}=1" for name in ("JWTEX_TEST_SERVED", "JWTEX_TEST_CELERY_WORKER") if os.environ.get(name) != "1"]
    if django_settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        missing.append("DATABASE_URL=postgres://…")
    if not django_settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        missing.append("CELERY_BROKER_URL=redis://…")
    if not os.environ.get("CACHE_URL", "").startswith(("redis://", "rediss://")):
        missing.append("CACHE_URL=redis://…")
    return missing


HOW_TO_RUN = (
    f"several-nodes test: needs {', '.join(_missing())}; run it as .ci/run does: DATABASE_URL=postgres://… "
    "CELERY_BROKER_URL=redis://… CACHE_URL=redis://… JWTEX_TEST_SERVED=1 JWTEX_TEST_CELERY_WORKER=1 "
    ".venv/bin/python -m pytest -p no:xdist tests/exchange/test_multinode.py -s"
)
pytestmark = [
    pytest.mark.served,
    pytest.mark.celery_worker,
    pytest.mark.skipif(bool(_missing()), reason=HOW_TO_RUN),
    pytest.mark.django_db(transaction=True),
]

PUBLIC_URL = "http://127.0.0.1:8000"  # one public URL for both nodes, as behind one load balancer
NODE_NAME = "jwtex-multinode@%h"
PROPAGATION_BOUND = 2.0  # docs/operations.md#several-nodes: "served by every node within 2 s"
GIVE_UP = 5.0  # how long a propagation is watched before the test says it never came
SETTLED = 0.5  # a node counts as changed once it answered only the new answer for this long
AUDIT_BOUND = 15.0


# ---------------------------------------------------------------------------- the deployment


@dataclass
class Deployment:
    nodes: dict[str, Served]
    worker: Any  # subprocess.Popen
    worker_log: Path

    def worker_tail(self, lines: int = 40) -> str:
        return "\n".join(self.worker_log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def deployment(transactional_db, tmp_path) -> Iterator[Deployment]:
    """Two nodes and a worker on this test's database, started together; every process is
    stopped at teardown, whatever happened."""
    env = deployment_environment(
        db=connection.settings_dict, key_encryption_keys=django_settings.JWTEX_KEY_ENCRYPTION_KEYS
    )
    others = celery_workers()
    if others:
        pytest.fail(f"other workers consume this broker and would take our tasks: {others}; stop them", pytrace=False)
    app.control.purge()  # messages an interrupted run left would reach our worker
    eager, app.conf.task_always_eager = app.conf.task_always_eager, False  # tests.settings makes tasks eager

    def node(name: str) -> Served:
        return serve(env, tmp_path, WEB_CONCURRENCY="1", JWTEX_VAR_DIR=str(tmp_path / name / "var"),
                     JWTEX_AUDIT_SPOOL_DIR=str(tmp_path / name / "spool"))  # fmt: skip

    worker_log = tmp_path / "worker.log"
    worker_env = {**env, "JWTEX_LOG_LEVEL": "INFO", "JWTEX_VAR_DIR": str(tmp_path / "worker" / "var"),
                  "JWTEX_AUDIT_SPOOL_DIR": str(tmp_path / "worker" / "spool")}  # fmt: skip
    worker = celery_worker_start(worker_env, worker_log, node=NODE_NAME, concurrency=1)
    nodes: dict[str, Served] = {}
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            starting = {name: pool.submit(node, name) for name in ("a", "b")}
            errors = []
            for name, future in starting.items():
                try:
                    nodes[name] = future.result(timeout=60)
                except Exception as exc:  # noqa: BLE001 - reported below, once the other one is kept for teardown
                    errors.append(f"node {name}: {exc}")
        if errors:
            pytest.fail("\n".join(errors), pytrace=False)
        prefix = NODE_NAME.split("@")[0] + "@"
        if not poll(lambda: any(n.startswith(prefix) for n in celery_workers()), timeout=30, interval=0.2,
                    stop=lambda: worker.poll() is not None):  # fmt: skip
            pytest.fail(f"the worker was not ready (exit code {worker.poll()}):\n" + worker_log.read_text()[-3000:])
        yield Deployment(nodes, worker, worker_log)
    finally:
        for served in nodes.values():
            served.stop()
        celery_worker_stop(worker)
        app.conf.task_always_eager = eager


def _config(upstream, *, generation: str) -> str:
    """Two tenants trusting the ``upstream`` fixture through a static JWKS: ``acme`` (no rate
    limit) tags every token with ``generation``; ``limited`` allows 20 exchanges a minute."""
    issuer = {"id": "ci", "issuer": upstream.issuer, "audiences": [upstream.audience], "jwks": upstream.jwks}
    rule = {"name": "main", "issuers": ["ci"], "when": "claims.ref == 'refs/heads/main'", "effect": "allow"}
    return json.dumps({"tenants": [
        {"slug": "acme", "name": "Acme", "rate_limit_per_minute": 0, "issuers": [issuer],
         "rules": [{**rule, "session_tags": {"repository": "claims.repository", "generation": f"'{generation}'"}}]},
        {"slug": "limited", "name": "Limited", "rate_limit_per_minute": 20, "issuers": [issuer], "rules": [rule]},
    ]})  # fmt: skip


def _apply(document: str) -> None:
    """``manage.py jwtex_apply -`` on the database the nodes read (this test's, committed)."""
    call_command("jwtex_apply", "-", stdin=StringIO(document), stdout=StringIO())


def _payload(token: bytes | str) -> dict[str, Any]:
    part = (token.encode() if isinstance(token, str) else token).split(b".")[1]
    return json.loads(base64.urlsafe_b64decode(part + b"=" * (-len(part) % 4)))


@dataclass
class Issued:
    """Every token any node issued during the test, by ``jti``: each must have one audit record."""

    jtis: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, token: bytes) -> None:
        with self.lock:
            self.jtis.add(_payload(token)["jti"])


# ---------------------------------------------------------------------------- propagation


@dataclass
class Propagation:
    seconds: dict[str, float]  # node → from the change's return to its first answer of the new state for good
    old: Any
    new: Any


def _propagation(nodes: dict[str, Served], ask: Callable[[Client], Any], change: Callable[[], Any]) -> Propagation:
    """Ask every node ``ask`` over and over (a thread and a connection each) before, during and
    after ``change()`` (which returns the answer it should lead to), until every node has given
    only the new answer for ``SETTLED`` s, or ``GIVE_UP`` s have passed.

    The nodes re-check their configuration lazily, on the first request at least 2 s after the
    last check; asking all the time keeps that clock running as under real traffic, and a random
    lead before the change samples where in that cycle the change lands."""
    answers: dict[str, list[tuple[float, Any]]] = {name: [] for name in nodes}
    done = threading.Event()

    def keep_asking(name: str) -> None:
        client = Client(nodes[name].url, timeout=5)
        while not done.is_set():
            try:
                answer = ask(client)
            except Exception as exc:  # noqa: BLE001 - an answer like any other: the assertions show it
                answer = f"error: {exc!r}"
            answers[name].append((time.monotonic(), answer))
            done.wait(0.005)

    threads = [threading.Thread(target=keep_asking, args=(name,), daemon=True) for name in nodes]
    for thread in threads:
        thread.start()
    try:
        threading.Event().wait(random.uniform(0.3, 2.3))
        change_started = time.monotonic()
        new = change()
        changed = time.monotonic()

        def settled() -> bool:
            now = time.monotonic()
            return all((since := _new_since(answers[name], new, after=changed)) is not None and now - since >= SETTLED
                       for name in nodes)  # fmt: skip

        poll(settled, timeout=GIVE_UP, interval=0.05)
    finally:
        done.set()
        for thread in threads:
            thread.join(10)
    before = {answer for name in nodes for t, answer in answers[name] if t < change_started}
    assert len(before) == 1, f"the nodes disagreed, or failed, before the change: {before}"
    (old,) = before
    assert old != new, (old, new)
    seconds = {}
    for name in nodes:
        odd = [answer for _, answer in answers[name] if answer not in (old, new)]
        assert not odd, f"node {name} answered neither the old nor the new state: {odd[:3]}"
        since = _new_since(answers[name], new, after=changed)
        last = answers[name][-1]
        assert since is not None, (
            f"node {name} still answered {last[1]!r} {last[0] - changed:.2f} s after the change; wanted {new!r}"
        )
        seconds[name] = since - changed
    return Propagation(seconds, old, new)


def _new_since(answers: list[tuple[float, Any]], new: Any, *, after: float) -> float | None:
    """When the node began answering ``new`` for good (no other answer since), if it has; not
    before ``after`` (an answer while the change was still running counts from its return)."""
    answers = list(answers)
    if not answers or answers[-1][1] != new:
        return None
    first = len(answers) - 1
    while first > 0 and answers[first - 1][1] == new:
        first -= 1
    return max(answers[first][0], after)


# ---------------------------------------------------------------------------- the test


def test_two_nodes_and_a_worker_behave_as_one_service(deployment, upstream):
    started = time.monotonic()
    nodes = deployment.nodes
    issued = Issued()
    _apply(_config(upstream, generation="one"))

    # 1. A change through jwtex_apply reaches both nodes within 2 s.
    def generation(client: Client) -> str:
        status, body = client.exchange("acme", upstream.mint(), "ci")
        if status != 200:
            return f"HTTP {status}: {body[:200]!r}"
        issued.add(body)
        return _payload(body)["https://aws.amazon.com/tags"]["principal_tags"]["generation"][0]

    def apply_generation_two() -> str:
        _apply(_config(upstream, generation="two"))
        return "two"

    rules = _propagation(nodes, generation, apply_generation_two)
    _report("rule change (jwtex_apply): " + _seconds(rules))
    assert (rules.old, rules.new) == ("one", "two")

    # 2. The tenant's rate limit holds over both nodes combined.
    statuses = _thirty_exchanges_across_nodes(nodes, upstream, issued)
    assert Counter(status for _, status, _ in statuses) == {200: 20, 429: 10}, Counter(s for _, s, _ in statuses)
    assert {json.loads(body)["error"] for _, status, body in statuses if status == 429} == {"too_many_requests"}
    assert {node for node, status, _ in statuses if status == 200} == {"a", "b"}  # each counted the other's

    # 3. A key rotation by the worker: the same JWKS on both nodes, tokens verified across them.
    tenant = Tenant.objects.get(slug="acme")
    old_kid = SigningKey.objects.get(tenant=tenant, state=KeyState.ACTIVE).kid
    old_token = _exchange(nodes["a"], upstream, issued)
    assert jwt.get_unverified_header(old_token)["kid"] == old_kid

    def jwks(client: Client) -> str:
        status, body = client.get("/t/acme/.well-known/jwks.json")
        return body.decode() if status == 200 else f"HTTP {status}"

    def rotate_now_on_the_worker() -> str:
        returned = _run_on_worker(deployment, "exchange.rotate_tenant_keys", tenant.pk, True)
        assert returned == "True", f"rotate now on the worker changed nothing (it returned {returned})"
        return json.dumps(_published_jwks(tenant), separators=(",", ":"))

    published = _propagation(nodes, jwks, rotate_now_on_the_worker)
    _report("key published by the worker (rotate now): " + _seconds(published))
    next_kid = SigningKey.objects.get(tenant=tenant, state=KeyState.NEXT).kid
    assert [k["kid"] for k in json.loads(published.new)["keys"]] == [old_kid, next_kid]

    # The published key may sign once every relying party can have seen it (the JWKS max-age, an
    # hour for "rotate now"): that hour passes in the database, and the worker's next step
    # activates the key.
    an_hour_ago = timezone.now() - timedelta(hours=1, minutes=1)
    SigningKey.objects.filter(tenant=tenant, kid=next_kid).update(created_at=an_hour_ago, activate_after=an_hour_ago)

    def signing_kid(client: Client) -> str:
        status, body = client.exchange("acme", upstream.mint(), "ci")
        if status != 200:
            return f"HTTP {status}: {body[:200]!r}"
        issued.add(body)
        return jwt.get_unverified_header(body.decode())["kid"]

    def activate_on_the_worker() -> str:
        returned = _run_on_worker(deployment, "exchange.rotate_tenant_keys", tenant.pk, False)
        # While both nodes serve acme's exchanges (as the probes make them do), as under real traffic.
        assert returned == "True", (
            f"the worker's rotation step left acme's due next key unactivated (it returned {returned}): "
            "signing_key_rotate skips a tenant whose row it cannot lock at once (select_for_update(skip_locked=True), "
            "exchange/keys.py), and every exchange's audit INSERT in flight holds that row FOR KEY SHARE"
        )
        return SigningKey.objects.get(tenant=tenant, state=KeyState.ACTIVE).kid

    signing = _propagation(nodes, signing_kid, activate_on_the_worker)
    _report("new key signing (activated by the worker): " + _seconds(signing))
    assert (signing.old, signing.new) == (old_kid, next_kid)
    assert SigningKey.objects.get(tenant=tenant, kid=old_kid).state == KeyState.RETIRING

    served_jwks = {name: json.loads(_get(served, "/t/acme/.well-known/jwks.json")) for name, served in nodes.items()}
    assert served_jwks["a"] == served_jwks["b"] == _published_jwks(tenant)
    tokens = {name: _exchange(served, upstream, issued) for name, served in nodes.items()}
    for signer, verifier in (("a", "b"), ("b", "a")):
        claims = _verify(tokens[signer], served_jwks[verifier])
        assert jwt.get_unverified_header(tokens[signer])["kid"] == next_kid
        assert claims["iss"] == f"{PUBLIC_URL}/t/acme"
    for verifier in nodes:
        _verify(old_token, served_jwks[verifier])  # the retiring key stays published

    # 4. A node lost: the other serves on, and no token goes without its record.
    answered = _load_while_a_node_is_killed(nodes, upstream, issued, victim="a")
    survivor = answered["b"]
    assert survivor["after kill"] > 0, survivor
    assert set(survivor) == {200, "after kill"}, survivor  # every request to b: 200
    assert set(answered["a"]) <= {200, "after kill", "no answer after kill"}, answered["a"]
    issued_count, audited_after = _every_token_has_one_record(issued)

    wall = time.monotonic() - started
    _report(f"rate limit 20/min over 2 nodes: {Counter(s for _, s, _ in statuses)}; kill: a {dict(answered['a'])},"
            f" b {dict(survivor)}; {issued_count} tokens, each with one audit record ({audited_after:.1f} s after the"
            f" load); test {wall:.1f} s")  # fmt: skip
    # Asserted last, so that one late node does not hide what the other steps show.
    for propagation in (rules, published, signing):
        assert max(propagation.seconds.values()) <= PROPAGATION_BOUND, (
            f"not served by every node within {PROPAGATION_BOUND} s: {_seconds(propagation)}"
        )


def _report(figures: str) -> None:
    """Each figure as soon as it is measured (``pytest -s`` shows them, also when a later step fails)."""
    print(f"\nseveral nodes: {figures}", flush=True)


def _seconds(propagation: Propagation) -> str:
    return ", ".join(f"node {name} {seconds:.3f} s" for name, seconds in sorted(propagation.seconds.items()))


def _get(served: Served, path: str) -> bytes:
    status, body = Client(served.url).get(path)
    assert status == 200, (path, status, body[:300])
    return body


def _exchange(served: Served, upstream, issued: Issued) -> str:
    status, body = Client(served.url).exchange("acme", upstream.mint(), "ci")
    assert status == 200, (status, body[:300])
    issued.add(body)
    return body.decode()


def _verify(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """As a relying party would: the key by ``kid`` from the served JWKS, audience and algorithm pinned."""
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    return jwt.decode(token, key.key, algorithms=["ES256"], audience="sts.amazonaws.com", issuer=f"{PUBLIC_URL}/t/acme")


def _published_jwks(tenant: Tenant) -> dict[str, Any]:
    keys = SigningKey.objects.filter(tenant=tenant, state__in=PUBLISHED_KEY_STATES).order_by("created_at", "id")
    return {"keys": [dict(k.public_jwk) for k in keys]}


def _run_on_worker(deployment: Deployment, name: str, *args: Any) -> str:
    """Send task ``name`` through the broker and wait until the worker logged its success (its
    commit, and the epoch bump after it, came first); what it returned, as logged."""
    task_id = app.send_task(name, args=list(args)).id
    succeeded = re.compile(rf"\[{re.escape(task_id)}\] succeeded in [\d.e-]+s: (\w+)")

    def returned() -> str | None:
        match = succeeded.search(deployment.worker_log.read_text(errors="replace"))
        return match.group(1) if match else None

    value = poll(returned, timeout=30, interval=0.005, stop=lambda: deployment.worker.poll() is not None)
    if value is None:
        pytest.fail(f"the worker did not run {name}[{task_id}]:\n{deployment.worker_tail()}")
    return value


def _thirty_exchanges_across_nodes(nodes: dict[str, Served], upstream, issued: Issued) -> list[tuple[str, int, bytes]]:
    """30 exchanges for ``limited`` (20 a minute), alternating between the nodes, 6 at a time,
    all within one of the limit's fixed one-minute windows (exchange/services/rate_limits.py)."""
    left = 60 - time.time() % 60
    if left < 5:
        threading.Event().wait(left + 0.05)
    window = int(time.time() // 60)
    tokens = [upstream.mint() for _ in range(30)]

    def one(i: int) -> tuple[str, int, bytes]:
        name = "ab"[i % 2]
        status, body = Client(nodes[name].url).exchange("limited", tokens[i], "ci")
        if status == 200:
            issued.add(body)
        return name, status, body

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(one, range(30)))
    assert int(time.time() // 60) == window, "the 30 exchanges straddled a rate-limit window: the test's own fault"
    return statuses


def _load_while_a_node_is_killed(
    nodes: dict[str, Served], upstream, issued: Issued, *, victim: str
) -> dict[str, Counter]:
    """Four clients per node exchanging for 4 s; after 1.5 s the victim's whole process group is
    SIGKILLed. Answers by node, those after the kill counted apart ("after kill")."""
    answered = {name: Counter() for name in nodes}
    lock = threading.Lock()
    killed = threading.Event()
    stop = time.monotonic() + 4

    def client_loop(name: str) -> None:
        client = Client(nodes[name].url, timeout=5)
        while time.monotonic() < stop:
            try:
                status, body = client.exchange("acme", upstream.mint(), "ci")
            except OSError:  # the killed node's connection: no answer, no token
                with lock:
                    answered[name]["no answer after kill" if killed.is_set() else "no answer before kill"] += 1
                if killed.is_set():
                    return
                continue
            if status == 200:
                issued.add(body)
            with lock:
                answered[name][status] += 1
                if killed.is_set() and name != victim:
                    answered[name]["after kill"] += 1

    threads = [threading.Thread(target=client_loop, args=(name,), daemon=True) for name in nodes for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        threading.Event().wait(1.5)
        killed.set()
        nodes[victim].kill()
    finally:
        for thread in threads:
            thread.join(15)
    assert not any(thread.is_alive() for thread in threads), "clients still waiting 15 s after the load ended"
    return answered


def _every_token_has_one_record(issued: Issued) -> tuple[int, float]:
    """How many tokens were issued, and how long until each had its record (within 15 s)."""
    jtis = set(issued.jtis)
    assert jtis
    started = time.monotonic()

    def all_recorded() -> bool:
        return ExchangeRecord.objects.filter(issued_jti__in=jtis).values("issued_jti").distinct().count() == len(jtis)

    if not poll(all_recorded, timeout=AUDIT_BOUND, interval=0.5):
        recorded = set(ExchangeRecord.objects.filter(issued_jti__in=jtis).values_list("issued_jti", flat=True))
        pytest.fail(
            f"{len(jtis - recorded)} of {len(jtis)} issued tokens have no audit record after {AUDIT_BOUND:.0f} s"
        )
    counts = Counter(ExchangeRecord.objects.filter(issued_jti__in=jtis).values_list("issued_jti", flat=True))
    assert set(counts.values()) == {1}, [jti for jti, n in counts.items() if n != 1][:5]
    return len(jtis), time.monotonic() - started
