"""exchange.tasks on a REAL Celery worker (a subprocess, prefork, concurrency 2) fed through a
real broker, against a database both processes share: what production runs (docs/operations.md#background-work).

These run only with ``JWTEX_TEST_CELERY_WORKER=1`` plus PostgreSQL and Redis, as ``.ci/run``
sets them up::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \\
    CELERY_BROKER_URL=redis://127.0.0.1:6379/14 CACHE_URL=redis://127.0.0.1:6379/15 \\
    JWTEX_TEST_CELERY_WORKER=1 .venv/bin/python -m pytest tests/exchange/test_celery_worker.py --create-db

The tests commit their rows (``transaction=True``) so that the worker sees them, send tasks
through the broker, and poll the database for the effect (there is no result backend); the
worker's log says which tasks it ran and what they returned. The same tasks run eagerly, with
no broker, in tests/exchange/test_tasks.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection, connections, transaction
from django.utils import timezone

from exchange.keys import RotationResult, signing_key_rotate
from exchange.models import Issuer, KeyState, SigningKey
from jwtex_site.celery import app
from tenants.models import Tenant
from tests.conftest import make_tenant, poll
from tests.servers import celery_worker_start, celery_worker_stop
from tests.upstreams import DISCOVERY

from .test_tasks import age_active_key

RUN_WORKER_TESTS = os.environ.get("JWTEX_TEST_CELERY_WORKER") == "1"
HOW_TO_RUN = (
    "real-worker test: set JWTEX_TEST_CELERY_WORKER=1 with DATABASE_URL=postgres://… and "
    "CELERY_BROKER_URL=redis://… (and CACHE_URL=redis://…), as .ci/run does"
)
NODE_PREFIX = "jwtex-test@"
READY_TIMEOUT = 30.0
EFFECT_TIMEOUT = 30.0


def on_worker(test: Callable) -> Callable:
    """A real-worker test: committed rows, skipped unless asked for."""
    for mark in (
        pytest.mark.celery_worker,
        pytest.mark.skipif(not RUN_WORKER_TESTS, reason=HOW_TO_RUN),
        pytest.mark.django_db(transaction=True),
        pytest.mark.usefixtures("broker"),
    ):
        test = mark(test)
    return test


# ---------------------------------------------------------------------------- the worker


def database_url(db: Mapping[str, Any]) -> str:
    """A ``DATABASE_URL`` for the database the test process uses (pytest-django's renamed test
    database, not the one settings name), so that the worker reads and writes the same rows."""
    if db["ENGINE"] != "django.db.backends.postgresql":
        raise ValueError(
            f"the worker cannot share a {db['ENGINE']} test database ({db['NAME']}): use DATABASE_URL=postgres://…"
        )
    user = quote(db.get("USER") or "", safe="")
    password = db.get("PASSWORD") or ""
    auth = f"{user}:{quote(password, safe='')}@" if password else (f"{user}@" if user else "")
    host = quote(db.get("HOST") or "", safe="")
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{quote(db['NAME'], safe='')}"


def worker_environment(*, db: Mapping[str, Any], base: Mapping[str, str], var_dir: Path) -> dict[str, str]:
    broker = base.get("CELERY_BROKER_URL", "")
    if not broker.startswith(("redis://", "rediss://")):
        raise ValueError(f"the worker tests need CELERY_BROKER_URL=redis://… (got {broker or 'nothing'})")
    env = {k: v for k, v in base.items() if k != "CELERY_TASK_ALWAYS_EAGER"}
    env.update(
        DJANGO_SETTINGS_MODULE="jwtex_site.settings",
        DATABASE_URL=database_url(db),
        JWTEX_KEY_ENCRYPTION_KEYS=",".join(settings.JWTEX_KEY_ENCRYPTION_KEYS),
        JWTEX_ALLOW_INSECURE_ISSUERS="1",  # the upstream is a loopback http server
        JWTEX_VAR_DIR=str(var_dir),
        JWTEX_LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    return env


@dataclass
class Worker:
    process: subprocess.Popen
    log_path: Path
    test_start: int = 0  # log offset where the current test began

    def log(self, since: int = 0) -> str:
        return self.log_path.read_text(errors="replace")[since:]

    def offset(self) -> int:
        return len(self.log())

    def messages(self, since: int = 0) -> list[str]:
        """The messages of the worker's log lines (JSON objects, as web and worker log)."""
        out = []
        for line in self.log(since).splitlines():
            try:
                out.append(str(json.loads(line)["message"]))
            except (ValueError, KeyError, TypeError):
                out.append(line)
        return out

    def results(self, task_ids: list[str], since: int = 0) -> dict[str, str]:
        """The return value the worker logged for each of these tasks that has finished."""
        found = {}
        for line in self.messages(since):
            match = re.search(r"Task ([\w.]+)\[([0-9a-f-]+)\] succeeded in [\d.e-]+s: (.*)$", line)
            if match and match.group(2) in task_ids:
                found[match.group(2)] = match.group(3).strip()
        return found

    def succeeded(self, name: str, since: int = 0) -> list[str]:
        """Return values of every run of task ``name`` since ``since``."""
        pattern = re.compile(rf"Task {re.escape(name)}\[[0-9a-f-]+\] succeeded in [\d.e-]+s: (.*)$")
        return [m.group(1).strip() for line in self.messages(since) if (m := pattern.search(line))]

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


def _ping() -> list[str]:
    replies = app.control.ping(timeout=0.5) or []
    return [name for reply in replies for name in reply if name.startswith(NODE_PREFIX)]


@pytest.fixture(scope="module")
def worker(django_db_setup, tmp_path_factory):
    """One real worker for the module (a start costs seconds), on the test database."""
    try:
        env = worker_environment(db=connection.settings_dict, base=os.environ, var_dir=tmp_path_factory.mktemp("var"))
    except ValueError as exc:
        pytest.fail(f"JWTEX_TEST_CELERY_WORKER=1, but {exc}", pytrace=False)
    stale = _ping()
    if stale:
        pytest.fail(f"another test worker already consumes this broker: {stale}; stop it first", pytrace=False)
    app.control.purge()  # messages left by an interrupted run would reach our worker
    log_path = tmp_path_factory.mktemp("celery-worker") / "worker.log"
    process = celery_worker_start(env, log_path, node=f"{NODE_PREFIX}%h")
    running = Worker(process, log_path)
    try:
        ready = poll(_ping, timeout=READY_TIMEOUT, interval=0.2, stop=lambda: process.poll() is not None)
        if process.poll() is not None:
            pytest.fail(f"the worker exited ({process.returncode}) before it was ready:\n{running.tail()}")
        if not ready:
            pytest.fail(f"the worker was not ready within {READY_TIMEOUT:.0f} s:\n{running.tail()}")
        yield running
    finally:
        celery_worker_stop(process)


@pytest.fixture
def live_worker(worker):
    """The worker, with this test's part of its log printed at teardown: pytest shows it when the test fails."""
    worker.test_start = worker.offset()
    yield worker
    print(f"---- celery worker log during this test ----\n{worker.log(worker.test_start)}")


@pytest.fixture
def broker():
    """Send through the broker: tests.settings makes ``.delay()`` eager in this process."""
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = False
    yield app
    app.conf.task_always_eager = eager


def send(name: str, *args: Any) -> str:
    return app.send_task(name, args=list(args)).id


def eventually(check: Callable[[], Any], *, what: str, worker: Worker, timeout: float = EFFECT_TIMEOUT) -> Any:
    value = poll(check, timeout=timeout, stop=lambda: worker.process.poll() is not None)
    if value:
        return value
    if worker.process.poll() is not None:
        pytest.fail(f"the worker died ({worker.process.returncode}) while waiting for {what}:\n{worker.tail()}")
    pytest.fail(f"no {what} within {timeout:.0f} s; worker log:\n{worker.tail()}")


def finished(worker: Worker, task_ids: list[str]) -> dict[str, str]:
    """Wait until the worker logged each task's success; their return values (as logged)."""

    def all_done() -> dict[str, str] | None:
        found = worker.results(task_ids, since=worker.test_start)
        return found if len(found) == len(task_ids) else None

    return eventually(all_done, what=f"completion of tasks {task_ids}", worker=worker)


def states(tenant: Tenant) -> list[str]:
    return sorted(SigningKey.objects.filter(tenant=tenant).values_list("state", flat=True))


# ---------------------------------------------------------------------------- harness (no worker needed)


def test_the_worker_gets_the_test_database_as_a_url():
    db = {"ENGINE": "django.db.backends.postgresql", "NAME": "test_test", "USER": "postgres", "HOST": "127.0.0.1",
          "PORT": 5432, "PASSWORD": ""}  # fmt: skip
    assert database_url(db) == "postgres://postgres@127.0.0.1:5432/test_test"
    assert database_url({**db, "PASSWORD": "p@ss/w"}) == "postgres://postgres:p%40ss%2Fw@127.0.0.1:5432/test_test"

    import dj_database_url

    parsed = dj_database_url.parse(database_url({**db, "PASSWORD": "p@ss/w"}))
    assert (parsed["NAME"], parsed["USER"], parsed["PASSWORD"], parsed["HOST"], parsed["PORT"]) == (
        "test_test", "postgres", "p@ss/w", "127.0.0.1", 5432,
    )  # fmt: skip


def test_the_worker_environment_is_not_eager_and_refuses_what_it_cannot_share(tmp_path):
    db = {"ENGINE": "django.db.backends.postgresql", "NAME": "test_x", "USER": "u", "HOST": "h", "PORT": "1"}
    base = {"CELERY_BROKER_URL": "redis://127.0.0.1:6379/14", "CELERY_TASK_ALWAYS_EAGER": "1", "PATH": "/bin"}

    env = worker_environment(db=db, base=base, var_dir=tmp_path)

    assert "CELERY_TASK_ALWAYS_EAGER" not in env
    assert env["DATABASE_URL"] == "postgres://u@h:1/test_x"
    assert env["CELERY_BROKER_URL"] == base["CELERY_BROKER_URL"]
    assert env["JWTEX_KEY_ENCRYPTION_KEYS"] == ",".join(settings.JWTEX_KEY_ENCRYPTION_KEYS)
    assert env["DJANGO_SETTINGS_MODULE"] == "jwtex_site.settings"
    with pytest.raises(ValueError, match="sqlite3"):
        worker_environment(db={"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}, base=base, var_dir=tmp_path)
    with pytest.raises(ValueError, match="CELERY_BROKER_URL=redis"):
        worker_environment(db=db, base={"CELERY_BROKER_URL": "filesystem://"}, var_dir=tmp_path)


# ---------------------------------------------------------------------------- on the worker


@on_worker
def test_the_worker_refreshes_an_issuer_from_its_upstream(live_worker, oidc_server, upstream):
    tenant = make_tenant("acme")
    issuer = Issuer.objects.create(tenant=tenant, issuer_id="ci", issuer=oidc_server.url, audiences=[upstream.audience])
    before = timezone.now()

    task = send("exchange.refresh_issuer_jwks", issuer.pk)

    row = eventually(
        lambda: Issuer.objects.filter(pk=issuer.pk, jwks__isnull=False).first(),
        what="JWKS stored by the worker",
        worker=live_worker,
    )
    assert finished(live_worker, [task]) == {task: "True"}  # the worker ran it, and the keys changed
    assert row.jwks == upstream.jwks
    assert row.jwks_fetched_at >= before
    assert row.jwks_expires_at > row.jwks_fetched_at
    assert row.jwks_resolved_uri == oidc_server.url + "/jwks"
    assert (row.jwks_consecutive_failures, row.jwks_last_error) == (0, "")
    assert oidc_server.paths == [DISCOVERY, "/jwks"]  # fetched by the worker: this process never asked


@on_worker
def test_the_worker_rotates_a_tenants_keys_when_forced(live_worker):
    tenant = make_tenant("acme")
    active = SigningKey.objects.get(tenant=tenant, state=KeyState.ACTIVE)

    task = send("exchange.rotate_tenant_keys", tenant.pk, True)

    key = eventually(
        lambda: SigningKey.objects.filter(tenant=tenant, state=KeyState.NEXT).first(),
        what="a next key",
        worker=live_worker,
    )
    assert finished(live_worker, [task]) == {task: "True"}
    assert states(tenant) == [KeyState.ACTIVE, KeyState.NEXT]
    assert SigningKey.objects.get(tenant=tenant, state=KeyState.ACTIVE).kid == active.kid
    assert key.kid != active.kid
    assert key.activate_after > key.created_at  # published before it may sign
    # Its private part was encrypted under the key the worker was given: this process opens it.
    from exchange.keys import signing_key_load

    assert signing_key_load(key).kid == key.kid


def _rotate_in_thread(tenant_pk: int, start: threading.Barrier, results: list, errors: list) -> threading.Thread:
    def run() -> None:
        try:
            start.wait(timeout=10)
            results.append(signing_key_rotate(tenant_id=tenant_pk, now=timezone.now(), force=True))
        except BaseException as exc:  # noqa: BLE001 - reported by the test, not lost in the thread
            errors.append(exc)
        finally:
            connections.close_all()  # this thread's own connection

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@on_worker
def test_concurrent_rotations_of_one_tenant_publish_one_new_key(live_worker):
    tenant = make_tenant("acme")
    results: list[RotationResult] = []
    errors: list[BaseException] = []
    start = threading.Barrier(3)
    threads = [_rotate_in_thread(tenant.pk, start, results, errors) for _ in range(2)]

    # Two forced rotations on the worker (concurrency 2) and two in this process, all at once.
    tasks = [send("exchange.rotate_tenant_keys", tenant.pk, True) for _ in range(2)]
    start.wait(timeout=10)
    for thread in threads:
        thread.join(timeout=EFFECT_TIMEOUT)

    assert errors == []
    returned = finished(live_worker, tasks)
    assert states(tenant) == [KeyState.ACTIVE, KeyState.NEXT]
    created_here = sum(1 for result in results if result.created)
    created_by_worker = sum(1 for value in returned.values() if value == "True")
    assert created_here + created_by_worker == 1


@on_worker
def test_while_one_rotation_holds_the_tenant_the_others_skip(live_worker):
    tenant = make_tenant("acme")
    results: list[RotationResult] = []
    errors: list[BaseException] = []

    with transaction.atomic():
        # This process holds the tenant's row lock, as a rotation in progress does.
        Tenant.objects.select_for_update().get(pk=tenant.pk)
        tasks = [send("exchange.rotate_tenant_keys", tenant.pk, True) for _ in range(2)]
        returned = finished(live_worker, tasks)
        _rotate_in_thread(tenant.pk, threading.Barrier(1), results, errors).join(timeout=EFFECT_TIMEOUT)
        mine = signing_key_rotate(tenant_id=tenant.pk, now=timezone.now(), force=True)

    assert errors == []
    assert returned == {task: "False" for task in tasks}  # skipped, not waited for
    assert [(r.skipped, r.created) for r in results] == [(True, ())]
    assert len(mine.created) == 1
    assert states(tenant) == [KeyState.ACTIVE, KeyState.NEXT]


@on_worker
def test_sweeps_sent_through_the_broker_fan_out_to_tasks_the_worker_runs(live_worker, oidc_server, upstream):
    now = timezone.now()
    due, not_due = make_tenant("due"), make_tenant("not-due")
    for tenant in (due, not_due):
        age_active_key(tenant, days=30)  # a rotation would create a next key for either
    Tenant.objects.filter(pk=due.pk).update(keys_next_check_at=now - timedelta(minutes=1))
    Tenant.objects.filter(pk=not_due.pk).update(keys_next_check_at=now + timedelta(hours=1))
    # The issuers live in a tenant of their own: this test is about the fan-out.
    issuers_tenant = make_tenant("issuers")
    Tenant.objects.filter(pk=issuers_tenant.pk).update(keys_next_check_at=now + timedelta(hours=1))
    stale = Issuer.objects.create(tenant=issuers_tenant, issuer_id="stale", issuer=oidc_server.url, audiences=["x"])
    fresh = Issuer.objects.create(
        tenant=issuers_tenant, issuer_id="fresh", issuer=oidc_server.url, audiences=["x"],
        jwks_expires_at=now + timedelta(hours=1),
    )  # fmt: skip

    sweeps = [send("exchange.sweep_signing_keys"), send("exchange.sweep_issuers")]

    assert sorted(finished(live_worker, sweeps).values()) == ["1", "1"]  # one due tenant, one due issuer
    eventually(
        lambda: (
            SigningKey.objects.filter(tenant=due, state=KeyState.NEXT).exists()
            and Issuer.objects.filter(pk=stale.pk, jwks__isnull=False).exists()
        ),
        what="the fanned-out rotation and refresh",
        worker=live_worker,
    )
    since = live_worker.test_start
    eventually(
        lambda: (
            live_worker.succeeded("exchange.rotate_tenant_keys", since)
            and live_worker.succeeded("exchange.refresh_issuer_jwks", since)
        ),
        what="the fanned-out tasks to finish",
        worker=live_worker,
    )
    assert live_worker.succeeded("exchange.rotate_tenant_keys", since) == ["True"]
    assert live_worker.succeeded("exchange.refresh_issuer_jwks", since) == ["True"]
    assert states(due) == [KeyState.ACTIVE, KeyState.NEXT]
    assert states(not_due) == [KeyState.ACTIVE]
    assert Tenant.objects.get(pk=not_due.pk).keys_next_check_at == now + timedelta(hours=1)
    assert Issuer.objects.get(pk=stale.pk).jwks == upstream.jwks
    assert Issuer.objects.get(pk=fresh.pk).jwks is None


@on_worker
def test_an_issuer_refresh_is_not_skipped_while_its_tenant_rotates_keys(live_worker, oidc_server, upstream):
    tenant = make_tenant("acme")
    issuer = Issuer.objects.create(tenant=tenant, issuer_id="ci", issuer=oidc_server.url, audiences=["x"])

    with transaction.atomic():
        # The tenant's row lock, as signing_key_rotate holds it: it guards keys, not issuers.
        Tenant.objects.select_for_update().get(pk=tenant.pk)
        task = send("exchange.refresh_issuer_jwks", issuer.pk)
        # Held until the worker fetches (not skipped) or the task is over (skipped). Not until
        # the task ends either way: its save bumps the tenant's config_version, which waits
        # for this lock, as it would briefly wait for a real rotation.
        eventually(
            lambda: "/jwks" in oidc_server.paths or live_worker.results([task], since=live_worker.test_start),
            what="a fetch or the end of the task",
            worker=live_worker,
        )

    assert finished(live_worker, [task]) == {task: "True"}
    assert Issuer.objects.get(pk=issuer.pk).jwks == upstream.jwks
