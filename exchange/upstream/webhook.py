"""A guarded JSON POST: the mapper webhook's call (docs/mapper.md#the-request), through the same client as upstream
fetches (exchange.upstream.transport): https only, the host resolved once and refused on a
non-public address, the connection pinned to the vetted address, one deadline for the whole
call, a cap on the answer's size. A mapper URL is a tenant's choice, so it gets no more trust
than an issuer's.

``JWTEX_ALLOW_INSECURE_ISSUERS`` (development, tests) lifts the https and address rules, as for
issuers; ``JWTEX_MAPPER_ALLOWED_HOSTS`` (the operator's, never a tenant's) lets the listed
https host names resolve to private addresses — an in-house mapper behind the firewall.
"""

from __future__ import annotations

import json
import time
from typing import Any

from .transport import FetchError, Resolver, Target, host_addresses_vet, request_send, system_resolve

__all__ = ["WebhookError", "json_post"]

MAPPER_MAX_ANSWER_BYTES = 256 * 1024  # docs/mapper.md#the-answer


class WebhookError(FetchError):
    """The call failed or was refused; the message names the URL and what, never the body."""


def json_post(
    url: str,
    payload: dict[str, Any],
    *,
    headers: dict[str, str],
    timeout: float,
    allow_insecure: bool,
    private_hosts: frozenset[str] = frozenset(),
    max_bytes: int = MAPPER_MAX_ANSWER_BYTES,
    resolver: Resolver | None = None,
) -> Any:
    """POST ``payload`` as JSON and return the parsed JSON answer of a ``200``; ``WebhookError``
    for anything else (no redirects are followed: a webhook answers where it was asked)."""
    deadline = time.monotonic() + timeout
    try:
        target = Target.parse(url, allow_insecure=allow_insecure)
        may_be_private = allow_insecure or (target.scheme == "https" and target.host in private_hosts)
        addresses = host_addresses_vet(target.host, target.port, resolver or system_resolve, deadline, may_be_private)
        body = json.dumps(payload, separators=(",", ":")).encode()
        sent = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "jwtex",
            "Connection": "close",
            **headers,
        }
        status, _, answer = request_send(target, addresses, sent, deadline, max_bytes, method="POST", body=body)
    except WebhookError:
        raise
    except FetchError as exc:
        raise WebhookError(str(exc)) from None
    if status != 200:
        raise WebhookError(f"{url}: HTTP {status}")
    try:
        return json.loads(answer)
    except (ValueError, RecursionError):
        raise WebhookError(f"{url}: the answer is not JSON") from None
