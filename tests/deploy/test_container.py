"""The container image, run as production runs it (docs/deployment.md): ``migrate``, two ``web`` containers
on ports of their own, a ``worker`` and a ``beat``, against the test run's PostgreSQL and Redis.

- An exchange through each web container verifies against the JWKS the other serves; ``/readyz``
  answers 200; the image's health check passes for web, worker and beat.
- A key rotation run by the worker (rotate now) is published by both web containers.
- Every process runs as uid 10001, on a read-only root filesystem; the admin's assets are served.
- SIGTERM to a web container under load: the exchanges in flight are answered, every answer has
  exactly one audit record, and what the container spooled while the database was away is
  written before it exits (nothing left in its volume).

.ci/container builds the image and runs this with ``JWTEX_TEST_CONTAINER=1`` (then nothing may be
missing: the test fails rather than skips); elsewhere it is skipped, saying what it needs::

    JWTEX_TEST_CONTAINER=1 JWTEX_TEST_CONTAINER_IMAGE=localhost/jwtex:test \\
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/DB CELERY_BROKER_URL=redis://127.0.0.1:6379/N \\
    CACHE_URL=redis://127.0.0.1:6379/M .venv/bin/python -m pytest -p no:cacheprovider -s tests/deploy/test_container.py
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import threading
import time
from collections import Counter

import jwt
import pytest

from tests.conftest import poll
from tests.deploy.deployment import Deployment, deployment_start, missing_services, records
from tests.deploy.podman import IMAGE, MUST_RUN, cannot_run, podman, volume_files
from tests.servers import Client

pytestmark = pytest.mark.container


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, _upstream_keys):
    if not MUST_RUN:
        where = cannot_run() or "podman can run here"
        pytest.skip(f"container test: .ci/container builds the image and runs it with JWTEX_TEST_CONTAINER=1 ({where})")
    reason = cannot_run() or missing_services()
    if reason:
        pytest.fail(f"JWTEX_TEST_CONTAINER=1 but {reason}", pytrace=False)
    with deployment_start(tmp_path_factory.mktemp("containers"), _upstream_keys["upstream"]) as running:
        yield running


def _jti(token: bytes) -> str:
    payload = token.split(b".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))["jti"]


def test_the_image(deployment: Deployment):
    image = json.loads(podman("image", "inspect", IMAGE).stdout)[0]
    config = image["Config"]
    print(f"\nimage {IMAGE}: {image['Size'] / 1e6:.0f} MB")  # .ci/container prints it too
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["jwtex"] and config["Cmd"] == ["web"]
    assert "/var/lib/jwtex" in config["Volumes"]
    assert image["Healthcheck"]["Test"] == ["CMD", "jwtex", "healthcheck"]
    usage = podman("run", "--rm", "--read-only", "--health-interval", "disable", IMAGE, "help").stdout
    assert all(command in usage for command in ("web", "worker", "beat", "migrate", "manage"))
    assert "Applying exchange." in deployment.migrate_output  # migrate ran against the empty database


def test_ready_and_tokens_verify_across_the_web_containers(deployment: Deployment):
    web1, web2 = deployment.webs
    for web in (web1, web2):
        status, body = Client(web.url).get("/readyz")
        assert status == 200, body
        assert json.loads(body)["checks"] == {"database": "ok", "broker": "ok", "cache": "ok"}
    for issuing, publishing in ((web1, web2), (web2, web1)):
        status, token = Client(issuing.url).exchange("acme", deployment.upstream.mint(), "ci")
        assert status == 200, token
        keys = jwt.PyJWKSet.from_dict(json.loads(Client(publishing.url).get("/t/acme/.well-known/jwks.json")[1]))
        kid = jwt.get_unverified_header(token)["kid"]
        claims = jwt.decode(
            token,
            next(k for k in keys.keys if k.key_id == kid).key,
            algorithms=["ES256"],
            audience="sts.amazonaws.com",
            issuer=f"{deployment.public_url}/t/acme",
        )
        assert claims["sub"] == "repo:octo-org/octo-repo:ref:refs/heads/main"


def test_the_image_health_check_passes_for_web_worker_and_beat(deployment: Deployment):
    for container in (*deployment.webs, deployment.worker, deployment.beat):
        result = podman("healthcheck", "run", container.name, check=False, timeout=60)
        assert result.returncode == 0 and "unhealthy" not in result.stdout, (
            container.name,
            result.stdout,
            result.stderr,
        )


def test_every_process_runs_as_uid_10001_on_a_read_only_root(deployment: Deployment):
    for container in (*deployment.webs, deployment.worker, deployment.beat):
        assert container.uids() == {"10001"}, container.name
        assert container.inspect()["HostConfig"]["ReadonlyRootfs"] is True
        refused = container.exec("sh", "-c", "touch /opt/jwtex/probe", check=False)
        assert refused.returncode != 0 and "Read-only file system" in refused.stderr
        container.exec("sh", "-c", "touch /var/lib/jwtex/probe /tmp/probe && rm /var/lib/jwtex/probe /tmp/probe")
    # What the processes wrote: the spool directory, metrics files (web) and beat's schedule.
    written = deployment.beat.exec("sh", "-c", "ls /var/lib/jwtex").stdout.split()
    assert written[0] == "audit-spool" and all(name.startswith("celerybeat-schedule") for name in written[1:]), written


def test_the_image_serves_the_admin_assets(deployment: Deployment):
    client = Client(deployment.webs[0].url)
    status, body = client.get("/static/admin/css/base.css")
    assert status == 200 and b"body" in body
    status, page = client.get("/admin/login/")
    assert status == 200 and b"/static/admin/css/base.css" in page


def test_a_key_rotated_by_the_worker_is_published_by_both_web_containers(deployment: Deployment):
    def published() -> set[tuple[str, ...]]:  # what every server process of both containers serves
        seen = set()
        for web in deployment.webs:
            for _ in range(6):  # a fresh connection each: the processes of a container take turns
                status, body = Client(web.url).get("/t/acme/.well-known/jwks.json")
                seen.add(tuple(sorted(key["kid"] for key in json.loads(body)["keys"])) if status == 200 else ())
        return seen

    (before,) = published()
    assert len(before) == 1
    deployment.worker.exec(
        "jwtex",
        "manage",
        "shell",
        "-c",
        "from exchange.tasks import rotate_tenant_keys; from tenants.models import Tenant; "
        "rotate_tenant_keys.delay(Tenant.objects.get(slug='acme').pk, True)",
    )
    started = time.monotonic()
    assert poll(
        lambda: (seen := published()) and len(seen) == 1 and len(next(iter(seen))) == 2, timeout=20, interval=0.1
    ), (published(), deployment.worker.logs()[-3000:])
    print(
        f"\nrotate now (the worker's task): the new key published by both web containers "
        f"{time.monotonic() - started:.2f} s after the task was sent"
    )
    assert set(before) < set(next(iter(published())))
    assert re.search(r"Task exchange\.rotate_tenant_keys\[[^]]+\] succeeded", deployment.worker.logs())


class Connection:
    """One keep-alive connection that never retries: a request either has its answer or fails."""

    def __init__(self, url: str) -> None:
        self.url, self.http = url, None

    def exchange(self, slug: str, token: str) -> tuple[int, bytes]:
        if self.http is None:
            host, port = self.url.removeprefix("http://").split(":")
            self.http = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            self.http.request(
                "POST", f"/t/{slug}/exchange?issuerId=ci", token.encode(), {"Content-Type": "application/jwt"}
            )
            response = self.http.getresponse()
            return response.status, response.read()
        except BaseException:
            self.http.close()
            self.http = None
            raise


def _load(url: str, deployment: Deployment, stop: threading.Event) -> tuple[Counter, set[str], list[threading.Thread]]:
    """8 clients exchanging for tenant term until stopped, or until the server refuses connections."""
    statuses: Counter = Counter()
    issued: set[str] = set()
    lock = threading.Lock()

    def worker() -> None:
        connection = Connection(url)
        while not stop.is_set():
            try:
                status, body = connection.exchange("term", deployment.upstream.mint())
            except ConnectionRefusedError:  # the server has closed its socket: nothing was sent
                with lock:
                    statuses["refused"] += 1
                return
            except (OSError, http.client.HTTPException):  # cut after sending: perhaps answered, perhaps not
                with lock:
                    statuses["cut"] += 1
                continue
            with lock:
                statuses[status] += 1
                if status == 200:
                    issued.add(_jti(body))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    return statuses, issued, threads


def test_sigterm_under_load_answers_what_is_in_flight_and_loses_no_audit_record(deployment: Deployment):
    web = deployment.webs[0]
    stop = threading.Event()
    statuses, issued, threads = _load(web.url, deployment, stop)
    slow: list[int | str] = []

    def slow_exchange() -> None:  # in flight for 2 s when SIGTERM comes
        try:
            token = deployment.upstream.mint(iss=deployment.slow_issuer)
            slow.append(Connection(web.url).exchange("slow", token)[0])
        except OSError as exc:
            slow.append(type(exc).__name__)

    threading.Event().wait(2)
    slow_threads = [threading.Thread(target=slow_exchange) for _ in range(4)]
    for thread in slow_threads:
        thread.start()
    threading.Event().wait(0.5)
    started = time.monotonic()
    stopping = threading.Thread(target=podman, args=("stop", "--time", "30", web.name), kwargs={"timeout": 60})
    stopping.start()  # SIGTERM, then up to 30 s
    for thread in slow_threads:
        thread.join(30)
    # The upstream answers at last (the tarpit lets go): the server process would otherwise wait
    # for that background fetch's own time-out (10 s) before it ends.
    deployment.tarpit.release()
    stopping.join(60)
    stopped_in = time.monotonic() - started
    stop.set()
    for thread in threads:
        thread.join(30)
    state = web.inspect()["State"]
    print(
        f"\nSIGTERM under load: stopped in {stopped_in:.2f} s (exit {state['ExitCode']}); answers {dict(statuses)}; "
        f"the 4 in flight: {slow}"
    )
    assert state["ExitCode"] == 0
    assert slow == [503] * 4  # answered, not cut: the server let them finish
    # At most one request per keep-alive connection races the server's closing it (sent as the
    # connection closed: never answered, and recorded or not); every other request was answered.
    assert issued and statuses["cut"] <= 8, statuses
    by_jti = Counter(
        jti
        for (jti,) in records(
            deployment,
            "SELECT issued_jti FROM {table} WHERE tenant_id = "
            "(SELECT id FROM tenants_tenant WHERE slug = 'term') "
            "AND decision = 'allowed'",
        )
    )
    assert issued <= set(by_jti) and set(by_jti.values()) == {1}
    assert len(set(by_jti) - issued) <= statuses["cut"]
    answered = sum(n for status, n in statuses.items() if isinstance(status, int))
    ((stored,),) = records(
        deployment, "SELECT count(*) FROM {table} WHERE tenant_id = (SELECT id FROM tenants_tenant WHERE slug = 'term')"
    )
    assert answered <= stored <= answered + statuses["cut"]
    ((slow_stored,),) = records(
        deployment, "SELECT count(*) FROM {table} WHERE tenant_id = (SELECT id FROM tenants_tenant WHERE slug = 'slow')"
    )
    assert slow_stored == 4
    assert volume_files(web.volume, "audit-spool") == []


def test_sigterm_writes_what_the_container_spooled_before_it_exits(deployment: Deployment):
    """The second web container reaches PostgreSQL through a proxy of the test's: cut, the
    container issues tokens with their records in its spool; back, and straight away SIGTERM (no
    exchange comes to drain the spool): the container writes them at exit, its volume is left
    empty, each token has exactly one record."""
    web = deployment.webs[1]
    clients = [Client(web.url) for _ in range(6)]
    for _ in range(5):  # every server process of the container holds tenant flush's snapshot
        for client in clients:
            assert client.exchange("flush", deployment.upstream.mint(), "ci")[0] == 200
    deployment.database_proxy.stop()
    spooled = set()
    for client in clients * 3:
        status, body = client.exchange("flush", deployment.upstream.mint(), "ci")
        if status == 200:
            spooled.add(_jti(body))
    assert spooled and volume_files(web.volume, "audit-spool"), "nothing was spooled"
    deployment.database_proxy.start()
    podman("stop", "--time", "30", web.name, timeout=60)
    assert web.inspect()["State"]["ExitCode"] == 0
    assert volume_files(web.volume, "audit-spool") == []
    by_jti = Counter(
        jti
        for (jti,) in records(deployment, "SELECT issued_jti FROM {table} WHERE issued_jti = ANY(%s)", [list(spooled)])
    )
    assert set(by_jti) == spooled and set(by_jti.values()) == {1}
    assert "audit spool at exit" in web.logs()


def test_beat_sends_the_sweeps_the_worker_runs_them_and_both_stop_on_sigterm(deployment: Deployment):
    def swept() -> bool:  # beat's first sweeps come a minute after it starts
        return re.search(r"Task exchange\.sweep_issuers\[[^]]+\] succeeded", deployment.worker.logs()) is not None

    assert poll(swept, timeout=90, interval=1), deployment.beat.logs()[-2000:] + deployment.worker.logs()[-2000:]
    for container in (deployment.worker, deployment.beat):
        podman("stop", "--time", "30", container.name, timeout=60)
        assert container.inspect()["State"]["ExitCode"] == 0, container.logs()[-2000:]


def test_every_log_line_is_json_and_no_secret_is_in_any(deployment: Deployment):
    for container in (*deployment.webs, deployment.worker, deployment.beat):
        lines = [line for line in container.logs().splitlines() if line.strip()]
        assert lines, container.name
        bad = [line for line in lines if not line.startswith("{") or not isinstance(json.loads(line), dict)]
        assert not bad, (container.name, bad[:5])
        assert deployment.key_encryption_key not in container.logs() and deployment.secret_key not in container.logs()
