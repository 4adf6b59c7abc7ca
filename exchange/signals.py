"""Cache invalidation only: any saved or deleted row the exchange reads bumps its tenant's
``config_version``, which tells every process's runtime cache to rebuild (exchange.runtime).
No business rule lives here."""

from __future__ import annotations

from django.db.models import F
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from tenants.models import Tenant

from .models import Issuer, Rule, SigningKey


def tenant_config_bump(*, tenant_id: int) -> None:
    Tenant.objects.filter(pk=tenant_id).update(config_version=F("config_version") + 1)
    from .runtime import runtime_forget

    runtime_forget(tenant_id=tenant_id)


@receiver(post_save, sender=Issuer)
@receiver(post_delete, sender=Issuer)
@receiver(post_save, sender=Rule)
@receiver(post_delete, sender=Rule)
@receiver(post_save, sender=SigningKey)
@receiver(post_delete, sender=SigningKey)
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
