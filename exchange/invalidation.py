"""Cache invalidation only: a change to anything the exchange reads for a tenant bumps the
tenant's ``config_version`` (which tells every process's runtime cache to rebuild within the
re-check interval, exchange.runtime) and sends ``config_changed`` (which makes this process
forget its snapshot at once). No business rule lives here.

Issuers, rules and tenants are written by the admin and by ``jwtex_apply``: their saves and
deletes bump through the receivers below. Signing keys are written only by exchange.keys,
which bumps once per operation itself (a key save has no receiver, so a rotation is one bump).
"""

from __future__ import annotations

from django.db.models import F
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import Signal, receiver

from tenants.models import Tenant

from .models import Issuer, Rule

# Sent after a tenant's config_version moved; receivers get ``tenant_id``.
config_changed = Signal()


def tenant_config_bump(*, tenant_id: int) -> None:
    Tenant.objects.filter(pk=tenant_id).update(config_version=F("config_version") + 1)
    config_changed.send(sender=Tenant, tenant_id=tenant_id)


@receiver(post_save, sender=Issuer)
@receiver(post_delete, sender=Issuer)
@receiver(post_save, sender=Rule)
@receiver(post_delete, sender=Rule)
def _tenant_row_changed(sender, instance, **kwargs) -> None:
    tenant_config_bump(tenant_id=instance.tenant_id)


@receiver(m2m_changed, sender=Rule.issuers.through)
def _rule_issuers_changed(sender, instance, action, **kwargs) -> None:
    if action in {"post_add", "post_remove", "post_clear"} and isinstance(instance, Rule):
        tenant_config_bump(tenant_id=instance.tenant_id)


@receiver(post_save, sender=Tenant)
def _tenant_saved(sender, instance, created, update_fields=None, **kwargs) -> None:
    if update_fields and set(update_fields) <= {"config_version", "keys_next_check_at"}:
        return
    # Rotation settings may have changed: let the next key sweep look at this tenant.
    Tenant.objects.filter(pk=instance.pk).update(keys_next_check_at=None)
    tenant_config_bump(tenant_id=instance.pk)
