"""Tenants: the one way to create one (the admin and jwtex_apply both call it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from tenants.models import Tenant

from ..keys import signing_key_ensure_active


def tenant_create(*, slug: str, name: str, now: datetime | None = None, **fields: Any) -> Tenant:
    """A tenant is born with an active signing key, so its JWKS is never empty."""
    with transaction.atomic():
        tenant = Tenant(slug=slug, name=name, **fields)
        tenant.full_clean()
        tenant.save()
        signing_key_ensure_active(tenant=tenant, now=now or timezone.now())
    return tenant
