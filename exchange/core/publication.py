"""The published issuer URL (docs/endpoints.md#published-issuer-url): pure rules, values in and out.

A tenant may have its discovery document and JWKS published to static hosting (a directory any
web server serves, or S3 behind a CDN), so that AWS verifies its tokens without reaching jwtex.
This module holds what needs no I/O: which URLs may be published to, where beneath the publish
target a tenant's documents go, the documents themselves, IAM's key-count limit, and the back-off
between failed publishes. ``exchange.publish`` writes, reads back and records.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from .limits import DISCOVERY_MAX_AGE, JWKS_MAX_AGE
from .validators import url_problem

# IAM accepts at most 100 RSA and 100 EC keys in the JWKS of one OIDC provider ("IAM and AWS STS
# quotas", https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html#reference_iam-quotas-entities).
IAM_MAX_KEYS_PER_TYPE = 100

DISCOVERY_PATH = ".well-known/openid-configuration"
JWKS_PATH = ".well-known/jwks.json"
# What the published copies carry: the same max-age as the documents jwtex serves itself.
PUBLISHED_MAX_AGE = max(JWKS_MAX_AGE, DISCOVERY_MAX_AGE)
CACHE_CONTROL = f"public, max-age={PUBLISHED_MAX_AGE}"
CONTENT_TYPE = "application/json"

# One path segment of a published URL: RFC 3986 unreserved characters, never "." or "..".
_SEGMENT = re.compile(r"[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,99}\Z")

# A confirmed publish is looked at again this often (the periodic check); failures back off.
RECHECK_INTERVAL = timedelta(minutes=15)
BACKOFF_FIRST = timedelta(seconds=30)
BACKOFF_MAX = timedelta(minutes=30)


def published_url_problem(value: str, *, allow_insecure: bool) -> str | None:
    """Why ``value`` cannot be a tenant's published issuer URL, or None. An issuer URL's rules
    (https, no credentials, no query or fragment, a public host) plus a path: the path says where
    beneath the publish target the tenant's documents go, so it must be one or more plain
    segments, without a trailing slash (the issuer is compared character for character)."""
    problem = url_problem(value, what="The published issuer URL", allow_insecure=allow_insecure, is_issuer=True)
    if problem:
        return problem
    path = urlsplit(value).path
    if not path.strip("/"):
        return (
            "The published issuer URL needs a path (e.g. https://issuers.example.com/acme): the path names the "
            "tenant's folder beneath the publish target."
        )
    if path.endswith("/"):
        return "The published issuer URL must not end with a slash: the issuer is compared character for character."
    if not all(_SEGMENT.match(segment) for segment in path[1:].split("/")):
        return (
            "The published issuer URL's path must be segments of letters, digits and . _ ~ - "
            "(not . or ..), separated by single slashes."
        )
    return None


def published_folder(url: str) -> str:
    """Where beneath the publish target a tenant's documents go: its URL's path, without the
    leading slash (``https://issuers.example.com/acme`` → ``acme``)."""
    return urlsplit(url).path.strip("/")


def jwks_capped(keys: Sequence[tuple[Mapping[str, Any], str]]) -> list[dict[str, Any]]:
    """The JWKS's keys from (public JWK, state) pairs, oldest first, never more than
    ``IAM_MAX_KEYS_PER_TYPE`` of one key type: past that, ``retiring`` keys drop first, the
    oldest first, then the oldest others. The order of what stays is kept."""
    dropped: set[int] = set()
    for kty in {str(jwk.get("kty")) for jwk, _ in keys}:
        indexes = [i for i, (jwk, _) in enumerate(keys) if str(jwk.get("kty")) == kty]
        excess = len(indexes) - IAM_MAX_KEYS_PER_TYPE
        if excess <= 0:
            continue
        # Retiring keys first (oldest first), then the rest (oldest first).
        order = [i for i in indexes if keys[i][1] == "retiring"] + [i for i in indexes if keys[i][1] != "retiring"]
        dropped.update(order[:excess])
    return [dict(jwk) for i, (jwk, _) in enumerate(keys) if i not in dropped]


def jwks_kids(document: Mapping[str, Any]) -> list[str]:
    keys = document.get("keys") if isinstance(document, Mapping) else None
    return (
        [k["kid"] for k in keys if isinstance(k, Mapping) and isinstance(k.get("kid"), str)]
        if isinstance(keys, list)
        else []
    )


def document_bytes(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def published_documents(*, discovery: Mapping[str, Any], jwks: Mapping[str, Any]) -> dict[str, bytes]:
    """The files to publish beneath the tenant's folder, JWKS first: a discovery document is
    never live before the key set it points at."""
    return {JWKS_PATH: document_bytes(jwks), DISCOVERY_PATH: document_bytes(discovery)}


def publish_backoff(failures: int) -> timedelta:
    """How long after the ``failures``-th failure in a row to try again: 30 s, doubling, at most 30 min."""
    if failures <= 0:
        return timedelta(0)
    return min(BACKOFF_FIRST * (2 ** min(failures - 1, 16)), BACKOFF_MAX)


def readback_mismatch(written: Mapping[str, bytes], read: Mapping[str, bytes | None]) -> list[str]:
    """The paths whose read-back differs from what was written (compared as JSON values, so a
    server that re-serialises is not an error; a missing or unparsable file is)."""
    bad = []
    for path, body in written.items():
        got = read.get(path)
        try:
            same = got is not None and json.loads(got) == json.loads(body)
        except ValueError:
            same = False
        if not same:
            bad.append(path)
    return bad


def live_keys_merge(previous: Mapping[str, float], kids: Iterable[str], *, now: float) -> dict[str, float]:
    """Each kid seen live at the published location, with when it was first confirmed there
    (kept from ``previous`` when it was already live)."""
    return {kid: float(previous.get(kid, now)) for kid in kids}
