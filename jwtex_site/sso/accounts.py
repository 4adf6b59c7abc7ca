"""The account a verified identity signs in to, and its access made to match the provider's claim.

The provider's (issuer, ``sub``) names the account (``tenants.SignOnIdentity``); the first sign-in
creates it, with a username from the configured claim (``preferred_username``, else ``email``,
else ``sub``; made unique, never an existing account's) and no usable password. At every
sign-in its tenant memberships are made to match the roles claim (``tenants.services.
membership_sync``), its superuser flag follows the claim's superuser value, and it is staff —
may open the admin — only while it has a role somewhere. Each change is an admin log entry.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime

from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.db import transaction

from exchange.conf import AdminSignOn
from tenants.models import Membership, SignOnIdentity, Tenant
from tenants.services import membership_sync

from .roles import ClaimedRoles, claim_values, roles_from_claim

logger = logging.getLogger("jwtex.sso")


@dataclass(frozen=True)
class SignOnResult:
    user: object
    access: bool  # may open the admin: a superuser, or a member of some tenant
    roles: ClaimedRoles
    unknown_tenants: tuple[str, ...]  # named by the claim, not in jwtex


def _username(claims: dict, sign_on: AdminSignOn) -> str:
    User = get_user_model()
    limit = User._meta.get_field(User.USERNAME_FIELD).max_length or 150
    wanted = next(
        (
            v.strip()
            for v in (claims.get(sign_on.username_claim), claims.get("email"), claims["sub"])
            if isinstance(v, str) and v.strip()
        ),
        claims["sub"],
    )[:limit]
    if not User.objects.filter(username=wanted).exists():
        return wanted
    # Taken (by a local account, or another identity): never merged into it. The suffix is the
    # subject's own, so the same person always gets the same name.
    suffix = "~" + hashlib.sha256(f"{claims['iss']} {claims['sub']}".encode()).hexdigest()[:8]
    return wanted[: limit - len(suffix)] + suffix


def _account(claims: dict, sign_on: AdminSignOn):
    identity = (
        SignOnIdentity.objects.select_for_update()
        .select_related("user")
        .filter(issuer=sign_on.issuer, subject=claims["sub"])
        .first()
    )
    if identity is not None:
        return identity.user, identity
    user = get_user_model().objects.create_user(username=_username(claims, sign_on), password=None)
    identity = SignOnIdentity.objects.create(user=user, issuer=sign_on.issuer, subject=claims["sub"])
    logger.info("sign-on: account created", extra={"jwtex": {"username": user.get_username()}})
    return user, identity


def _profile(user, claims: dict) -> list[str]:
    changed = []
    email = claims.get("email")
    if isinstance(email, str) and claims.get("email_verified", True) is not False and email != user.email:
        user.email = email[:254]
        changed.append("email")
    for field, claim in (("first_name", "given_name"), ("last_name", "family_name")):
        value = claims.get(claim)
        if isinstance(value, str) and value[:150] != getattr(user, field):
            setattr(user, field, value[:150])
            changed.append(field)
    return changed


def sign_on_account(*, claims: dict, sign_on: AdminSignOn, now: datetime) -> SignOnResult:
    """The account of these verified ID token claims, its memberships and flags made to match."""
    roles = roles_from_claim(
        claim_values(claims, sign_on.roles_claim), prefix=sign_on.roles_prefix, superuser_value=sign_on.superuser_value
    )
    with transaction.atomic():
        user, identity = _account(claims, sign_on)
        tenants = {t.slug: t for t in Tenant.objects.filter(slug__in=list(roles.tenants))}
        membership_sync(
            user=user,
            roles={tenants[slug]: role for slug, role in roles.tenants.items() if slug in tenants},
            exclusive=sign_on.roles_exclusive,
        )
        changed = _profile(user, claims)
        access = user.is_active and (roles.superuser or Membership.objects.filter(user=user).exists())
        flags = []
        if user.is_superuser != roles.superuser:
            flags.append(f"superuser {'granted' if roles.superuser else 'removed'}")
            user.is_superuser = roles.superuser
        if user.is_staff != access:
            flags.append(f"admin access {'granted' if access else 'removed'}")
            user.is_staff = access
        if changed or flags:
            user.save(update_fields=[*changed, "is_superuser", "is_staff"])
        if flags:
            message = f"At sign-on, as the identity provider's claim says: {', '.join(flags)}."
            LogEntry.objects.log_actions(user_id=user.pk, queryset=[user], action_flag=CHANGE, change_message=message)
        identity.last_sign_in_at = now
        identity.save(update_fields=["last_sign_in_at"])
    unknown = tuple(sorted(set(roles.tenants) - set(tenants)))
    if unknown or roles.refused:
        # Which tenant or value is the IdP's business; names only, never the whole claim set.
        logger.info(
            "sign-on: claim values ignored",
            extra={"jwtex": {"unknown_tenants": list(unknown)[:20], "malformed": list(roles.refused)[:20]}},
        )
    return SignOnResult(user=user, access=access, roles=roles, unknown_tenants=unknown)
