"""Audit retention: exchange records older than their tenant's retention are deleted in batches."""

from __future__ import annotations

from datetime import datetime, timedelta

from tenants.models import Tenant

from .models import ExchangeRecord


def exchange_records_purge(*, tenant: Tenant, now: datetime, batch_size: int = 5000) -> int:
    cutoff = now - timedelta(days=tenant.audit_retention_days)
    deleted = 0
    while True:
        # Small batches keep each DELETE short: no long lock on a busy audit table.
        ids = list(
            ExchangeRecord.objects.filter(tenant=tenant, created_at__lt=cutoff).values_list("pk", flat=True)[:batch_size]
        )
        if not ids:
            return deleted
        deleted += ExchangeRecord.objects.filter(pk__in=ids).delete()[0]
