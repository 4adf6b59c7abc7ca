"""A guarded JSON GET for every upstream fetch (discovery, JWKS). Standard library only.

Issuers are configured by tenants, so their URLs are attacker-chosen as far as this service
is concerned. The guards below stop them from turning jwtex into a proxy for the inside of
its own network (server-side request forgery, OWASP SSRF Prevention Cheat Sheet):

- ``https`` only (``http`` only with ``JWTEX_ALLOW_INSECURE_ISSUERS``, development and tests);
- the host is resolved once and refused if any address is not a public unicast address
  (loopback, private, link-local — the cloud metadata service at 169.254.169.254 —,
  CGNAT, multicast, reserved, unspecified; IPv4 embedded in IPv6 is unwrapped first);
- the connection goes to that vetted address, never to a second resolution of the name
  (DNS rebinding), while the ``Host`` header, SNI and certificate check use the hostname;
- at most three redirects, each to the same host and an allowed scheme;
- one deadline for the whole fetch (resolution, connect, TLS, headers and body), checked on
  every read, so a trickling server cannot hold a worker (docs/errors.md#fetch-budgets: every upstream
  fetch gives up within 10 s), and a cap on the body size.

The request itself, with these guards, is exchange.upstream.transport's; this module adds the
redirects, the conditional GET and the JSON answer. ``FetchError`` messages name the URL and what went wrong, never
the response body: they are stored as the issuer's last error and shown to operators.
"""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

from ..conf import jwtex_settings
from ..core.limits import FETCH_MAX_BYTES, FETCH_TOTAL_TIMEOUT
from .transport import FetchError, Resolver, Target, host_addresses_vet, request_send, system_resolve

__all__ = ["FetchError", "FetchResult", "Resolver", "json_fetch"]

MAX_REDIRECTS = 3
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class FetchResult:
    status: int  # 200 or 304
    document: Any | None  # the parsed JSON object (None on 304)
    etag: str  # "" if none
    max_age: int | None  # Cache-Control max-age; None if absent, malformed, no-store or no-cache
    url: str  # the final URL, after redirects


def json_fetch(
    url: str,
    *,
    etag: str = "",
    allow_insecure: bool | None = None,
    timeout: float = FETCH_TOTAL_TIMEOUT,
    max_bytes: int = FETCH_MAX_BYTES,
    resolver: Resolver | None = None,
) -> FetchResult:
    """GET ``url`` and return its JSON object (or a 304 when ``etag`` still matches)."""
    if allow_insecure is None:
        allow_insecure = jwtex_settings.allow_insecure_issuers
    deadline = time.monotonic() + timeout
    target = Target.parse(url, allow_insecure=allow_insecure)
    addresses = host_addresses_vet(target.host, target.port, resolver or system_resolve, deadline, allow_insecure)

    headers = {"Accept": "application/json", "User-Agent": "jwtex", "Connection": "close"}
    if etag:
        headers["If-None-Match"] = etag
    for _ in range(MAX_REDIRECTS + 1):
        status, response_headers, body = request_send(target, addresses, headers, deadline, max_bytes)
        if status in _REDIRECT_STATUSES:
            location = response_headers.get("location")
            if not location:
                raise FetchError(f"{target.url}: HTTP {status} redirect without a Location")
            next_target = Target.parse(urljoin(target.url, location.strip()), allow_insecure=allow_insecure)
            if next_target.host != target.host:
                # Only the already vetted addresses are ever connected to (no second resolution).
                raise FetchError(f"{target.url}: redirect to another host ({next_target.host}) refused")
            target = next_target
            continue
        return _result(target, status, response_headers, body, etag=etag)
    raise FetchError(f"{url}: more than {MAX_REDIRECTS} redirects")


# ------------------------------------------------------------------------ the answer


def _result(target: Target, status: int, headers: http.client.HTTPMessage, body: bytes, *, etag: str) -> FetchResult:
    if status == 304 and etag:
        return FetchResult(
            status=304, document=None, etag=_etag(headers) or etag, max_age=_max_age(headers), url=target.url
        )
    if status != 200:
        raise FetchError(f"{target.url}: HTTP {status}")
    # Content-Type is not enforced: GitHub serves application/json, others text/plain.
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise FetchError(f"{target.url}: the response is not JSON") from None
    if not isinstance(document, dict):
        raise FetchError(f"{target.url}: the response is not a JSON object")
    return FetchResult(status=200, document=document, etag=_etag(headers), max_age=_max_age(headers), url=target.url)


def _etag(headers: http.client.HTTPMessage) -> str:
    value = (headers.get("ETag") or "").strip()
    # Only a sane value is echoed back in If-None-Match (RFC 9110 §8.8.3); it is stored too.
    if len(value) > 256 or any(ord(c) < 0x21 or ord(c) > 0x7E for c in value):
        return ""
    return value


def _max_age(headers: http.client.HTTPMessage) -> int | None:
    """Cache-Control max-age (RFC 9111 §5.2.2.1); None when absent, malformed, no-store or no-cache."""
    max_age = None
    for value in headers.get_all("Cache-Control") or ():
        for directive in value.split(","):
            name, _, argument = directive.strip().partition("=")
            name = name.strip().lower()
            if name in {"no-store", "no-cache"}:
                return None
            if name == "max-age":
                argument = argument.strip().strip('"')
                if not argument.isdigit():
                    return None
                max_age = int(argument)
    return max_age
