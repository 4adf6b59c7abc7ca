"""Memberships: owners add people to their tenant; a tenant never loses its last owner."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction

from .models import Membership, Role, Tenant


def user_get_by_username(*, username: str):
    """The active account with exactly this username, or ``ValidationError``. Owners type a
    username rather than pick from a list, so no tenant sees the accounts of another."""
    user = get_user_model().objects.filter(username=username.strip(), is_active=True).first()
    if user is None:
        raise ValidationError(
            "No active account has this username. An administrator creates accounts; you add them to your tenant."
        )
    return user


def membership_role_change_errors(*, membership: Membership, new_role: str | None) -> str | None:
    """Why this change (``new_role=None``: removal) would leave the tenant without an owner."""
    if membership.pk is None or membership.role != Role.OWNER or new_role == Role.OWNER:
        return None
    others = Membership.objects.filter(tenant_id=membership.tenant_id, role=Role.OWNER).exclude(pk=membership.pk)
    if not others.exists():
        return "A tenant keeps at least one owner: make someone else owner first."
    return None


def membership_add(*, tenant: Tenant, user, role: str) -> Membership:
    """Add ``user`` to ``tenant``. The account gets staff status so it can sign in to the admin;
    what it sees there is only what its memberships allow."""
    with transaction.atomic():
        if Membership.objects.filter(tenant=tenant, user=user).exists():
            raise ValidationError(f"{user} is already a member of {tenant}.")
        membership = Membership.objects.create(tenant=tenant, user=user, role=role)
        if not user.is_staff:
            type(user).objects.filter(pk=user.pk).update(is_staff=True)
    return membership
