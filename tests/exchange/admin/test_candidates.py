"""The candidate (shadow) rule set in the admin: scoped, read by auditors, changed by operators."""

from __future__ import annotations

import pytest
from django.urls import reverse

from exchange.models import Rule
from tests.exchange.admin.test_pages import rule_data

pytestmark = pytest.mark.django_db


def url(tenant, action=None):
    if action:
        return reverse("admin:exchange_rule_candidate_action", args=[tenant.pk, action])
    return reverse("admin:exchange_rule_candidate", args=[tenant.pk])


def test_an_operator_starts_edits_and_promotes_a_candidate(admin_client_for, tenant, issuer, allow_rule):
    client = admin_client_for(tenant, "operator")
    assert "no candidate rules" in client.get(url(tenant)).content.decode()
    assert client.post(url(tenant, "start")).status_code == 302
    assert list(Rule.objects.filter(tenant=tenant, shadow=True).values_list("name", flat=True)) == [allow_rule.name]
    # a new candidate rule through the ordinary editor, with the same name as a live one
    added = client.post(
        reverse("admin:exchange_rule_add") + f"?tenant={tenant.pk}&shadow=1",
        rule_data(tenant, issuer, name="octo-org main", effect="deny", when="true"),
    )
    assert added.status_code == 200  # the candidate set already has that name
    added = client.post(
        reverse("admin:exchange_rule_add") + f"?tenant={tenant.pk}&shadow=1",
        rule_data(tenant, issuer, name="deny the rest", effect="deny", when="true"),
    )
    assert added.status_code == 302
    new = Rule.objects.get(tenant=tenant, name="deny the rest")
    assert new.shadow and new.position > Rule.objects.get(tenant=tenant, shadow=True, name="octo-org main").position
    page = client.get(url(tenant)).content.decode()
    assert "deny the rest" in page and 'id="shadow-report"' in page
    assert client.post(url(tenant, "promote")).status_code == 302
    assert sorted(Rule.objects.filter(tenant=tenant).values_list("name", "shadow")) == [
        ("deny the rest", False),
        ("octo-org main", False),
    ]


def test_auditors_read_and_cannot_change(admin_client_for, tenant, issuer, allow_rule):
    client = admin_client_for(tenant, "auditor")
    assert client.get(url(tenant)).status_code == 200
    assert client.post(url(tenant, "start")).status_code == 403
    assert not Rule.objects.filter(shadow=True).exists()


def test_another_tenants_candidate_is_404(admin_client_for, tenant, other_tenant):
    client = admin_client_for(tenant, "operator")
    assert client.get(url(other_tenant)).status_code == 404
    assert client.post(url(other_tenant, "start")).status_code == 404


def test_only_post_changes_and_unknown_actions_are_refused(admin_client_for, tenant):
    client = admin_client_for(tenant, "operator")
    assert client.get(url(tenant, "start")).status_code == 405
    assert client.post(url(tenant, "explode")).status_code == 405
