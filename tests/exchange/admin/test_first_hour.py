"""The first hour of a new operator (docs/operators.md#the-admin-today): each small thing a newcomer noticed."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from exchange.models import ExchangeRecord, Rule, SigningKey
from tenants.models import Tenant
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.django_db


def test_the_audit_log_filter_by_rule_lists_deny_rules_too(
    admin_client_for, client, tenant, issuer, allow_rule, upstream
):
    deny = Rule.objects.create(tenant=tenant, position=20, name="deny features", when="true", effect="deny")
    deny.issuers.add(issuer)
    assert (
        client.post(
            "/t/acme/exchange", upstream.mint(ref="refs/heads/feature"), content_type="application/jwt"
        ).status_code
        == 403
    )
    record = ExchangeRecord.objects.get()
    assert record.rule_name == "deny features"
    html = admin_client_for(tenant, "auditor").get(reverse("admin:exchange_exchangerecord_changelist")).content.decode()
    assert "?rule_name=deny+features" in html


def test_no_view_site_link_and_the_front_page_leads_to_the_admin(admin_client_for, client, tenant):
    html = admin_client_for(tenant, "operator").get(reverse("admin:index")).content.decode()
    assert "View site" not in html
    response = client.get("/")
    assert response.status_code == 302 and response["Location"] == reverse("admin:index")


def test_audit_titles_and_dates_read_the_same_everywhere(
    admin_client_for, client, tenant, issuer, allow_rule, upstream
):
    client.post("/t/acme/exchange", upstream.mint(ref="refs/heads/feature"), content_type="application/jwt")
    record = ExchangeRecord.objects.get()
    html = (
        admin_client_for(tenant, "auditor")
        .get(reverse("admin:exchange_exchangerecord_change", args=[record.pk]))
        .content.decode()
    )
    title = re.search(r"<title>(.*?)</title>", html, re.S)[1]
    assert f"Denied exchange at {record.created_at:%Y-%m-%d %H:%M:%S} UTC" in title
    assert f" {tenant.pk} denied" not in html
    # ISO 8601 with the zone, never "Dec. 1, 2026, 7:22 p.m.".
    assert f"{record.created_at:%Y-%m-%d %H:%M:%S} UTC" in html
    assert not re.search(r"\b(a\.m\.|p\.m\.)", html)


def test_durations_say_what_they_mean(admin_client_for, tenant, issuer):
    client = admin_client_for(tenant, "owner")
    html = client.get(reverse("admin:tenants_tenant_change", args=[tenant.pk])).content.decode()
    assert "= 30 days" in html  # key rotation interval, 2592000 s
    assert "= 1 day" in html and "= 1 hour" in html  # pre-publish window, max token lifetime
    html = client.get(reverse("admin:exchange_issuer_change", args=[issuer.pk])).content.decode()
    assert "= 1 minute" in html and "= 1 day" in html  # leeway, max token age


def test_a_new_tenant_is_born_with_its_key_and_leads_to_adding_an_issuer(admin_client_for):
    client = admin_client_for(role="superuser")
    response = client.post(
        reverse("admin:tenants_tenant_add"),
        {
            "slug": "initech",
            "name": "Initech",
            "enabled": "on",
            "default_audience": "sts.amazonaws.com",
            "max_token_lifetime": 3600,
            "signing_algorithm": "ES256",
            "rate_limit_per_minute": 6000,
            "key_rotation_interval": 2592000,
            "key_prepublish_window": 86400,
            "audit_retention_days": 90,
        },
    )
    tenant = Tenant.objects.get(slug="initech")
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:exchange_issuer_preset") + f"?tenant={tenant.pk}"
    assert SigningKey.objects.filter(tenant=tenant, state="active").count() == 1
    page = client.get(response["Location"])
    assert "Next: add an issuer" in page.content.decode()
    assert page.context["form"]["tenant"].value() == str(tenant.pk)


def test_terraform_hints_are_tag_specific_and_said_once(tenant):
    from exchange.console.aws_setup import aws_setup_render

    tf = aws_setup_render(
        tenant_slug="acme",
        issuer_url="https://j.example/t/acme",
        audiences=["a"],
        tag_keys=["repository", "ref", "actor", "custom"],
    ).terraform
    assert tf.count("narrow each value") == 1
    assert '"aws:RequestTag/repository" = "*" # e.g. "octo-org/*"' in tf and '# e.g. "refs/heads/main"' in tf
    assert tf.count("octo-org/*") == 1
    custom = tf[tf.index('"aws:RequestTag/custom"') :]
    assert custom.splitlines()[0].strip() == '"aws:RequestTag/custom" = "*"'


def test_demo_upstream_explains_its_options_and_adds_claims(capsys):
    import jwt
    from django.core.management import call_command

    from exchange.management.commands.jwtex_demo_upstream import Command

    parser = Command().create_parser("manage.py", "jwtex_demo_upstream")
    helps = {action.dest: action.help for action in parser._actions}
    for option in ("what", "tenant", "repository", "ref", "actor", "audience", "claim"):
        assert helps[option], option
    call_command("jwtex_demo_upstream", "token", "--claim", "environment=production", "--claim", "run_attempt=2")
    claims = jwt.decode(capsys.readouterr().out, options={"verify_signature": False})
    assert claims["environment"] == "production" and claims["run_attempt"] == 2


def test_the_readmes_github_workflow_is_a_complete_file():

    import yaml

    from tests.exchange.admin.test_pages import assert_valid_github_workflow

    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("## CI set-up") :]
    # The Action's workflow leads; the curl recipe comes after it, "without the client".
    for start in (section.index("```yaml"), section.index("### Without the client")):
        block = section[section.index("```yaml", start) + len("```yaml") :]
        assert_valid_github_workflow(yaml.safe_load(block[: block.index("```")]))
