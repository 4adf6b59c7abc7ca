"""Real server processes for the tests that need them (CI's PostgreSQL + Redis pass):
``make serve`` on a port of its own, a TCP proxy to stand between it and PostgreSQL (stopped
and started again, it is a database restart as the service sees it), a keep-alive client, and
a real Celery worker (``celery_worker_start``), with the environment every process of one
deployment shares (``deployment_environment``).
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.conftest import REPO_ROOT, poll


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TcpProxy:
    """127.0.0.1:``port`` → ``target``. ``stop()`` refuses new connections and cuts the open
    ones, as a restarting database does; ``start()`` listens again on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        if listener is not None:
            listener.close()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=3)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._sockets |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def database_url(db: dict[str, Any], *, port: int | None = None) -> str:
    """A ``DATABASE_URL`` for the test process's own (renamed) database, optionally through ``port``."""
    user = quote(db.get("USER") or "", safe="")
    password = db.get("PASSWORD") or ""
    auth = f"{user}:{quote(password, safe='')}@" if password else (f"{user}@" if user else "")
    host = db.get("HOST") or "127.0.0.1"
    return f"postgres://{auth}{host}:{port or db.get('PORT') or 5432}/{db['NAME']}"


@dataclass
class Served:
    """``make serve`` running in the background, its output in ``log``."""

    process: subprocess.Popen
    port: int
    log: Path
    env: dict[str, str] = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def workers(self) -> list[int]:
        out = subprocess.run(
            ["pgrep", "-P", str(self._server_pid())], capture_output=True, text=True, check=False
        ).stdout
        return [int(pid) for pid in out.split()]

    def _server_pid(self) -> int:
        out = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        return int(out[0]) if out else self.process.pid

    def stop(self) -> None:
        """SIGTERM to the whole process group, then wait until every process of it is gone (their
        database sessions with them), SIGKILL after 20 s."""
        group = self.process.pid
        try:
            os.killpg(group, signal.SIGTERM)
        except ProcessLookupError:
            return

        def gone() -> bool:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                return True
            self.process.poll()
            return False

        if not poll(gone, timeout=20, interval=0.1):
            os.killpg(group, signal.SIGKILL)
            poll(gone, timeout=5, interval=0.1)
        self.process.wait(timeout=5)

    def kill(self) -> None:
        """SIGKILL to the whole process group at once (a node lost, no chance to clean up); returns
        once ``make`` is reaped and the port refuses connections."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=5)

        def refused() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            except OSError:
                return True
            return False

        if not poll(refused, timeout=5, interval=0.05):
            raise AssertionError(f"port {self.port} still accepts connections after SIGKILL of its process group")


def serve(env: dict[str, str], tmp: Path, **extra: str) -> Served:
    port = free_port()
    log = tmp / f"serve-{port}.log"
    full = {**env, "PORT": str(port), "HOST": "127.0.0.1", "PYTHONUNBUFFERED": "1", **extra}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            ["make", "-s", "-o", ".venv/.installed", "serve", f"PY={sys.executable}"],
            cwd=REPO_ROOT,
            env=full,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    served = Served(process, port, log, full)

    def ready() -> bool:
        try:
            return Client(served.url).get("/t/not-a-tenant/.well-known/jwks.json")[0] in (404, 503)
        except OSError:
            return False

    if not poll(ready, timeout=30, interval=0.2, stop=lambda: process.poll() is not None):
        served.stop()
        raise AssertionError("make serve did not come up:\n" + log.read_text()[-3000:])
    return served


class Client:
    """One keep-alive HTTP connection (a client thread each)."""

    def __init__(self, base: str, timeout: float = 10.0) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.host, self.port, self.timeout = host, int(port), timeout
        self._connection: http.client.HTTPConnection | None = None

    def _request(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        for attempt in (1, 2):
            if self._connection is None:
                self._connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self._connection.request(method, path, body=body, headers=headers)
                response = self._connection.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self._connection.close()
                self._connection = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def get(self, path: str) -> tuple[int, bytes]:
        return self._request("GET", path, None, {})

    def exchange(self, slug: str, token: str, issuer_id: str) -> tuple[int, bytes]:
        return self._request(
            "POST", f"/t/{slug}/exchange?issuerId={issuer_id}", token.encode(), {"Content-Type": "application/jwt"}
        )


# ---------------------------------------------------------------------------- several processes, one deployment


def deployment_environment(
    *, db: Mapping[str, Any], key_encryption_keys: list[str], public_url: str = "http://127.0.0.1:8000"
) -> dict[str, str]:
    """What every process of one deployment shares (README, "Deployment"): the database (the
    test process's own), the broker and the shared cache (``CELERY_BROKER_URL``, ``CACHE_URL`` as
    the test run has them), the key-encryption keys and one public URL, as behind one load
    balancer. Nothing else of the test run's ``JWTEX_``/``DJANGO_`` settings leaks in, so the
    processes run with production's defaults (e.g. the 2 s configuration re-check). Per-process
    directories (``JWTEX_VAR_DIR``, ``JWTEX_AUDIT_SPOOL_DIR``) are for the caller to add: each
    node has a disk of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JWTEX_", "DJANGO_", "CELERY_TASK_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="jwtex_site.settings",
        DATABASE_URL=database_url(db),
        JWTEX_KEY_ENCRYPTION_KEYS=",".join(key_encryption_keys),
        JWTEX_PUBLIC_URL=public_url,
        JWTEX_ALLOW_INSECURE_ISSUERS="1",
        JWTEX_RATE_LIMIT_PER_ADDRESS="0",  # every request of a test comes from 127.0.0.1
        JWTEX_ACCESS_LOG="0",
        JWTEX_LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    return env


def celery_worker_start(env: Mapping[str, str], log: Path, *, node: str, concurrency: int = 2) -> subprocess.Popen:
    """A real Celery worker (prefork, as production runs it) in a process group of its own, its
    output in ``log``; ``node`` is its name (``-n``, ``%h`` allowed). Not waited for: ping it."""
    command = [
        sys.executable, "-m", "celery", "-A", "jwtex_site", "worker",
        "--loglevel=INFO", f"--concurrency={concurrency}", "--pool=prefork",
        "--without-mingle", "--without-gossip", "-n", node,
    ]  # fmt: skip
    with open(log, "wb") as out:
        return subprocess.Popen(
            command, cwd=REPO_ROOT, env=dict(env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def celery_worker_stop(process: subprocess.Popen) -> None:
    """Warm shutdown (running tasks finish, children exit) within 15 s, then SIGKILL to whatever
    of its process group is left."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait(timeout=5)


def celery_workers() -> list[str]:
    """The names of the workers that answer a ping on this test run's broker."""
    from jwtex_site.celery import app

    return [name for reply in app.control.ping(timeout=0.5) or [] for name in reply]
