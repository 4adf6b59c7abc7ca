"""Tenants: the one way to create one (the admin and jwtex_apply both call it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from tenants.models import Tenant

from ..keys import signing_key_ensure_active
from ..models import Issuer


def tenant_create(*, slug: str, name: str, now: datetime | None = None, **fields: Any) -> Tenant:
    """A tenant is born with an active signing key, so its JWKS is never empty."""
    with transaction.atomic():
        tenant = Tenant(slug=slug, name=name, **fields)
        tenant.full_clean()
        tenant.save()
        signing_key_ensure_active(tenant=tenant, now=now or timezone.now())
    return tenant


def issuer_id_free(*, tenant: Tenant, wanted: str) -> str:
    """``wanted`` if the tenant has no issuer with that id, else the first free ``wanted-2``,
    ``wanted-3``…: what a preset proposes, so its form does not start with a refusal."""
    taken = set(Issuer.objects.filter(tenant=tenant, issuer_id__startswith=wanted).values_list("issuer_id", flat=True))
    candidate, n = wanted, 1
    while candidate in taken:
        n += 1
        candidate = f"{wanted[: 64 - len(str(n)) - 1]}-{n}"
    return candidate
