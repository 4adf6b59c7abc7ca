"""Tenant signing keys in the database: creation, activation, re-encryption, rotation, revocation.

The key material itself (generation, RFC 7638 key ids, Fernet encryption at rest) is pure
(exchange.core.jwk); this module applies it to ``SigningKey`` rows under the tenant's row lock,
and bumps the tenant's version once per operation (exchange.invalidation) so every process's
runtime serves the new key set.

A tenant whose ``key_backend`` is ``aws-kms`` gets its new keys from AWS KMS (exchange.kms): the
row holds the key's ARN and its public JWK, never private material, and goes through the same
next → active → retiring → retired lifecycle; a retired or revoked KMS key is scheduled for
deletion (retried at the tenant's next check until KMS accepts).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.fernet import InvalidToken
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from tenants.models import KeyBackend, Tenant

from . import kms
from .conf import jwtex_settings
from .core import jwk
from .core.jwk import KeyDecryptionError
from .core.rotation import KeyView, RotationPolicy, rotation_plan
from .core.values import SignerKey
from .invalidation import tenant_config_bump
from .models import PUBLISHED_KEY_STATES, IssuerPublication, KeyState, SigningKey

logger = logging.getLogger("jwtex.keys")

__all__ = [
    "KeyDecryptionError",
    "RotationResult",
    "SigningKeyUnavailable",
    "signing_key_ensure_active",
    "signing_key_load",
    "signing_key_revoke",
    "signing_key_rotate",
    "signing_keys_reencrypt",
]


class SigningKeyUnavailable(ValidationError):
    """AWS KMS could not make or use a tenant's key (unreachable, access denied, throttled…).
    A ValidationError, so that a tenant whose first KMS key cannot be made is refused where
    tenants are made, like an invalid setting: jwtex_apply names it under the tenant and changes
    nothing, the admin says why."""


# Retried soon when KMS did not accept a retired key's deletion (the plan may wait for a month).
_KMS_RETRY = timedelta(minutes=5)


def _fernet():
    return jwk.key_encryption(jwtex_settings.key_encryption_keys)


def signing_key_encrypt(private_key: Any) -> bytes:
    return jwk.private_key_encrypt(private_key, fernet=_fernet())


def signing_key_decrypt(blob: bytes) -> Any:
    return jwk.private_key_decrypt(blob, fernet=_fernet())


@dataclass(frozen=True)
class NewKey:
    kid: str
    algorithm: str
    public_jwk: dict[str, Any]
    private_key_encrypted: bytes


def new_key_material(*, algorithm: str) -> NewKey:
    private_key = jwk.private_key_generate(algorithm)
    public = jwk.public_jwk(private_key, algorithm=algorithm)
    return NewKey(public["kid"], algorithm, public, signing_key_encrypt(private_key))


def _kms_key_material(tenant: Tenant, algorithm: str) -> dict[str, Any]:
    try:
        created = kms.kms_key_create(
            region=tenant.kms_region, algorithm=algorithm, tenant_slug=tenant.slug, account_id=tenant.kms_account_id
        )
    except kms.KmsError as exc:
        raise SigningKeyUnavailable(f"The tenant's AWS KMS key could not be made: {exc}.") from exc
    public = created.public_jwk
    return {
        "kid": public["kid"],
        "public_jwk": public,
        "private_key_encrypted": b"",
        "backend": KeyBackend.AWS_KMS,
        "kms_key_id": created.key_id,
    }


def signing_key_create(
    *, tenant: Tenant, now: datetime, state: str = KeyState.NEXT, algorithm: str | None = None
) -> SigningKey:
    """A new key of the tenant's backend: generated here (``local``) or by AWS KMS (``aws-kms``;
    ``SigningKeyUnavailable`` when KMS cannot make one)."""
    algorithm = algorithm or tenant.signing_algorithm
    if tenant.key_backend == KeyBackend.AWS_KMS:
        fields = _kms_key_material(tenant, algorithm)
    else:
        material = new_key_material(algorithm=algorithm)
        fields = {
            "kid": material.kid,
            "public_jwk": material.public_jwk,
            "private_key_encrypted": material.private_key_encrypted,
        }
    return SigningKey.objects.create(
        tenant=tenant,
        algorithm=algorithm,
        state=state,
        created_at=now,
        activate_after=now,
        activated_at=now if state == KeyState.ACTIVE else None,
        **fields,
    )


def signing_key_ensure_active(*, tenant: Tenant, now: datetime) -> SigningKey:
    """Make sure the tenant has a key that signs. A brand-new tenant's first key signs at
    once: nothing was trusted before it, so there is nothing to pre-publish against."""
    existing = SigningKey.objects.filter(tenant=tenant, state=KeyState.ACTIVE).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            Tenant.objects.select_for_update(no_key=True).filter(pk=tenant.pk).first()
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
    """The ``SignerKey`` of a published row: decrypted here, or signing through AWS KMS."""
    if key.backend == KeyBackend.AWS_KMS:
        if key.state not in PUBLISHED_KEY_STATES or not key.kms_key_id:
            raise SigningKeyUnavailable(
                f"signing key {key.kid} is {key.state}: its AWS KMS key is scheduled for deletion"
            )
        try:
            sign = kms.kms_signer(key_id=key.kms_key_id, algorithm=key.algorithm, kid=key.kid)
        except Exception as exc:  # a malformed ARN, or boto3 unable to make a client
            raise SigningKeyUnavailable(f"signing key {key.kid}: no AWS KMS client ({type(exc).__name__})") from exc
        return SignerKey(
            kid=key.kid,
            algorithm=key.algorithm,
            remote_sign=sign,
            backend=KeyBackend.AWS_KMS,
            signature_size=jwk.jwk_signature_size(key.public_jwk),
        )
    if not key.private_key_encrypted:
        raise KeyDecryptionError(f"signing key {key.kid} has no private part (retired)")
    return SignerKey(kid=key.kid, algorithm=key.algorithm, private_key=signing_key_decrypt(key.private_key_encrypted))


def signing_keys_reencrypt() -> int:
    """Re-encrypt every stored private key under the first key-encryption key."""
    fernet = _fernet()
    count = 0
    with transaction.atomic():
        for key in SigningKey.objects.select_for_update(of=("self",)).exclude(private_key_encrypted=b""):
            try:
                rotated = fernet.rotate(bytes(key.private_key_encrypted))
            except InvalidToken as exc:
                raise KeyDecryptionError(
                    f"signing key {key.kid} of tenant {key.tenant_id} cannot be decrypted"
                ) from exc
            SigningKey.objects.filter(pk=key.pk).update(private_key_encrypted=rotated)
            count += 1
    return count


# --- rotation (docs/design/key-lifecycle.md#the-plan): apply exchange.core.rotation's plan under the tenant's row lock


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
        publication_required=bool(tenant.published_issuer_url),
    )


def _views(tenant: Tenant) -> list[KeyView]:
    # With a published issuer URL, when the read-back of the published JWKS first confirmed each key
    # (exchange.publish; docs/endpoints.md#published-issuer-url): a next key signs only after that.
    live = IssuerPublication.live_keys(tenant) if tenant.published_issuer_url else {}
    return [
        KeyView(k.kid, k.state, k.created_at, k.activate_after, k.activated_at, k.retire_after, live.get(k.kid))
        for k in SigningKey.objects.filter(tenant=tenant, state__in=PUBLISHED_KEY_STATES)
    ]


def _publication_due(tenant: Tenant, now: datetime) -> None:
    """The key set changed: the publication sweep publishes it at its next run (within a minute)."""
    IssuerPublication.objects.filter(tenant=tenant).update(next_attempt_at=now)


def signing_key_rotate(*, tenant_id: int, now: datetime, force: bool = False) -> RotationResult:
    """One idempotent step of the rotation state machine for one tenant. Two workers (or
    two beats) never double-rotate: the second finds the row locked and skips."""
    with transaction.atomic():
        # NO KEY UPDATE: every audit row being inserted for this tenant holds FOR KEY SHARE on its
        # row (the foreign key), which a plain FOR UPDATE would conflict with: a busy tenant's
        # rotation was skipped again and again (found by tests/exchange/test_multinode.py).
        tenant = Tenant.objects.select_for_update(skip_locked=True, no_key=True).filter(pk=tenant_id).first()
        if tenant is None:
            return RotationResult(tenant=str(tenant_id), skipped=True)
        result = _rotate_locked(tenant, now=now, force=force)
        if result.changed or result.rescheduled:
            tenant_config_bump(tenant_id=tenant.pk)
        if result.changed:
            _publication_due(tenant, now)
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
    # Last, after every key was made: a KMS failure above leaves no deletion scheduled for rows rolled back.
    next_check_at = plan.next_check_at
    if not _kms_deletions_schedule(tenant, now=now) and next_check_at is not None:
        next_check_at = min(next_check_at, now + _KMS_RETRY)
    Tenant.objects.filter(pk=tenant.pk).update(keys_next_check_at=next_check_at)
    return RotationResult(
        tenant=tenant.slug,
        created=tuple(created),
        activated=plan.activate,
        retiring=tuple(kid for kid, _ in plan.retiring),
        retired=plan.retire,
        rescheduled=plan.reschedule is not None,
    )


def _kms_deletions_schedule(tenant: Tenant, *, now: datetime) -> bool:
    """ScheduleKeyDeletion for every retired or revoked KMS key of ``tenant`` not yet scheduled;
    False when KMS did not accept one (it is asked again at the tenant's next check)."""
    done = True
    pending = SigningKey.objects.filter(
        tenant=tenant,
        backend=KeyBackend.AWS_KMS,
        state__in=(KeyState.RETIRED, KeyState.REVOKED),
        kms_deletion_scheduled_at__isnull=True,
    ).exclude(kms_key_id="")
    for key in pending:
        if kms.kms_key_schedule_deletion(key_id=key.kms_key_id):
            SigningKey.objects.filter(pk=key.pk).update(kms_deletion_scheduled_at=now)
        else:
            done = False
    return done


def signing_key_revoke(*, tenant: Tenant, kid: str, now: datetime) -> RotationResult:
    """A compromised key leaves the JWKS at once and its private part is destroyed (a KMS key:
    scheduled for deletion, so it cannot sign); if it was signing, the next key (published
    already) signs at once, or a new key does. One bump. When AWS KMS cannot make that new key,
    the revocation stands all the same: the tenant answers 503 until the key sweep makes one."""
    with transaction.atomic():
        Tenant.objects.select_for_update(no_key=True).filter(pk=tenant.pk).first()
        key = SigningKey.objects.filter(tenant=tenant, kid=kid, state__in=PUBLISHED_KEY_STATES).first()
        if key is None:
            raise SigningKey.DoesNotExist(f"no published key {kid!r} in tenant {tenant.slug}")
        SigningKey.objects.filter(pk=key.pk).update(state=KeyState.REVOKED, retired_at=now, private_key_encrypted=b"")
        try:
            with transaction.atomic():
                result = _rotate_locked(tenant, now=now, force=False)
        except SigningKeyUnavailable as exc:
            logger.error(
                "revoked; no new KMS key yet", extra={"jwtex": {"tenant": tenant.slug, "error": exc.messages[0]}}
            )
            _kms_deletions_schedule(tenant, now=now)
            Tenant.objects.filter(pk=tenant.pk).update(keys_next_check_at=now + timedelta(minutes=1))
            result = RotationResult(tenant=tenant.slug)
        tenant_config_bump(tenant_id=tenant.pk)
        _publication_due(tenant, now)
    return RotationResult(tenant=tenant.slug, created=result.created, activated=result.activated, retired=(kid,))
