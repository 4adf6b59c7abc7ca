"""Tenant signing keys: generation, RFC 7638 key ids, encryption at rest, activation.

Private keys exist in clear only in memory. At rest they are Fernet tokens (AES-128-CBC +
HMAC-SHA256) under ``JWTEX_KEY_ENCRYPTION_KEYS``: the first key encrypts, every key
decrypts, so an operator can add a new first key and re-encrypt (``signing_keys_reencrypt``)
without downtime.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.conf import settings
from django.db import IntegrityError, transaction

from tenants.models import SigningAlgorithm, Tenant

from .minting import SignerKey
from .models import PUBLISHED_KEY_STATES, KeyState, SigningKey
from .rotation import KeyView, RotationPolicy, rotation_plan

RSA_KEY_BITS = 2048


class KeyDecryptionError(Exception):
    """No configured key-encryption key opens this signing key."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_uint(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 §3: SHA-256 over the required members, lexicographic order, no whitespace."""
    required = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}[jwk["kty"]]
    canonical = json.dumps({name: jwk[name] for name in required}, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def public_jwk(private_key: Any, *, algorithm: str) -> dict[str, Any]:
    public = private_key.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        numbers = public.public_numbers()
        jwk: dict[str, Any] = {
            "kty": "EC",
            "crv": "P-256",
            "x": _b64url(numbers.x.to_bytes(32, "big")),
            "y": _b64url(numbers.y.to_bytes(32, "big")),
        }
    else:
        numbers = public.public_numbers()
        jwk = {"kty": "RSA", "n": _b64url_uint(numbers.n), "e": _b64url_uint(numbers.e)}
    jwk.update({"kid": jwk_thumbprint(jwk), "alg": algorithm, "use": "sig"})
    return jwk


def generate_private_key(algorithm: str) -> Any:
    if algorithm == SigningAlgorithm.ES256:
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == SigningAlgorithm.RS256:
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    raise ValueError(f"unsupported signing algorithm {algorithm!r}")


def _fernet_for(secret: str) -> Fernet:
    # Any operator-chosen string works: the Fernet key is derived from it, domain-separated.
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"jwtex-kek-v1\x00" + secret.encode("utf-8")).digest()))


@lru_cache(maxsize=4)
def _multi_fernet(secrets: tuple[str, ...]) -> MultiFernet:
    if not secrets:
        raise KeyDecryptionError("JWTEX_KEY_ENCRYPTION_KEYS is empty")
    return MultiFernet([_fernet_for(s) for s in secrets])


def key_encryption() -> MultiFernet:
    return _multi_fernet(tuple(settings.JWTEX_KEY_ENCRYPTION_KEYS))


def encrypt_private_key(private_key: Any) -> bytes:
    pem = private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_encryption().encrypt(pem)


def decrypt_private_key(blob: bytes) -> Any:
    try:
        der = key_encryption().decrypt(bytes(blob))
    except InvalidToken as exc:
        raise KeyDecryptionError("no configured key-encryption key decrypts this signing key") from exc
    return serialization.load_der_private_key(der, password=None)


@dataclass(frozen=True)
class NewKey:
    kid: str
    algorithm: str
    public_jwk: dict[str, Any]
    private_key_encrypted: bytes


def new_key_material(*, algorithm: str) -> NewKey:
    private_key = generate_private_key(algorithm)
    jwk = public_jwk(private_key, algorithm=algorithm)
    return NewKey(jwk["kid"], algorithm, jwk, encrypt_private_key(private_key))


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
            return signing_key_create(tenant=tenant, now=now, state=KeyState.ACTIVE)
    except IntegrityError:
        # Another process created it between our check and insert (the one-active constraint held).
        return SigningKey.objects.get(tenant=tenant, state=KeyState.ACTIVE)


def signing_key_load(key: SigningKey) -> SignerKey:
    if not key.private_key_encrypted:
        raise KeyDecryptionError(f"signing key {key.kid} has no private part (retired)")
    return SignerKey(kid=key.kid, algorithm=key.algorithm, private_key=decrypt_private_key(key.private_key_encrypted))


def signing_keys_reencrypt() -> int:
    """Re-encrypt every stored private key under the first key-encryption key."""
    fernet = key_encryption()
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


# --- rotation (SPEC §7): apply exchange.rotation's plan under the tenant's row lock ------------


@dataclass(frozen=True)
class RotationResult:
    tenant: str
    skipped: bool = False  # another worker holds the tenant's lock
    created: tuple[str, ...] = ()
    activated: str | None = None
    retiring: tuple[str, ...] = ()
    retired: tuple[str, ...] = ()

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
        if plan.changes:
            # update() bypasses signals: tell every process's runtime that the key set moved.
            from .signals import tenant_config_bump

            tenant_config_bump(tenant_id=tenant.pk)
    return RotationResult(
        tenant=tenant.slug,
        created=tuple(created),
        activated=plan.activate,
        retiring=tuple(kid for kid, _ in plan.retiring),
        retired=plan.retire,
    )


def signing_key_revoke(*, tenant: Tenant, kid: str, now: datetime) -> RotationResult:
    """A compromised key leaves the JWKS at once and its private part is destroyed; if it was
    signing, the next key (published already) signs at once, or a new key does."""
    with transaction.atomic():
        Tenant.objects.select_for_update().filter(pk=tenant.pk).first()
        key = SigningKey.objects.filter(tenant=tenant, kid=kid, state__in=PUBLISHED_KEY_STATES).first()
        if key is None:
            raise SigningKey.DoesNotExist(f"no published key {kid!r} in tenant {tenant.slug}")
        SigningKey.objects.filter(pk=key.pk).update(
            state=KeyState.REVOKED, retired_at=now, private_key_encrypted=b""
        )
    result = signing_key_rotate(tenant_id=tenant.pk, now=now)
    from .signals import tenant_config_bump

    tenant_config_bump(tenant_id=tenant.pk)
    return RotationResult(tenant=tenant.slug, created=result.created, activated=result.activated, retired=(kid,))
