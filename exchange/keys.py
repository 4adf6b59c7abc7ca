"""Tenant signing keys in the database: creation, activation, re-encryption, rotation, revocation.

The key material itself (generation, RFC 7638 key ids, Fernet encryption at rest) is pure
(exchange.core.jwk); this module applies it to ``SigningKey`` rows under the tenant's row lock,
and bumps the tenant's version once per operation (exchange.invalidation) so every process's
runtime serves the new key set.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.fernet import InvalidToken
from django.db import IntegrityError, transaction

from tenants.models import Tenant

from .conf import jwtex_settings
from .core import jwk
from .core.jwk import KeyDecryptionError
from .core.rotation import KeyView, RotationPolicy, rotation_plan
from .core.values import SignerKey
from .invalidation import tenant_config_bump
from .models import PUBLISHED_KEY_STATES, KeyState, SigningKey

__all__ = [
    "KeyDecryptionError",
    "RotationResult",
    "signing_key_ensure_active",
    "signing_key_load",
    "signing_key_revoke",
    "signing_key_rotate",
    "signing_keys_reencrypt",
]


def _fernet():
    return jwk.key_encryption(jwtex_settings.key_encryption_keys)


def encrypt_private_key(private_key: Any) -> bytes:
    return jwk.encrypt_private_key(private_key, fernet=_fernet())


def decrypt_private_key(blob: bytes) -> Any:
    return jwk.decrypt_private_key(blob, fernet=_fernet())


@dataclass(frozen=True)
class NewKey:
    kid: str
    algorithm: str
    public_jwk: dict[str, Any]
    private_key_encrypted: bytes


def new_key_material(*, algorithm: str) -> NewKey:
    private_key = jwk.generate_private_key(algorithm)
    public = jwk.public_jwk(private_key, algorithm=algorithm)
    return NewKey(public["kid"], algorithm, public, encrypt_private_key(private_key))


def signing_key_create(*, tenant: Tenant, now: datetime, state: str = KeyState.NEXT, algorithm: str | None = None) -> SigningKey:
    material = new_key_material(algorithm=algorithm or tenant.signing_algorithm)
    return SigningKey.objects.create(
        tenant=tenant,
        kid=material.kid,
        algorithm=material.algorithm,
        state=state,
        public_jwk=material.public_jwk,
        private_key_encrypted=material.private_key_encrypted,
        created_at=now,
        activate_after=now,
        activated_at=now if state == KeyState.ACTIVE else None,
    )


def signing_key_ensure_active(*, tenant: Tenant, now: datetime) -> SigningKey:
    """Make sure the tenant has a key that signs. A brand-new tenant's first key signs at
    once: nothing was trusted before it, so there is nothing to pre-publish against."""
    existing = SigningKey.objects.filter(tenant=tenant, state=KeyState.ACTIVE).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            Tenant.objects.select_for_update().filter(pk=tenant.pk).first()
            existing = SigningKey.objects.filter(tenant=tenant, state=KeyState.ACTIVE).first()
            if existing is not None:
                return existing
            created = signing_key_create(tenant=tenant, now=now, state=KeyState.ACTIVE)
            tenant_config_bump(tenant_id=tenant.pk)
            return created
    except IntegrityError:
        # Another process created it between our check and insert (the one-active constraint held).
        return SigningKey.objects.get(tenant=tenant, state=KeyState.ACTIVE)


def signing_key_load(key: SigningKey) -> SignerKey:
    if not key.private_key_encrypted:
        raise KeyDecryptionError(f"signing key {key.kid} has no private part (retired)")
    return SignerKey(kid=key.kid, algorithm=key.algorithm, private_key=decrypt_private_key(key.private_key_encrypted))


def signing_keys_reencrypt() -> int:
    """Re-encrypt every stored private key under the first key-encryption key."""
    fernet = _fernet()
    count = 0
    with transaction.atomic():
        for key in SigningKey.objects.select_for_update(of=("self",)).exclude(private_key_encrypted=b""):
            try:
                rotated = fernet.rotate(bytes(key.private_key_encrypted))
            except InvalidToken as exc:
                raise KeyDecryptionError(f"signing key {key.kid} of tenant {key.tenant_id} cannot be decrypted") from exc
            SigningKey.objects.filter(pk=key.pk).update(private_key_encrypted=rotated)
            count += 1
    return count


# --- rotation (SPEC §7): apply exchange.core.rotation's plan under the tenant's row lock -------


@dataclass(frozen=True)
class RotationResult:
    tenant: str
    skipped: bool = False  # another worker holds the tenant's lock
    created: tuple[str, ...] = ()
    activated: str | None = None
    retiring: tuple[str, ...] = ()
    retired: tuple[str, ...] = ()
    rescheduled: bool = False  # the next key's activation moved (rotate now)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.activated or self.retiring or self.retired)


def _policy(tenant: Tenant) -> RotationPolicy:
    return RotationPolicy(
        interval=timedelta(seconds=tenant.key_rotation_interval),
        prepublish=timedelta(seconds=tenant.key_prepublish_window),
        max_token_lifetime=timedelta(seconds=tenant.max_token_lifetime),
    )


def _views(tenant: Tenant) -> list[KeyView]:
    return [
        KeyView(k.kid, k.state, k.created_at, k.activate_after, k.activated_at, k.retire_after)
        for k in SigningKey.objects.filter(tenant=tenant, state__in=PUBLISHED_KEY_STATES)
    ]


def signing_key_rotate(*, tenant_id: int, now: datetime, force: bool = False) -> RotationResult:
    """One idempotent step of the rotation state machine for one tenant. Two workers (or
    two beats) never double-rotate: the second finds the row locked and skips."""
    with transaction.atomic():
        tenant = Tenant.objects.select_for_update(skip_locked=True).filter(pk=tenant_id).first()
        if tenant is None:
            return RotationResult(tenant=str(tenant_id), skipped=True)
        result = _rotate_locked(tenant, now=now, force=force)
        if result.changed or result.rescheduled:
            tenant_config_bump(tenant_id=tenant.pk)
    return result


def _rotate_locked(tenant: Tenant, *, now: datetime, force: bool) -> RotationResult:
    """Apply ``rotation_plan`` to the tenant's keys; the caller holds the tenant's row lock."""
    plan = rotation_plan(_views(tenant), now=now, policy=_policy(tenant), force=force)
    created: list[str] = []
    keys = SigningKey.objects.filter(tenant=tenant)
    for kid in plan.retire:
        # The last token this key signed has expired: unpublish it and destroy its private part.
        keys.filter(kid=kid).update(state=KeyState.RETIRED, retired_at=now, private_key_encrypted=b"")
    for kid, retire_after in plan.retiring:
        keys.filter(kid=kid).update(state=KeyState.RETIRING, retiring_at=now, retire_after=retire_after)
    if plan.reschedule:
        keys.filter(kid=plan.reschedule[0]).update(activate_after=plan.reschedule[1])
    if plan.activate:
        keys.filter(kid=plan.activate).update(state=KeyState.ACTIVE, activated_at=now)
    if plan.create_active:
        created.append(signing_key_create(tenant=tenant, now=now, state=KeyState.ACTIVE).kid)
    if plan.create_next_activate_after:
        key = signing_key_create(tenant=tenant, now=now, state=KeyState.NEXT)
        SigningKey.objects.filter(pk=key.pk).update(activate_after=plan.create_next_activate_after)
        created.append(key.kid)
    Tenant.objects.filter(pk=tenant.pk).update(keys_next_check_at=plan.next_check_at)
    return RotationResult(
        tenant=tenant.slug,
        created=tuple(created),
        activated=plan.activate,
        retiring=tuple(kid for kid, _ in plan.retiring),
        retired=plan.retire,
        rescheduled=plan.reschedule is not None,
    )


def signing_key_revoke(*, tenant: Tenant, kid: str, now: datetime) -> RotationResult:
    """A compromised key leaves the JWKS at once and its private part is destroyed; if it was
    signing, the next key (published already) signs at once, or a new key does. One bump."""
    with transaction.atomic():
        Tenant.objects.select_for_update().filter(pk=tenant.pk).first()
        key = SigningKey.objects.filter(tenant=tenant, kid=kid, state__in=PUBLISHED_KEY_STATES).first()
        if key is None:
            raise SigningKey.DoesNotExist(f"no published key {kid!r} in tenant {tenant.slug}")
        SigningKey.objects.filter(pk=key.pk).update(state=KeyState.REVOKED, retired_at=now, private_key_encrypted=b"")
        result = _rotate_locked(tenant, now=now, force=False)
        tenant_config_bump(tenant_id=tenant.pk)
    return RotationResult(tenant=tenant.slug, created=result.created, activated=result.activated, retired=(kid,))
