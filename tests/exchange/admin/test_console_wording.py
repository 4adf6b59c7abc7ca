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
    response = client.post(
        reverse("admin:exchange_issuer_add"),
        {
            "tenant": tenant.pk,
            "issuer_id": issuer.issuer_id,
            "issuer": "https://other.example",
            "audiences": "a",
            "algorithms": ["RS256"],
            "enabled": "on",
            "leeway": 60,
            "max_token_age": 3600,
            "jwks_refresh_interval": 3600,
        },
    )
    errors = response.context["adminform"].form.errors
    assert errors["issuer_id"] == [f"This tenant already has an issuer with the id “{issuer.issuer_id}”."]


def test_the_github_preset_proposes_a_free_issuer_id(admin_client_for, tenant):
    client = admin_client_for(tenant, "operator")
    Issuer.objects.create(
        tenant=tenant,
        issuer_id="github",
        issuer="https://token.actions.githubusercontent.com",
        audiences=["x"],
        static_jwks={"keys": []},
    )
    Issuer.objects.create(
        tenant=tenant, issuer_id="github-2", issuer="https://ci.example", audiences=["x"], static_jwks={"keys": []}
    )
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


def test_issuer_labels_are_words_not_field_names(admin_client_for, tenant, issuer):
    page = admin_client_for(tenant, "operator").get(reverse("admin:exchange_issuer_change", args=[issuer.pk]))
    html = page.content.decode()
    assert "Jwks" not in html and "jwks resolved" not in html.lower()
    for label in ("Keys fetched from", "Keys last fetched", "Failed fetches in a row", "JWKS URI"):
        assert f"{label}:</label>" in html or f">{label}:</label>" in html or f"{label}</label>" in html, label


def test_an_auditor_reads_list_fields_one_per_line_as_the_form_edits_them(admin_client_for, tenant, issuer, allow_rule):
    allow_rule.audience, allow_rule.audiences = "main-aud", ["extra-aud", "other-aud"]
    allow_rule.save()
    auditor = admin_client_for(tenant, "auditor")
    issuer_page = auditor.get(reverse("admin:exchange_issuer_change", args=[issuer.pk])).content.decode()
    rule_page = auditor.get(reverse("admin:exchange_rule_change", args=[allow_rule.pk])).content.decode()
    assert 'class="readonly">[&quot;' not in issuer_page and 'class="readonly">[&quot;' not in rule_page
    assert '<div class="readonly">extra-aud<br>other-aud</div>' in rule_page
    assert f'<div class="readonly">{issuer.audiences[0]}</div>' in issuer_page
    assert "Audiences:</label>" in rule_page and "Audience:</label>" in rule_page


def test_the_overview_says_when_keys_were_never_fetched(admin_client_for, tenant, upstream):
    Issuer.objects.create(
        tenant=tenant, issuer_id="gh", issuer="https://token.actions.githubusercontent.com", audiences=["x"]
    )
    html = (
        admin_client_for(tenant, "auditor")
        .get(reverse("admin:tenants_tenant_overview", args=[tenant.pk]))
        .content.decode()
    )
    cell = html[html.index('class="jwtex-key-age"') :][:200]
    assert "not fetched yet" in cell and "never" not in cell and "not recorded" not in cell


def test_preset_help_shows_code_not_markdown_backticks(admin_client_for, tenant):
    html = admin_client_for(tenant, "operator").get(reverse("admin:exchange_issuer_preset")).content.decode()
    assert "<code>permissions: id-token: write</code>" in html
    assert "`" not in html[html.index("preset-github") :]


def test_candidate_messages_count_rules_in_words(admin_client_for, tenant, issuer, allow_rule):
    client = admin_client_for(tenant, "operator")
    response = client.post(reverse("admin:exchange_rule_candidate_action", args=[tenant.pk, "start"]), follow=True)
    text = " ".join(str(m) for m in response.context["messages"])
    assert "1 rule copied" in text and "rule(s)" not in text
