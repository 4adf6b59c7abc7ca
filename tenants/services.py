"""Memberships: owners add people to their tenant; a tenant never loses its last owner by hand;
single sign-on makes an account's memberships match its identity provider's claim."""

from __future__ import annotations

from collections.abc import Mapping

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction

from .models import Membership, MembershipSource, Role, Tenant


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


def membership_sync(*, user, roles: Mapping[Tenant, str], exclusive: bool) -> list[str]:
    """Make ``user``'s memberships match ``roles`` (its identity provider's claim, at sign-on):
    add the missing, change the roles that differ, remove those the claim no longer names. Those
    granted by hand are left alone unless ``exclusive``. Each change is an admin log entry of the
    user's own, like any change made in the admin; the descriptions of the changes are returned.

    The last-owner rule of the admin does not hold here: the provider decides who is an owner, and
    a person it no longer names must lose the role (a superuser can name another owner)."""
    changes: list[str] = []

    def log(membership: Membership, flag: int, message: str) -> None:
        LogEntry.objects.log_actions(user_id=user.pk, queryset=[membership], action_flag=flag, change_message=message)
        changes.append(f"{membership.tenant.slug}: {message}")

    wanted = {tenant.pk: (tenant, role) for tenant, role in roles.items()}
    with transaction.atomic():
        current = Membership.objects.select_for_update().select_related("tenant").filter(user=user)
        for membership in current:
            managed = exclusive or membership.source == MembershipSource.IDP
            if not managed:
                wanted.pop(membership.tenant_id, None)  # granted by hand: the claim does not change it
                continue
            if membership.tenant_id not in wanted:
                log(membership, DELETION, "Removed at sign-on: the identity provider no longer grants it.")
                membership.delete()
                continue
            _, role = wanted.pop(membership.tenant_id)
            if membership.role != role or membership.source != MembershipSource.IDP:
                before = membership.role
                membership.role, membership.source = role, MembershipSource.IDP
                membership.save(update_fields=["role", "source"])
                log(membership, CHANGE, f"Role {before} → {role} at sign-on, as the identity provider grants it.")
        for tenant, role in wanted.values():
            membership = Membership.objects.create(user=user, tenant=tenant, role=role, source=MembershipSource.IDP)
            log(membership, ADDITION, f"Added as {role} at sign-on, as the identity provider grants it.")
    return changes
