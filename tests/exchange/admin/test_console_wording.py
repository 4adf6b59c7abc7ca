"""What the console says is true and reads as sentences: one clear message for a duplicate rule
name, a free issuer id from a preset, "an issuer", labels without internals."""

from __future__ import annotations

from django.urls import reverse

from exchange.models import Issuer, Rule
from tests.exchange.admin.test_pages import rule_data


def test_a_duplicate_rule_name_gets_one_clear_message(admin_client_for, tenant, issuer, allow_rule):
    client = admin_client_for(tenant, "operator")
    response = client.post(reverse("admin:exchange_rule_add"), rule_data(tenant, issuer, name=allow_rule.name))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors == {"name": [f"This tenant already has a rule named “{allow_rule.name}”."]}
    assert "A rule needs a name." not in response.content.decode()
    assert Rule.objects.filter(name=allow_rule.name).count() == 1


def test_a_duplicate_issuer_id_says_an_issuer(admin_client_for, tenant, issuer):
    client = admin_client_for(tenant, "operator")
    response = client.post(reverse("admin:exchange_issuer_add"), {
        "tenant": tenant.pk, "issuer_id": issuer.issuer_id, "issuer": "https://other.example", "audiences": "a",
        "algorithms": ["RS256"], "enabled": "on", "leeway": 60, "max_token_age": 3600, "jwks_refresh_interval": 3600,
    })
    errors = response.context["adminform"].form.errors
    assert errors["issuer_id"] == [f"This tenant already has an issuer with the id “{issuer.issuer_id}”."]


def test_the_github_preset_proposes_a_free_issuer_id(admin_client_for, tenant):
    client = admin_client_for(tenant, "operator")
    Issuer.objects.create(tenant=tenant, issuer_id="github", issuer="https://token.actions.githubusercontent.com",
                          audiences=["x"], static_jwks={"keys": []})
    Issuer.objects.create(tenant=tenant, issuer_id="github-2", issuer="https://ci.example", audiences=["x"],
                          static_jwks={"keys": []})
    response = client.post(reverse("admin:exchange_issuer_preset"), {"tenant": tenant.pk, "preset": "github"})
    assert response.status_code == 302
    form = client.get(response["Location"])
    assert form.context["adminform"].form.initial["issuer_id"] == "github-3"


def test_a_403_in_the_admin_is_its_styled_page_and_one_log_line(admin_client_for, tenant):
    import logging

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Keep(level=logging.DEBUG)
    logger = logging.getLogger("django.request")
    logger.addHandler(handler)
    try:
        response = admin_client_for(tenant, "auditor").get(reverse("admin:exchange_issuer_preset"))
    finally:
        logger.removeHandler(handler)
    assert response.status_code == 403
    page = response.content.decode()
    assert 'id="jwtex-forbidden"' in page and "Your role does not allow this" in page
    assert "jwtex administration" in page and 'id="header"' in page  # the admin's own page
    assert [r.getMessage() for r in records] == ["Forbidden: /admin/exchange/issuer/preset/"]
    assert records[0].exc_info is None
