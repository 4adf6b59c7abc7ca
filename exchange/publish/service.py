"""Publish a tenant's issuer documents and confirm them by reading them back
(docs/endpoints.md#published-issuer-url).

One attempt writes the JWKS, then the discovery document, beneath the tenant's folder of
``JWTEX_PUBLISH_TARGET``, reads both back and compares them with what it wrote. Only a read-back
equal to what was written confirms keys as live there (``IssuerPublication.live``, with when each
was first confirmed): the rotation promotes a next key only a full max-age after that, and the
runtime lets a key sign only while it is confirmed live (exchange.runtime). A failure keeps what
was confirmed before, counts, and is tried again after a back-off (30 s, doubling, at most
30 min); a success is checked again every 15 minutes. Either way the tenant's row says what is
live, when it last published and whether the published set differs from the served one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, transaction

from tenants.models import Tenant

from ..conf import jwtex_settings
from ..core.publication import (
    CACHE_CONTROL,
    CONTENT_TYPE,
    JWKS_PATH,
    RECHECK_INTERVAL,
    jwks_kids,
    live_keys_merge,
    publish_backoff,
    published_documents,
    published_folder,
    readback_mismatch,
)
from ..invalidation import tenant_config_bump
from ..models import IssuerPublication
from .documents import tenant_discovery, tenant_jwks
from .targets import PublishError, ReadBack, publish_target_parse, tenant_target_path

logger = logging.getLogger("jwtex.publish")


@dataclass(frozen=True)
class PublishResult:
    tenant: str
    skipped: str = ""  # why nothing was done: no published URL, another worker holds it
    confirmed: bool = False  # the read-back equals the documents jwtex serves
    live: tuple[str, ...] = ()  # kids confirmed live at the published URL
    error: str = ""


def issuer_publish(*, tenant_id: int, now: datetime, check_only: bool = False) -> PublishResult:
    """Publish (or, ``check_only``, only read back and compare) one tenant's documents. Idempotent;
    two workers never publish one tenant at once (the second skips)."""
    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is None or not tenant.published_issuer_url:
        return PublishResult(tenant=str(getattr(tenant, "slug", tenant_id)), skipped="no published issuer URL")
    with transaction.atomic():
        row = _locked_row(tenant)
        if row is None:
            return PublishResult(tenant=tenant.slug, skipped="another worker is publishing it")
        jwks = tenant_jwks(tenant=tenant)
        documents = published_documents(discovery=tenant_discovery(tenant=tenant, jwks=jwks), jwks=jwks)
        previous = row.live if row.url == tenant.published_issuer_url and isinstance(row.live, dict) else {}
        try:
            read = _write_and_read(tenant, documents, check_only=check_only)
        except PublishError as exc:
            return _record(row, tenant, now, live=previous, error=str(exc))
        bad = readback_mismatch(documents, {path: answer.body for path, answer in read.items()})
        bad += [
            path
            for path, answer in read.items()
            if answer.body is not None
            and path not in bad
            and (answer.content_type, answer.cache_control) != (CONTENT_TYPE, CACHE_CONTROL)
        ]
        read_kids = _kids(read[JWKS_PATH].body)
        if bad:
            # Nothing newly confirmed: only what was live before and is still there.
            still = {kid: at for kid, at in previous.items() if kid in read_kids}
            what = "differs from what jwtex serves" if check_only else "read back differently from what was written"
            return _record(row, tenant, now, live=still, error=f"{', '.join(sorted(bad))} {what}")
        live = live_keys_merge(previous, read_kids, now=now.timestamp())
        return _record(row, tenant, now, live=live, published=not check_only)


def _locked_row(tenant: Tenant) -> IssuerPublication | None:
    if not IssuerPublication.objects.filter(tenant=tenant).exists():
        try:
            with transaction.atomic():
                IssuerPublication.objects.create(tenant=tenant, url=tenant.published_issuer_url)
        except IntegrityError:
            pass  # another worker made it
    return IssuerPublication.objects.select_for_update(skip_locked=True).filter(tenant=tenant).first()


def _write_and_read(tenant: Tenant, documents: dict[str, bytes], *, check_only: bool) -> dict[str, ReadBack]:
    if not jwtex_settings.publish_target:
        raise PublishError("JWTEX_PUBLISH_TARGET is not set: there is nowhere to publish to")
    target = publish_target_parse(jwtex_settings.publish_target)
    folder = published_folder(tenant.published_issuer_url)
    if not check_only:
        for path, body in documents.items():  # the JWKS first (published_documents' order)
            target.put(tenant_target_path(folder, path), body)
    return {path: target.get(tenant_target_path(folder, path)) for path in documents}


def _kids(body: bytes | None) -> set[str]:
    try:
        return set(jwks_kids(json.loads(body))) if body is not None else set()
    except ValueError:
        return set()


def _record(
    row: IssuerPublication, tenant: Tenant, now: datetime, *, live: dict, error: str = "", published: bool = False
) -> PublishResult:
    """Write what this attempt found; a change of the live set bumps the tenant, so that every
    process's runtime lets exactly the confirmed keys sign."""
    changed = set(live) != set(
        row.live if row.url == tenant.published_issuer_url and isinstance(row.live, dict) else {}
    )
    changed |= row.url != tenant.published_issuer_url
    failures = row.failures + 1 if error else 0
    row.url, row.live, row.in_sync, row.checked_at, row.failures = (
        tenant.published_issuer_url,
        live,
        not error,
        now,
        failures,
    )
    row.error = error[:500]
    row.next_attempt_at = now + (publish_backoff(failures) if error else RECHECK_INTERVAL)
    if published:
        row.published_at = now
    row.save()
    if changed:
        tenant_config_bump(tenant_id=tenant.pk)
    if error:
        logger.warning(
            "issuer publication failed",
            extra={"jwtex": {"tenant": tenant.slug, "error": row.error, "failures": failures}},
        )
    return PublishResult(tenant=tenant.slug, confirmed=not error, live=tuple(sorted(live)), error=row.error)
