"""Every choice of a tenant scales with tenants (docs/scale.md#the-admin-at-100-million-records):
beyond a few, a search (the list filters, "add a rule: for which tenant?") or a search as you
type (a form's tenant field), never a link or an option per tenant."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tenants.admin_mixins import TENANT_LINKS
from tenants.models import Membership, Tenant

pytestmark = pytest.mark.django_db


@pytest.fixture
def root(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.test", "pw"))
    return client


def _tenants(n: int, prefix: str = "t") -> list[Tenant]:
    return Tenant.objects.bulk_create([Tenant(slug=f"{prefix}{i:03d}", name=f"Tenant {prefix}{i}") for i in range(n)])


def _filter_links(html: str) -> list[str]:
    nav = html[html.index('<nav id="changelist-filter"') :]
    return re.findall(r'href="\?[^"]*tenant__id__exact=(\d+)', nav)


@pytest.mark.parametrize(
    "page",
    [
        "admin:exchange_rule_changelist",
        "admin:exchange_issuer_changelist",
        "admin:exchange_signingkey_changelist",
        "admin:exchange_exchangerecord_changelist",
        "admin:tenants_membership_changelist",
    ],
)
def test_list_filters_search_tenants_beyond_a_few(root, tenant, page):
    _tenants(TENANT_LINKS + 5)
    url = reverse(page)
    html = root.get(url).content.decode()
    assert 'name="tenant_q"' in html and "tenants: type part of a slug or name" in html
    assert _filter_links(html) == []  # nothing listed until asked
    found = root.get(url, {"tenant_q": "t01"}).content.decode()
    assert len(_filter_links(found)) == 5  # t010 … t014
    chosen = root.get(url, {"tenant__id__exact": tenant.pk}).content.decode()
    assert str(tenant.pk) in _filter_links(chosen)


def test_a_few_tenants_are_links_and_the_filter_reads_the_tenants_table(root, tenant, other_tenant):
    html = root.get(reverse("admin:exchange_rule_changelist")).content.decode()
    assert 'name="tenant_q"' not in html
    assert sorted(_filter_links(html)) == sorted([str(tenant.pk), str(other_tenant.pk)])


def test_the_tenant_filter_costs_the_same_at_ten_times_the_tenants(root, tenant):
    url = reverse("admin:exchange_rule_changelist")
    _tenants(20)
    root.get(url)
    with CaptureQueriesContext(connection) as few:
        root.get(url, {"tenant_q": "t00"})
    _tenants(200, prefix="u")
    with CaptureQueriesContext(connection) as many:
        root.get(url, {"tenant_q": "t00"})
    assert len(many) == len(few)
    assert not any("DISTINCT" in q["sql"] and "tenants_tenant" in q["sql"] for q in many.captured_queries)


def test_a_member_of_one_tenant_sees_no_tenant_filter(admin_client_for, tenant, other_tenant):
    html = admin_client_for(tenant, "operator").get(reverse("admin:exchange_rule_changelist")).content.decode()
    assert "By tenant" not in html


def test_choosing_the_tenant_of_a_new_rule_is_a_search_beyond_a_few(root, tenant):
    _tenants(TENANT_LINKS + 5)
    url = reverse("admin:exchange_rule_add")
    html = root.get(url).content.decode()
    assert 'id="tenant-search"' in html and "?tenant=" not in html
    html = root.get(url, {"q": "acme"}).content.decode()
    assert re.findall(r"\?tenant=(\d+)", html) == [str(tenant.pk)]
    assert "No tenant of yours matches" in root.get(url, {"q": "nothing-like-it"}).content.decode()


def test_a_forms_tenant_field_searches_as_you_type_beyond_a_few(root, client, tenant, django_user_model):
    _tenants(TENANT_LINKS + 5)
    html = root.get(reverse("admin:exchange_issuer_add")).content.decode()
    select = re.search(r'<select name="tenant"[^>]*>.*?</select>', html, re.S)[0]
    assert "admin-autocomplete" in select and select.count("<option") <= 1
    found = root.get(
        "/admin/autocomplete/", {"app_label": "exchange", "model_name": "issuer", "field_name": "tenant", "term": "t01"}
    ).json()
    assert len(found["results"]) == 5
    # An owner of several tenants finds only their own.
    owner = django_user_model.objects.create_user("owner", password="pw", is_staff=True)
    for t in [tenant, *Tenant.objects.filter(slug__startswith="t00")[: TENANT_LINKS + 1]]:
        Membership.objects.create(user=owner, tenant=t, role="owner")
    client.force_login(owner)
    found = client.get(
        "/admin/autocomplete/", {"app_label": "exchange", "model_name": "issuer", "field_name": "tenant", "term": "t01"}
    ).json()
    assert found["results"] == []
    found = client.get(
        "/admin/autocomplete/",
        {"app_label": "exchange", "model_name": "issuer", "field_name": "tenant", "term": "t005"},
    ).json()
    assert len(found["results"]) == 1


def test_key_rotation_links_are_one_per_tenant_only_while_few(root, tenant):
    _tenants(TENANT_LINKS + 5)
    url = reverse("admin:exchange_signingkey_changelist")
    assert len(re.findall(r'class="jwtex-rotate"', root.get(url).content.decode())) == 0
    html = root.get(url, {"tenant__id__exact": tenant.pk}).content.decode()
    assert re.findall(r'href="([^"]+)" class="jwtex-rotate"', html) == [
        reverse("admin:exchange_signingkey_rotate", args=[tenant.pk])
    ]
