"""Cache invalidation only: a change to anything the exchange reads for a tenant bumps the
tenant's ``config_version``, then, once that is committed, the global ``ConfigEpoch`` (which
tells every process's runtime cache to compare its snapshots within the re-check interval,
exchange.runtime), and sends ``config_changed`` (which makes this process forget its snapshot
at once). No business rule lives here.

The epoch moves after the commit, in its own statement, so a process that sees it move reads
the change it announces, and no configuration transaction ever waits on another tenant's.

Issuers, rules and tenants are written by the admin and by ``jwtex_apply``: their saves and
deletes bump through the receivers below. Signing keys are written only by exchange.keys,
which bumps once per operation itself (a key save has no receiver, so a rotation is one bump).
"""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import F
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import Signal, receiver

from tenants.models import ConfigEpoch, Tenant

from .models import Issuer, Rule

# Sent after a tenant's config_version moved; receivers get ``tenant_id``.
config_changed = Signal()


def tenant_config_bump(*, tenant_id: int) -> None:
    Tenant.objects.filter(pk=tenant_id).update(config_version=F("config_version") + 1)
    transaction.on_commit(config_epoch_bump)
    config_changed.send(sender=Tenant, tenant_id=tenant_id)


def config_epoch_bump() -> None:
    if ConfigEpoch.objects.filter(pk=1).update(value=F("value") + 1):
        return
    try:  # a database flushed since its migrations ran
        with transaction.atomic():
            ConfigEpoch.objects.create(pk=1, value=1)
    except IntegrityError:
        ConfigEpoch.objects.filter(pk=1).update(value=F("value") + 1)


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


@receiver(post_delete, sender=Tenant)
def _tenant_deleted(sender, instance, **kwargs) -> None:
    transaction.on_commit(config_epoch_bump)
    config_changed.send(sender=Tenant, tenant_id=instance.pk)


@receiver(post_save, sender=Tenant)
def _tenant_saved(sender, instance, created, update_fields=None, **kwargs) -> None:
    if update_fields and set(update_fields) <= {"config_version", "keys_next_check_at"}:
        return
    # Rotation settings may have changed: let the next key sweep look at this tenant.
    Tenant.objects.filter(pk=instance.pk).update(keys_next_check_at=None)
    tenant_config_bump(tenant_id=instance.pk)
