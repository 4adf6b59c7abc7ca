"""Celery tasks (docs/design/layout.md#tasks-are-thin-and-idempotent): thin, idempotent, take ids, call services.

Beat runs the three sweeps (jwtex_site/celery.py); each sweep picks what is due from the
database and fans out one task per issuer or tenant. The services take row locks with
``skip_locked``, so two beats or many workers never double-fetch or double-rotate.
"""

from __future__ import annotations

import logging

from celery import shared_task
from django.db.models import F, Q
from django.utils import timezone

from tenants.models import Tenant

from .audit.writer import audit_writer, spool_drain
from .keys import signing_key_rotate
from .models import Issuer
from .publish.service import issuer_publish
from .services.audit import audit_retention_sweep, exchange_records_purge
from .services.health import sweep_succeeded
from .upstream.issuer_keys import issuer_jwks_refresh

logger = logging.getLogger("jwtex.tasks")


@shared_task(name="exchange.refresh_issuer_jwks", ignore_result=True)
def refresh_issuer_jwks(issuer_pk: int, force: bool = False) -> bool:
    issuer = Issuer.objects.select_related("tenant").filter(pk=issuer_pk, enabled=True).first()
    if issuer is None:
        return False
    return issuer_jwks_refresh(issuer=issuer, now=timezone.now(), force=force)


@shared_task(name="exchange.rotate_tenant_keys", ignore_result=True)
def rotate_tenant_keys(tenant_pk: int, force: bool = False) -> bool:
    result = signing_key_rotate(tenant_id=tenant_pk, now=timezone.now(), force=force)
    if result.changed:
        logger.info("signing keys rotated", extra={"jwtex": {"tenant": result.tenant, **_result_fields(result)}})
        # The key set changed: publish it now rather than at the sweep's next minute.
        if Tenant.objects.filter(pk=tenant_pk).exclude(published_issuer_url="").exists():
            publish_tenant_issuer.delay(tenant_pk)
    return result.changed


@shared_task(name="exchange.publish_tenant_issuer", ignore_result=True)
def publish_tenant_issuer(tenant_pk: int) -> bool:
    """Publish one tenant's issuer documents and read them back (docs/endpoints.md#published-issuer-url)."""
    return issuer_publish(tenant_id=tenant_pk, now=timezone.now()).confirmed


@shared_task(name="exchange.purge_exchange_records", ignore_result=True)
def purge_exchange_records(tenant_pk: int) -> int:
    tenant = Tenant.objects.filter(pk=tenant_pk).first()
    return 0 if tenant is None else exchange_records_purge(tenant=tenant, now=timezone.now())


def _succeeded(sweep: str, count: int) -> int:
    """Note the sweep's success for /metrics (jwtex_sweep_last_success_timestamp_seconds)."""
    sweep_succeeded(name=sweep, now=timezone.now())
    return count


def _fan_out(task, pks) -> int:
    """One task per id; the sweep itself stays short however many rows are due."""
    count = 0
    for pk in pks.iterator():
        task.delay(pk)
        count += 1
    return count


@shared_task(name="exchange.sweep_issuers", ignore_result=True)
def sweep_issuers() -> int:
    due = Issuer.objects.filter(enabled=True, tenant__enabled=True, static_jwks__isnull=True).filter(
        Q(jwks_expires_at__isnull=True) | Q(jwks_expires_at__lte=timezone.now())
    )
    return _succeeded("sweep_issuers", _fan_out(refresh_issuer_jwks, due.values_list("pk", flat=True)))


@shared_task(name="exchange.sweep_signing_keys", ignore_result=True)
def sweep_signing_keys() -> int:
    due = Tenant.objects.filter(Q(keys_next_check_at__isnull=True) | Q(keys_next_check_at__lte=timezone.now()))
    return _succeeded("sweep_signing_keys", _fan_out(rotate_tenant_keys, due.values_list("pk", flat=True)))


@shared_task(name="exchange.sweep_issuer_publications", ignore_result=True)
def sweep_issuer_publications() -> int:
    """Every tenant with a published issuer URL whose documents are due: never published, published
    for another URL, changed keys (exchange.keys marks them), the periodic read-back, or a retry."""
    due = Tenant.objects.exclude(published_issuer_url="").filter(
        Q(publication__isnull=True)
        | Q(publication__next_attempt_at__isnull=True)
        | Q(publication__next_attempt_at__lte=timezone.now())
        | ~Q(publication__url=F("published_issuer_url"))
    )
    return _succeeded("sweep_issuer_publications", _fan_out(publish_tenant_issuer, due.values_list("pk", flat=True)))


@shared_task(name="exchange.sweep_exchange_records", ignore_result=True)
def sweep_exchange_records() -> int:
    """Retention: on PostgreSQL the coming week's partitions made and the days past every
    tenant's retention dropped whole, then one purge per tenant for what a shorter retention ends."""
    days = audit_retention_sweep(now=timezone.now())
    if days["created"] or days["dropped"]:
        logger.info("audit partitions", extra={"jwtex": days})
    return _succeeded(
        "sweep_exchange_records", _fan_out(purge_exchange_records, Tenant.objects.values_list("pk", flat=True))
    )


def _result_fields(result) -> dict:
    return {"created": list(result.created), "activated": result.activated, "retired": list(result.retired)}


@shared_task(name="exchange.drain_audit_spool", ignore_result=True)
def drain_audit_spool() -> int:
    """Audit records a process of this host spooled while the database was down (and did not
    drain itself: e.g. it was killed) are written to the database, each exactly once."""
    return _succeeded("drain_audit_spool", spool_drain(audit_writer().spool))
