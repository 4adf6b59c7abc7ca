"""Memberships say who granted them; the identity provider's are not edited by hand."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.urls import reverse

from tenants.models import Membership, MembershipSource


def test_the_membership_pages_say_who_granted_it_and_keep_the_providers_role_read_only(tenant, admin_client_for):
    owner = admin_client_for(tenant, role="owner")
    signed_on = get_user_model().objects.create_user(username="sso-person", is_staff=True)
    by_idp = Membership.objects.create(user=signed_on, tenant=tenant, role="auditor", source=MembershipSource.IDP)
    by_hand = Membership.objects.get(user=owner.user)
    listing = owner.get(reverse("admin:tenants_membership_changelist")).content.decode()
    assert "identity provider" in listing and "by hand" in listing

    page = owner.get(reverse("admin:tenants_membership_change", args=[by_idp.pk])).content.decode()
    assert 'name="role"' not in page and "identity provider" in page
    owner.post(reverse("admin:tenants_membership_change", args=[by_idp.pk]), {"role": "owner"})
    by_idp.refresh_from_db()
    assert by_idp.role == "auditor"
    assert 'name="role"' in owner.get(reverse("admin:tenants_membership_change", args=[by_hand.pk])).content.decode()
