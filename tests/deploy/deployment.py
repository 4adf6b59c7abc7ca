"""One deployment of the container image for tests/deploy/test_container.py: a database of its own
on the test run's PostgreSQL (``<DATABASE_URL's name>_container``), the run's Redis (broker and
cache), ``migrate``, the tenants applied with ``manage jwtex_apply``, two ``web`` containers
(the second reaches PostgreSQL through a proxy the test can cut), a ``worker`` and a ``beat``.
Every container has a volume of its own at /var/lib/jwtex, as the compose file and the
Kubernetes manifests give them. All of it is removed afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dj_database_url

from tests.conftest import Upstream, poll
from tests.deploy.podman import Container, podman
from tests.servers import Client, TcpProxy, database_url, free_port

TENANTS = ("acme", "term", "flush")  # each test's own tenant, so its records can be counted alone


def missing_services() -> str | None:
    needs = {
        "DATABASE_URL": ("postgres://", "postgresql://"),
        "CELERY_BROKER_URL": ("redis://",),
        "CACHE_URL": ("redis://",),
    }
    missing = [
        f"{name}={prefixes[0]}…"
        for name, prefixes in needs.items()
        if not os.environ.get(name, "").startswith(prefixes)
    ]
    return f"it needs {', '.join(missing)} (PostgreSQL and Redis, as CI's second pass has them)" if missing else None


class Tarpit:
    """An upstream issuer that accepts connections and never answers: exchanges of its tenant wait
    for their key fetch for the whole request budget (2 s), then answer 503."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.listener.accept()[0])
            except OSError:
                return

    def release(self) -> None:
        """Let go of the connections held so far (their fetches fail at once)."""
        for sock in list(self.held):
            sock.close()

    def close(self) -> None:
        self.listener.close()
        self.release()


@dataclass
class Deployment:
    upstream: Upstream
    tarpit: Tarpit
    slow_issuer: str
    public_url: str
    webs: tuple[Container, Container]
    worker: Container
    beat: Container
    database_url: str
    database_proxy: TcpProxy
    migrate_output: str
    key_encryption_key: str
    secret_key: str


def _configuration(upstream: Upstream, slow_issuer: str) -> dict[str, Any]:
    def tenant(slug: str, issuer: dict[str, Any]) -> dict[str, Any]:
        return {
            "slug": slug, "name": slug.title(), "rate_limit_per_minute": 0,
            "issuers": [{"id": "ci", "audiences": [upstream.audience], **issuer}],
            "rules": [{"name": "all", "issuers": ["ci"], "when": "true", "effect": "allow"}],
        }  # fmt: skip

    static = {"issuer": upstream.issuer, "jwks": upstream.jwks}
    return {"tenants": [*(tenant(slug, static) for slug in TENANTS), tenant("slow", {"issuer": slow_issuer})]}


def records(deployment: Deployment, sql: str, params: list | None = None) -> list[tuple]:
    """Rows of the deployment's database (``{table}``: the audit records' table)."""
    import psycopg

    from exchange.models import ExchangeRecord

    with psycopg.connect(deployment.database_url) as conn:
        return conn.execute(sql.format(table=ExchangeRecord._meta.db_table), params).fetchall()


def _database(admin_url: str, name: str, *, create: bool) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if create:
            conn.execute(f'CREATE DATABASE "{name}"')


def _wait_until_up(container: Container, ready, what: str) -> None:
    if not poll(ready, timeout=60, interval=0.2, stop=lambda: not container.running()):
        raise AssertionError(f"{container.name} did not come up ({what}):\n{container.logs()[-4000:]}")


@contextmanager
def deployment_start(tmp: Path, keys: tuple[Any, Any]) -> Iterator[Deployment]:
    upstream = Upstream(rsa_key=keys[0], ec_key=keys[1])
    db = dj_database_url.parse(os.environ["DATABASE_URL"])
    name = f"{db['NAME']}_container"
    admin_url = database_url({**db, "NAME": "postgres"})
    tag = f"jwtex-ct-{os.getpid()}"
    _database(admin_url, name, create=True)
    proxy = TcpProxy((db.get("HOST") or "127.0.0.1", int(db.get("PORT") or 5432)))
    proxy.start()
    tarpit = Tarpit()
    kek, secret_key = secrets.token_urlsafe(32), secrets.token_urlsafe(50)
    ports = (free_port(), free_port())
    public_url = f"http://127.0.0.1:{ports[0]}"
    env_file = tmp / "jwtex.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in {
        "DATABASE_URL": database_url({**db, "NAME": name}), "CELERY_BROKER_URL": os.environ["CELERY_BROKER_URL"],
        "CACHE_URL": os.environ["CACHE_URL"], "JWTEX_PUBLIC_URL": public_url, "JWTEX_KEY_ENCRYPTION_KEYS": kek,
        "DJANGO_SECRET_KEY": secret_key, "DJANGO_DEBUG": "0", "JWTEX_ALLOW_INSECURE_ISSUERS": "1",
        "JWTEX_RATE_LIMIT_PER_ADDRESS": "0", "JWTEX_ACCESS_LOG": "0", "WEB_CONCURRENCY": "2",
    }.items()))  # fmt: skip
    config = tmp / "jwtex.json"
    config.write_text(json.dumps(_configuration(upstream, tarpit.url)))
    config.chmod(0o644)
    webs = (
        Container(f"{tag}-web1", ["web"], volume=f"{tag}-web1", port=ports[0], env={"PORT": str(ports[0])}),
        Container(f"{tag}-web2", ["web"], volume=f"{tag}-web2", port=ports[1], env={
            "PORT": str(ports[1]), "DATABASE_URL": database_url({**db, "NAME": name}, port=proxy.port)}),
    )  # fmt: skip
    worker = Container(f"{tag}-worker", ["worker", "--concurrency=2"], volume=f"{tag}-worker")
    beat = Container(f"{tag}-beat", ["beat"], volume=f"{tag}-beat")
    oneshots = [
        Container(f"{tag}-migrate", ["migrate"]),
        Container(
            f"{tag}-apply", ["manage", "jwtex_apply", "/config/jwtex.json"], mounts=[(config, "/config/jwtex.json")]
        ),
    ]
    everything = [*oneshots, *webs, worker, beat]
    try:
        migrated = oneshots[0].start(env_file, detach=False)
        oneshots[1].start(env_file, detach=False)
        for container in (*webs, worker, beat):
            container.start(env_file)
        for web in webs:
            _wait_until_up(web, lambda web=web: _answers(web.url), "/healthz")
        _wait_until_up(worker, lambda: " ready." in worker.logs(), "Celery's ready line")
        yield Deployment(
            upstream=upstream,
            tarpit=tarpit,
            slow_issuer=tarpit.url,
            public_url=public_url,
            webs=webs,
            worker=worker,
            beat=beat,
            database_url=database_url({**db, "NAME": name}),
            database_proxy=proxy,
            migrate_output=migrated.stdout + migrated.stderr,
            key_encryption_key=kek,
            secret_key=secret_key,
        )
    finally:
        for container in everything:
            container.remove()
        podman("volume", "rm", "--force", *(c.volume for c in everything if c.volume), check=False)
        proxy.stop()
        tarpit.close()
        _database(admin_url, name, create=False)


def _answers(url: str) -> bool:
    try:
        return Client(url).get("/healthz")[0] == 200
    except OSError:
        return False
