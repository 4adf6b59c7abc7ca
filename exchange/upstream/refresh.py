"""Refreshing an issuer's key set from upstream, so that one tenant's upstream never slows
another tenant (docs/errors.md#bursts).

- The fetch (OIDC discovery, then the JWKS) is network only: no database transaction or row
  lock is ever held across it. Its result is written afterwards in one short conditional
  UPDATE (only if the issuer still names the source fetched from).
- One fetch per issuer at a time, across processes (exchange.upstream.flights). Whoever finds a
  fetch in flight does not start another: a task or the admin skips it, a request waits for it.
- A failure is remembered for the cool-down: requests during it answer at once.
- ``jwks_refresh`` (tasks, the admin, commands) fetches in the caller's thread, within the 10 s
  deadline; a request's fetch, within the request's budget, is exchange.upstream.request_fetch's.
"""

from __future__ import annotations

import enum
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F

from ..conf import jwtex_settings
from ..core.jwks import KeySet
from ..core.limits import FETCH_TOTAL_TIMEOUT
from ..invalidation import tenant_config_bump
from ..metrics import jwks_fetch_observed
from ..models import Issuer
from . import flights
from .fetch import FetchError, FetchResult, json_fetch
from .keysets import jwks_digest, keyset_remember

logger = logging.getLogger("jwtex.upstream")

# Bounds on the upstream's Cache-Control max-age: not more often than every 5 minutes, at
# least once a day (keys rotate; a day-old set is also the default staleness bound).
JWKS_MIN_MAX_AGE = 300
JWKS_MAX_MAX_AGE = 86400
DISCOVERY_PATH = "/.well-known/openid-configuration"


class Outcome(enum.Enum):
    STATIC = "static"  # nothing to fetch
    IN_FLIGHT = "in flight"  # another request or worker is fetching this issuer (tasks, the admin)
    WAITED = "waited"  # a request waited for the fetch in flight, which has ended: read what it stored
    BUSY = "busy"  # the process's waiters' cap, or its background fetches, are full: 503 at once
    NOT_DUE = "not due"  # fresh enough, or backing off after a failure
    CHANGED = "changed"
    UNCHANGED = "unchanged"  # fetched (200 with the same keys, or 304)
    FAILED = "failed"
    TIMED_OUT = "timed out"  # the request's budget ran out; the fetch goes on in the background

    @property
    def fetched(self) -> bool:
        return self in (Outcome.CHANGED, Outcome.UNCHANGED)


class _RefreshFailed(Exception):
    """A refresh failed; the message is safe to store as ``jwks_last_error``."""


@dataclass(frozen=True)
class Source:
    """What a fetch needs to know of an issuer row: values, so the fetch touches no database."""

    pk: int
    tenant_id: int
    tenant_slug: str
    issuer_id: str
    issuer: str
    jwks_uri: str
    resolved_uri: str
    etag: str
    jwks: Mapping[str, Any] | None
    refresh_interval: int

    @classmethod
    def of(cls, row: Issuer) -> Source:
        return cls(
            row.pk,
            row.tenant_id,
            row.tenant.slug,
            row.issuer_id,
            row.issuer,
            row.jwks_uri,
            row.jwks_resolved_uri,
            row.jwks_etag,
            row.jwks,
            row.jwks_refresh_interval,
        )


@dataclass(frozen=True)
class Fetched:
    url: str = ""
    result: FetchResult | None = None
    keyset: KeySet | None = None  # None on a 304
    error: str = ""


# --------------------------------------------------------------------------- the fetch (network only)


def fetch(source: Source, *, deadline: float) -> Fetched:
    try:
        url, result, keyset = _fetch_jwks(source, deadline)
    except (_RefreshFailed, FetchError) as exc:
        return Fetched(error=str(exc)[:1000])
    return Fetched(url=url, result=result, keyset=keyset)


def _fetch_jwks(source: Source, deadline: float) -> tuple[str, FetchResult, KeySet | None]:
    if source.jwks_uri:
        return _fetch_jwks_from(source, source.jwks_uri, deadline)
    if source.resolved_uri:
        # Skip discovery while the JWKS URL it gave last time still works.
        try:
            return _fetch_jwks_from(source, source.resolved_uri, deadline)
        except (_RefreshFailed, FetchError) as exc:
            first_error = exc
        url = _discover_jwks_uri(source, deadline)
        if url == source.resolved_uri:
            raise first_error
        return _fetch_jwks_from(source, url, deadline)
    return _fetch_jwks_from(source, _discover_jwks_uri(source, deadline), deadline)


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _RefreshFailed("no time left for the fetch")
    return remaining


def _discover_jwks_uri(source: Source, deadline: float) -> str:
    # OpenID Connect Discovery 1.0 §4: a terminating "/" of the issuer is removed first.
    url = source.issuer.rstrip("/") + DISCOVERY_PATH
    document = json_fetch(url, timeout=_remaining(deadline)).document
    # Discovery §4.3: the issuer in the document must be exactly the one configured.
    if document.get("issuer") != source.issuer:
        raise _RefreshFailed(f"{url}: the discovery document names another issuer")
    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str) or not jwks_uri:
        raise _RefreshFailed(f"{url}: the discovery document has no jwks_uri")
    scheme = jwks_uri.split(":", 1)[0].lower()
    if scheme != "https" and not (scheme == "http" and jwtex_settings.allow_insecure_issuers):
        raise _RefreshFailed(f"{url}: the discovery document's jwks_uri is not https")
    return jwks_uri


def _fetch_jwks_from(source: Source, url: str, deadline: float) -> tuple[str, FetchResult, KeySet | None]:
    # A conditional request only for the URL the stored set and ETag came from, and only
    # when there is a stored set to keep on a 304.
    etag = source.etag if source.jwks and url == source.resolved_uri else ""
    result = json_fetch(url, etag=etag, timeout=_remaining(deadline))
    if result.status == 304:
        return url, result, None
    try:
        keyset = KeySet.from_jwks(result.document)
    except (ValueError, TypeError) as exc:
        raise _RefreshFailed(f"{url}: not a JWKS ({exc})") from None
    if not keyset.keys:
        raise _RefreshFailed(f"{url}: the JWKS has no usable signature key")
    return url, result, keyset


# --------------------------------------------------------------------------- storing the result


def _key_fingerprint(jwks: Any) -> frozenset[str] | None:
    """The keys of a JWKS, order-insensitive: a reordered or re-served set is not a change."""
    if not isinstance(jwks, Mapping) or not isinstance(jwks.get("keys"), list):
        return None
    return frozenset(json.dumps(k, sort_keys=True, separators=(",", ":")) for k in jwks["keys"])


def store(source: Source, fetched: Fetched, *, now: datetime) -> Outcome:
    """Write what a fetch found (one short conditional UPDATE): only if the row still names the
    source it was fetched from, so keys of an old URL never verify tokens for a new one."""
    row = Issuer.objects.filter(pk=source.pk, issuer=source.issuer, jwks_uri=source.jwks_uri, static_jwks__isnull=True)
    if fetched.error:
        row.update(
            jwks_last_error=fetched.error,
            jwks_last_error_at=now,
            jwks_consecutive_failures=F("jwks_consecutive_failures") + 1,
        )
        flights.failed_mark(source.pk, now)
        logger.warning(
            "JWKS refresh failed",
            extra={"jwtex": {"issuer": source.issuer_id, "pk": source.pk, "error": fetched.error}},
        )
        jwks_fetch_observed(tenant=source.tenant_slug, issuer=source.issuer_id, outcome="failed")
        return Outcome.FAILED
    result = fetched.result
    max_age = source.refresh_interval if result.max_age is None else result.max_age
    fields: dict[str, Any] = {
        "jwks_fetched_at": now,  # a 304 confirms the set as of now
        "jwks_expires_at": now + timedelta(seconds=min(max(max_age, JWKS_MIN_MAX_AGE), JWKS_MAX_MAX_AGE)),
        "jwks_etag": result.etag[:256],
        "jwks_resolved_uri": fetched.url[:1024],
        "jwks_consecutive_failures": 0,
    }
    changed = result.status == 200 and _key_fingerprint(result.document) != _key_fingerprint(source.jwks)
    if result.status == 200:
        fields["jwks"] = result.document
    if changed:
        fields["jwks_changed_at"] = now
    with transaction.atomic():
        stored = row.update(**fields)
        if stored:
            tenant_config_bump(tenant_id=source.tenant_id)  # every process serves the new set
    flights.failed_clear(source.pk)
    if fetched.keyset is not None:
        keyset_remember((source.pk, jwks_digest(result.document)), fetched.keyset)  # parsed once, here
    logger.info(
        "JWKS refreshed",
        extra={"jwtex": {"issuer": source.issuer_id, "pk": source.pk, "changed": changed, "status": result.status}},
    )
    jwks_fetch_observed(
        tenant=source.tenant_slug, issuer=source.issuer_id, outcome="changed" if changed else "unchanged"
    )
    return Outcome.CHANGED if changed else Outcome.UNCHANGED


# --------------------------------------------------------------------------- refresh


def refresh_due(row: Issuer, now: datetime, max_staleness: timedelta) -> bool:
    if row.jwks_consecutive_failures and row.jwks_last_error_at:
        # Back off after a failure, so an issuer whose upstream is down is not fetched again and again.
        if now - row.jwks_last_error_at < timedelta(seconds=jwtex_settings.unknown_kid_cooldown):
            return False
    if not row.jwks or row.jwks_fetched_at is None or row.jwks_expires_at is None:
        return True
    return row.jwks_expires_at <= now or now - row.jwks_fetched_at > max_staleness


def jwks_refresh(row: Issuer, *, now: datetime, force: bool, max_staleness: timedelta) -> Outcome:
    """Fetch in the caller's thread (tasks, the admin, commands), within the 10 s deadline."""
    if row.static_jwks is not None:
        return Outcome.STATIC
    if not force and not refresh_due(row, now, max_staleness):
        return Outcome.NOT_DUE
    if not flights.flight_take(row.pk):
        return Outcome.IN_FLIGHT
    source = Source.of(row)
    try:
        return store(source, fetch(source, deadline=time.monotonic() + FETCH_TOTAL_TIMEOUT), now=now)
    finally:
        flights.flight_release(row.pk)
