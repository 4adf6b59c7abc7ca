"""Local upstreams for the tests: ``UpstreamServer``, a loopback HTTP(S) server that serves
routes and records every request (GET, and POST with its body, as a mapper webhook gets it),
and ``oidc_server``, an OIDC issuer built on it.

Slow upstreams (``delay``, ``trickle``) wait on an event that ``close()`` sets, so a test that
gives up on a tarpit does not leave a handler sleeping behind it; ``wait_for`` waits for a
request to arrive instead of polling.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DISCOVERY = "/.well-known/openid-configuration"


@dataclass
class Route:
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    etag: str = ""  # answer 304 when If-None-Match equals it
    delay: float = 0.0  # seconds before anything is sent
    trickle: float = 0.0  # seconds between single bytes of the whole response (status line included)
    content_length: bool = True
    document: Callable[[], Any] | None = None  # a JSON document made anew for each request


@dataclass
class SeenRequest:
    path: str
    headers: dict[str, str]
    body: bytes = b""


class UpstreamServer:
    """Serves ``routes`` on 127.0.0.1 and records every request it gets."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[SeenRequest] = []
        self._seen = threading.Condition()
        self._closing = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # a webhook (the mapper): the body is recorded too
                self.do_GET(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

            def do_GET(self, body: bytes = b"") -> None:
                with server._seen:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    server.requests.append(SeenRequest(self.path, headers, body))
                    server._seen.notify_all()
                route = server.routes.get(self.path, Route(status=404, body=b'{"error": "not found"}'))
                if route.delay and server._closing.wait(route.delay):
                    return
                status, body, headers = route.status, route.body, dict(route.headers)
                if route.document is not None:
                    body = json.dumps(route.document()).encode()
                if route.etag:
                    headers["ETag"] = route.etag
                    if self.headers.get("If-None-Match") == route.etag:
                        status, body = 304, b""
                if route.content_length and status != 304:
                    headers["Content-Length"] = str(len(body))
                head = f"HTTP/1.0 {status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
                self._send(head.encode() + body, route.trickle)

            def _send(self, raw: bytes, trickle: float) -> None:
                try:
                    if not trickle:
                        self.wfile.write(raw)
                        return
                    for i in range(len(raw)):
                        self.wfile.write(raw[i : i + 1])
                        self.wfile.flush()
                        if server._closing.wait(trickle):
                            return
                except OSError:  # the client gave up
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def json(self, path: str, document: object, *, headers: dict[str, str] | None = None, **route: Any) -> None:
        headers = {"Content-Type": "application/json", **(headers or {})}
        self.routes[path] = Route(body=json.dumps(document).encode(), headers=headers, **route)

    @property
    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    def count(self, path: str) -> int:
        return sum(1 for r in self.requests if r.path == path)

    def wait_for(self, path: str, *, count: int = 1, timeout: float = 10.0) -> bool:
        """Block until ``path`` was requested ``count`` times (or the timeout passed)."""
        with self._seen:
            return self._seen.wait_for(lambda: self.count(path) >= count, timeout=timeout)

    def close(self) -> None:
        self._closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


def oidc_upstream(jwks: Callable[[], dict[str, Any]], *, max_age: int = 600) -> UpstreamServer:
    """A loopback OIDC issuer: discovery and a JWKS (``jwks()`` on every request, so a test can
    change the served keys)."""
    server = UpstreamServer()
    server.json(DISCOVERY, {"issuer": server.url, "jwks_uri": server.url + "/jwks"})
    server.routes["/jwks"] = Route(
        document=jwks, headers={"Content-Type": "application/json", "Cache-Control": f"public, max-age={max_age}"}
    )
    return server
