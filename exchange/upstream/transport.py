"""The guarded HTTP request under every upstream call: the issuers' fetches
(exchange.upstream.fetch) and the mapper webhook's POST (exchange.upstream.webhook). Standard
library only.

The URLs are tenants' choices, so attacker-chosen as far as this service is concerned; the
guards (exchange.upstream.fetch says why each) stop them from turning jwtex into a proxy for
the inside of its own network: ``https`` only unless insecure URLs are allowed, the host
resolved once within the deadline and refused on any non-public address, the connection pinned
to a vetted address (Host header, SNI and certificate check use the hostname), one deadline
checked on every read, a cap on the body size.

``FetchError`` messages name the URL and what went wrong, never the response body.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..core.limits import FETCH_CONNECT_TIMEOUT
from ..core.validators import address_is_public

__all__ = ["FetchError", "Resolver", "Target", "host_addresses_vet", "request_send", "system_resolve"]

_CHUNK = 64 * 1024


class FetchError(Exception):
    """An upstream fetch failed or was refused. The message is safe to log and show operators."""


Resolver = Callable[[str, int], list[str]]


# ------------------------------------------------------------------------ URL and addresses


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str  # lower-case hostname or IP literal, without brackets
    port: int
    path: str  # path and query, as sent in the request line

    @classmethod
    def parse(cls, url: str, *, allow_insecure: bool) -> Target:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise FetchError(f"{url!r}: not a valid URL ({exc})") from None
        scheme = parts.scheme.lower()
        if scheme != "https" and not (scheme == "http" and allow_insecure):
            raise FetchError(f"{url}: only https URLs are fetched")
        if not parts.hostname:
            raise FetchError(f"{url}: no host")
        if parts.username is not None or parts.password is not None:
            raise FetchError(f"{url}: credentials in URLs are refused")
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in path):
            raise FetchError(f"{url!r}: control characters or spaces in the path")
        default_port = 443 if scheme == "https" else 80
        return cls(url=url, scheme=scheme, host=parts.hostname.lower(), port=port or default_port, path=path)


def system_resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def host_addresses_vet(host: str, port: int, resolver: Resolver, deadline: float, allow_insecure: bool) -> list[str]:
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        names = [host]
    else:
        names = _resolve_within(resolver, host, port, deadline)
        if not names:
            raise FetchError(f"{host}: the name resolves to no address")
    vetted = []
    for name in names:
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            raise FetchError(f"{host}: resolved to something that is not an IP address") from None
        if not address_is_public(address) and not allow_insecure:
            # One bad address is enough: the connection could be steered to it.
            raise FetchError(f"{host}: resolves to a non-public address ({address}); refused")
        vetted.append(str(address))
    return vetted


def _resolve_within(resolver: Resolver, host: str, port: int, deadline: float) -> list[str]:
    """Run ``resolver`` with the fetch's deadline (getaddrinfo itself has no timeout)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["names"] = list(resolver(host, port))
        except Exception as exc:  # noqa: BLE001 - reported below, in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="jwtex-resolve", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if thread.is_alive():
        raise FetchError(f"{host}: name resolution timed out")
    if "error" in outcome:
        raise FetchError(f"{host}: name resolution failed ({outcome['error']})")
    return outcome["names"]


# ------------------------------------------------------------------------ one request


class _DeadlineSocket:
    """The two socket operations http.client uses, each bounded by what is left of the deadline.

    A per-operation timeout alone would let a server that sends one byte a second keep a
    fetch alive forever; re-arming the timeout with the *remaining* time on every receive
    makes the deadline hold for the headers and the body alike.
    """

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline
        # Like socket.socket: close() waits for the response's reader to be closed too
        # (http.client hands the connection to a response that reads until EOF).
        self._readers = 0
        self._closed = False

    def arm(self) -> None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline exceeded")
        self._sock.settimeout(remaining)

    def sendall(self, data: bytes) -> None:
        self.arm()
        self._sock.sendall(data)

    def recv_into(self, buffer: Any) -> int:
        self.arm()
        return self._sock.recv_into(buffer)

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        self._readers += 1
        return io.BufferedReader(_DeadlineReader(self))

    def reader_closed(self) -> None:
        self._readers -= 1
        if self._closed and self._readers <= 0:
            self._sock.close()

    def close(self) -> None:
        self._closed = True
        if self._readers <= 0:
            self._sock.close()


class _DeadlineReader(io.RawIOBase):
    def __init__(self, sock: _DeadlineSocket) -> None:
        self._sock: _DeadlineSocket | None = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._sock is None:
            raise ValueError("read from a closed response")
        return self._sock.recv_into(buffer)

    def close(self) -> None:
        if self._sock is not None:
            sock, self._sock = self._sock, None
            sock.reader_closed()
        super().close()


_tls_context_lock = threading.Lock()
_tls_context_value: ssl.SSLContext | None = None


def _tls_context() -> ssl.SSLContext:
    """The system trust store, hostname checking on (created once; safe to share)."""
    global _tls_context_value
    with _tls_context_lock:
        if _tls_context_value is None:
            _tls_context_value = ssl.create_default_context()
        return _tls_context_value


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTP(S) connection to a vetted address, speaking to ``host`` (Host header, SNI, cert)."""

    def __init__(self, target: Target, address: str, deadline: float) -> None:
        super().__init__(target.host, target.port)
        self.default_port = 443 if target.scheme == "https" else 80  # Host header without a default port
        self._target = target
        self._address = address
        self._deadline = deadline

    def _remaining(self) -> float:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline exceeded")
        return remaining

    def connect(self) -> None:
        sock = socket.create_connection(
            (self._address, self.port), timeout=min(FETCH_CONNECT_TIMEOUT, self._remaining())
        )
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._target.scheme == "https":
                sock = self._tls_handshake(sock)
        except BaseException:
            sock.close()
            raise
        self.sock = _DeadlineSocket(sock, self._deadline)

    def _tls_handshake(self, sock: socket.socket) -> ssl.SSLSocket:
        # Non-blocking handshake so that the deadline bounds it as a whole.
        tls = _tls_context().wrap_socket(sock, server_hostname=self._target.host, do_handshake_on_connect=False)
        try:
            tls.setblocking(False)
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    ready = select.select([tls], [], [], self._remaining())[0]
                except ssl.SSLWantWriteError:
                    ready = select.select([], [tls], [], self._remaining())[1]
                if not ready:
                    raise TimeoutError("TLS handshake timed out")
            tls.setblocking(True)
        except BaseException:
            tls.close()  # the plain socket was detached into it
            raise
        return tls


def request_send(
    target: Target,
    addresses: list[str],
    headers: dict[str, str],
    deadline: float,
    max_bytes: int,
    method: str = "GET",
    body: bytes | None = None,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request (a GET here; the mapper webhook's POST too); tries the vetted addresses in
    order until one connects."""
    last_error: Exception | None = None
    for address in addresses:
        connection = _PinnedConnection(target, address, deadline)
        response: http.client.HTTPResponse | None = None
        try:
            try:
                connection.connect()
            except ssl.SSLCertVerificationError:
                raise
            except OSError as exc:  # refused, unreachable, connect timeout: try the next address
                last_error = exc
                continue
            connection.request(method, target.path, body=body, headers=headers)
            response = connection.getresponse()
            body = b""
            if response.status == 200:
                body = _read_body(response, deadline, max_bytes, target.url)
            return response.status, response.headers, body
        except FetchError:
            raise
        except TimeoutError:
            raise FetchError(f"{target.url}: no complete answer within the time limit") from None
        except ssl.SSLCertVerificationError as exc:
            raise FetchError(f"{target.url}: TLS certificate verification failed ({exc.verify_message})") from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise FetchError(f"{target.url}: {_describe(exc)}") from None
        finally:
            if response is not None:
                response.close()
            connection.close()
    raise FetchError(f"{target.url}: could not connect ({_describe(last_error)})")


def _read_body(response: http.client.HTTPResponse, deadline: float, max_bytes: int, url: str) -> bytes:
    length = response.getheader("Content-Length")
    if length is not None and length.strip().isdigit() and int(length) > max_bytes:
        raise FetchError(f"{url}: response larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        if time.monotonic() >= deadline:
            raise TimeoutError("deadline exceeded")
        chunk = response.read1(min(_CHUNK, max_bytes + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            raise FetchError(f"{url}: response larger than {max_bytes} bytes")
    return b"".join(chunks)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no address"
    if isinstance(exc, http.client.HTTPException):
        return f"malformed HTTP response ({type(exc).__name__})"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text[:200]
