"""Admin lists filter by what they show and nothing else (tenants.admin_lookups.DeclaredLookupsOnlyMixin):
no lookup oracle on a field a list does not show (the stored ciphertext of signing keys), and
a hostile or malformed query string is a 400 that names the parameter — never a 500, never a
silent redirect. Runs on SQLite and in the PostgreSQL pass (where a NUL byte, an out-of-range
number or a bytea comparison used to reach the database)."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from django.contrib import admin
from django.urls import reverse
from django.utils import timezone

from exchange.models import ExchangeRecord, SigningKey
from tenants.admin_lookups import DeclaredLookupsOnlyMixin

pytestmark = pytest.mark.django_db

PROJECT_APPS = ("exchange", "tenants", "auth")


def project_admins() -> list:
    return [
        (model, model_admin)
        for model, model_admin in admin.site._registry.items()
        if model._meta.app_label in PROJECT_APPS
    ]


def changelist(model) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


@pytest.fixture
def rows(tenant, issuer, allow_rule, signing_key):
    ExchangeRecord.objects.create(
        tenant=tenant,
        created_at=timezone.now(),
        endpoint="raw",
        decision="denied",
        status_code=403,
        error_code="access_denied",
        reason="no rule",
        issuer_ref=issuer.issuer_id,
        rule_name=allow_rule.name,
        upstream_sub="repo:octo-org/app",
    )
    return tenant


def test_every_admin_list_of_the_project_accepts_only_its_declared_lookups():
    assert project_admins()
    for model, model_admin in project_admins():
        assert isinstance(model_admin, DeclaredLookupsOnlyMixin), model


def test_an_auditor_cannot_filter_signing_keys_by_their_ciphertext(admin_client_for, rows):
    client = admin_client_for(rows, "auditor")
    stored = bytes(
        SigningKey.objects.filter(tenant=rows)
        .exclude(private_key_encrypted=b"")
        .values_list("private_key_encrypted", flat=True)
        .first()
    )
    url = changelist(SigningKey)
    for query in (
        {"private_key_encrypted__startswith": stored[:4].decode()},
        {"private_key_encrypted__gt": "x"},
        {"private_key_encrypted": stored.decode()},
        {"tenant__signing_keys__private_key_encrypted__gt": "x"},
    ):
        response = client.get(url, query)
        assert response.status_code == 400, (query, response.status_code)
        assert "cannot be filtered by" in response.content.decode()
        assert "kid_short" not in response.content.decode() and stored[:12].decode() not in response.content.decode()
    assert client.get(url).status_code == 200


def test_the_declared_filters_and_the_overviews_links_still_work(admin_client_for, rows):
    client = admin_client_for(rows, "auditor")
    audit = client.get(
        changelist(ExchangeRecord),
        {
            "tenant__id__exact": rows.pk,
            "decision__exact": "denied",
            "error_code__exact": "access_denied",
            "rule_name": "octo-org main",
            "created_at__gte": "2020-01-01T00:00:00+00:00",
            "q": "repo:octo-org/*",
        },
    )
    assert audit.status_code == 200 and audit.context["cl"].result_count == 1
    assert client.get(changelist(ExchangeRecord), {"created_at__year": "2020"}).status_code == 400  # no drill-down
    assert client.get(changelist(ExchangeRecord), {"upstream_sub": "repo:octo-org/app"}).context["cl"].result_count == 1
    assert client.get(changelist(ExchangeRecord), {"upstream_sub__startswith": "repo"}).status_code == 400
    keys = client.get(changelist(SigningKey), {"state__exact": "active", "tenant__id__exact": rows.pk})
    assert keys.status_code == 200 and keys.context["cl"].result_count == 1


def hostile_queries(model, model_admin, request) -> list[dict]:
    """Lookups the list does not declare (on every field, shown or not), and every declared
    parameter with values no filter can read."""
    declared = model_admin.declared_lookups(request)
    queries = [
        {name: "("}
        for field in model._meta.get_fields()
        for name in (field.name, f"{field.name}__gt")
        if name not in declared
    ]
    values = [
        "x",
        "\x00",
        "99999999999999999999",
        "9999-12-31T23:59:59-14:00",
        "0001-01-01T00:00:00+14:00",
        "' OR 1=1 --",
    ]
    queries += [{name: value} for name in sorted(declared) for value in values]
    hierarchy = model_admin.date_hierarchy
    if hierarchy:
        queries += [
            {f"{hierarchy}__year": "9999", f"{hierarchy}__month": "12", f"{hierarchy}__day": "31"},
            {f"{hierarchy}__year": "abc"},
            {f"{hierarchy}__year": "0"},
            {f"{hierarchy}__year": "2024", f"{hierarchy}__month": "13"},
        ]
    queries += [
        {"q": "\x00"},
        {"q": "%_\\"},
        {"q": "x" * 5000},
        {"o": "99.-1.x"},
        {"p": "abc"},
        {"p": "99999"},
        {"_facets": "1", "e": "1"},
        {"e": "1", "x": "1"},
        {"_to_field": "private_key_encrypted"},
    ]
    return queries


@pytest.mark.parametrize("model", [model for model, _ in project_admins()], ids=lambda model: model.__name__)
def test_every_admin_list_answers_hostile_query_strings_with_200_or_400_never_500(admin_client_for, rows, model):
    from django.test import RequestFactory

    superuser = admin_client_for(role="superuser")
    auditor = admin_client_for(rows, "auditor")
    request = RequestFactory().get("/")
    request.user = superuser.user
    clients = (superuser, auditor) if model in (SigningKey, ExchangeRecord) else (superuser,)
    queries = hostile_queries(model, admin.site._registry[model], request)
    for query in queries:
        for client in clients:
            response = client.get(f"{changelist(model)}?{urlencode(query)}")
            assert response.status_code in (200, 400), (query, response.status_code)
    assert len(queries) > 20


def test_a_malformed_value_is_a_400_that_names_the_problem_not_the_e1_redirect(admin_client_for, rows):
    client = admin_client_for(rows, "auditor")
    for query in (
        {"created_at__gte": "yesterday"},
        {"tenant__id__exact": "abc"},
        {"before": "yesterday"},
        {"after": "2025-01-01T00:00:00Z,x"},
    ):
        response = client.get(changelist(ExchangeRecord), query)
        assert response.status_code == 400, (query, response.status_code)
        assert "a filter&#x27;s value cannot be read" in response.content.decode()
    nul = client.get(changelist(ExchangeRecord), {"q": "a\x00"})
    assert nul.status_code == 400 and "NUL character" in nul.content.decode()


def test_the_rule_form_reads_its_tenant_from_the_address_without_a_500(admin_client_for, rows):
    client = admin_client_for(rows, "operator")
    for query in ("?tenant=%C2%B2", "?_changelist_filters=tenant__id__exact%3D%C2%B2", "?tenant=99999999999999999999"):
        assert client.get(reverse("admin:exchange_rule_add") + query).status_code == 200, query
