"""Operations as they run in production (docs/operations.md#health-metrics-and-logs), with real processes
(CI's PostgreSQL + Redis pass): one correct /metrics total over several server processes, and one log
format (one JSON object per line) from the web server, a Celery worker and beat alike."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO_ROOT, poll
from tests.exchange.test_served import RUN, exchangeable_issuer, served_environment
from tests.servers import Client, serve

pytestmark = [
    pytest.mark.served,
    pytest.mark.skipif(
        not RUN, reason="served tests: JWTEX_TEST_SERVED=1 with DATABASE_URL=postgres://…, as .ci/run does"
    ),
    pytest.mark.django_db(transaction=True),
]


def _totals(served) -> dict[str, float]:
    status, body = Client(served.url).get("/metrics")
    assert status == 200
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "jwtex_exchanges_total" and sample.labels.get("tenant") == "acme":
                key = sample.labels["decision"]
                totals[key] = totals.get(key, 0) + sample.value
    return totals


def test_metrics_total_the_exchanges_of_every_server_process(tmp_path, upstream):
    exchangeable_issuer("acme", upstream)
    served = serve(served_environment(tmp_path), tmp_path, WEB_CONCURRENCY="2")
    allowed, denied = 40, 25
    try:
        tokens = [upstream.mint() for _ in range(allowed)] + [upstream.mint(iss="https://elsewhere.invalid")] * denied
        statuses: list[int] = []

        def send(batch):
            for token in batch:
                statuses.append(Client(served.url).exchange("acme", token, "ci")[0])  # a new connection each

        threads = [threading.Thread(target=send, args=(tokens[i::4],)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(statuses) == sorted([200] * allowed + [401] * denied)
        counted = {p.name.split("_")[-1] for p in (tmp_path / "var" / "metrics").glob("counter_*.db")}
        assert len(counted) == 2, f"both server processes answered some exchanges: {counted}"
        for _ in range(5):  # whichever process answers the scrape, the node's total
            assert _totals(served) == {"allowed": allowed, "denied": denied}
    finally:
        served.stop()


def _all_json(text: str, who: str) -> int:
    # make's own complaint when the test stops the whole process group ("make: *** [serve]
    # Terminated") is make's, not the server's.
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("make: ")]
    assert lines, f"{who} wrote nothing"
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            raise AssertionError(f"{who} wrote a line that is not JSON: {line[:300]}") from None
        assert {"time", "level", "logger", "message"} <= set(entry), (who, line[:300])
    return len(lines)


def _celery(kind: str, env: dict[str, str], tmp_path) -> subprocess.Popen:
    log = open(tmp_path / f"{kind}.log", "wb")  # the process's, while it runs
    args = ["-A", "jwtex_site", kind, "--loglevel=INFO"]
    if kind == "beat":
        args += ["--schedule", str(tmp_path / "beat-schedule")]
    else:
        args += ["--concurrency=1", "--pool=solo", "-n", f"logs-{os.getpid()}@%h"]
    return subprocess.Popen(
        [sys.executable, "-m", "celery", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_web_worker_and_beat_all_log_one_json_object_per_line(tmp_path, upstream):
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if not broker.startswith("redis://"):
        pytest.skip("needs CELERY_BROKER_URL=redis://…, as .ci/run sets it")
    exchangeable_issuer("acme", upstream)
    env = {
        **served_environment(tmp_path),
        "JWTEX_ACCESS_LOG": "1",
        "JWTEX_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        "CELERY_BROKER_URL": broker,
    }
    served = serve(env, tmp_path, WEB_CONCURRENCY="1")
    processes = [_celery("worker", env, tmp_path), _celery("beat", env, tmp_path)]
    try:
        client = Client(served.url)
        assert client.exchange("acme", upstream.mint(), "ci")[0] == 200
        assert client.exchange("acme", upstream.mint(iss="https://elsewhere.invalid"), "ci")[0] == 401
        assert client.get("/healthz")[0] == 200
        assert poll(lambda: "ready" in (tmp_path / "worker.log").read_text(errors="replace"), timeout=30)
        assert poll(lambda: "beat" in (tmp_path / "beat.log").read_text(errors="replace").lower(), timeout=30)
    finally:
        served.stop()
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
    web = served.log.read_text(errors="replace")
    assert '"exchange allowed"' in web and "/healthz" in web  # the service's own lines and the access log
    counts = {who: _all_json((tmp_path / f"{who}.log").read_text(errors="replace"), who) for who in ("worker", "beat")}
    counts["web"] = _all_json(web, "web")
    print(f"JSON log lines: {counts}")  # pytest -s


def test_with_redis_gone_exchanges_go_on_and_readyz_names_the_cache_and_the_broker(tmp_path, upstream):
    cache_url, broker = os.environ.get("CACHE_URL", ""), os.environ.get("CELERY_BROKER_URL", "")
    if not (cache_url.startswith("redis://") and broker.startswith("redis://")):
        pytest.skip("needs CACHE_URL and CELERY_BROKER_URL=redis://…, as .ci/run sets them")
    from urllib.parse import urlsplit

    from tests.servers import TcpProxy

    redis = urlsplit(cache_url)
    proxy = TcpProxy((redis.hostname or "127.0.0.1", redis.port or 6379))
    proxy.start()
    through = f"redis://127.0.0.1:{proxy.port}"
    exchangeable_issuer("acme", upstream)
    env = {
        **served_environment(tmp_path),
        "CACHE_URL": f"{through}{redis.path}",
        "CELERY_BROKER_URL": f"{through}{urlsplit(broker).path}",
    }
    served = serve(env, tmp_path, WEB_CONCURRENCY="1")
    client = Client(served.url)
    try:
        assert client.get("/readyz")[0] == 200
        proxy.stop()  # Redis goes away: connections cut, new ones refused
        statuses = [client.exchange("acme", upstream.mint(), "ci")[0] for _ in range(20)]
        status, body = client.get("/readyz")
        checks = json.loads(body)["checks"]
        print(f"Redis gone: exchanges {dict((s, statuses.count(s)) for s in set(statuses))}; /readyz {status} {checks}")
        assert statuses == [200] * 20
        assert status == 503 and checks["cache"].startswith("failed") and checks["broker"].startswith("failed")
        assert checks["database"] == "ok"
        proxy.start()
        assert poll(lambda: client.get("/readyz")[0] == 200, timeout=15, interval=0.5)
    finally:
        served.stop()
        proxy.stop()
