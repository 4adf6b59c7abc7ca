"""Real server processes for the tests that need them (CI's PostgreSQL + Redis pass):
``make serve`` on a port of its own, a TCP proxy to stand between it and PostgreSQL (stopped
and started again, it is a database restart as the service sees it), and a keep-alive client.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
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
        out = subprocess.run(["pgrep", "-P", str(self._server_pid())], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]

    def _server_pid(self) -> int:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout.split()
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


def serve(env: dict[str, str], tmp: Path, **extra: str) -> Served:
    port = free_port()
    log = tmp / f"serve-{port}.log"
    full = {**env, "PORT": str(port), "HOST": "127.0.0.1", "PYTHONUNBUFFERED": "1", **extra}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            ["make", "-s", "-o", ".venv/.installed", "serve", f"PY={sys.executable}"],
            cwd=REPO_ROOT, env=full, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
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
        return self._request("POST", f"/t/{slug}/exchange?issuerId={issuer_id}", token.encode(),
                             {"Content-Type": "application/jwt"})
