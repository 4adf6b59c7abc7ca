"""The rule editor's source identity (docs/rules.md#source-identity): saved as CEL, refused with its
line and column, AWS's claim names refused as extra claims — as jwtex_apply refuses them."""

from __future__ import annotations

import pytest
from django.urls import reverse

from exchange.models import Rule
from tests.exchange.admin.test_rule_tag_rows import rule_data

pytestmark = pytest.mark.django_db


def post(client, tenant, issuer, **overrides):
    return client.post(reverse("admin:exchange_rule_add"), rule_data(tenant, issuer, **overrides))


def test_a_rule_with_a_source_identity_saves_and_is_shown(admin_client_for, tenant, issuer):
    client = admin_client_for(tenant, "operator")
    response = post(client, tenant, issuer, when="true", source_identity="aws_source_identity(claims.actor)")
    assert response.status_code == 302, response.context["adminform"].form.errors
    rule = Rule.objects.get(tenant=tenant, name="main branch")
    assert rule.source_identity == "aws_source_identity(claims.actor)"
    assert rule.spec().source_identity == "aws_source_identity(claims.actor)"
    page = client.get(reverse("admin:exchange_rule_change", args=[rule.pk])).content.decode()
    assert 'name="source_identity"' in page and "sts:SetSourceIdentity" in page


@pytest.mark.parametrize(
    "overrides, field, words",
    [
        ({"source_identity": "claims.actor +"}, "source_identity", "line 1, column"),
        ({"source_identity": "aws_source_id(claims.actor)"}, "source_identity", "aws_source_id"),
        (
            {"claims": '{"https://aws.amazon.com/source_identity": "claims.actor"}'},
            "claims",
            "only from source_identity",
        ),
        ({"claims": '{"https://aws.amazon.com/tags": "claims.actor"}'}, "claims", "only from session_tags"),
        ({"claims": '{"https://aws.amazon.com/policy": "claims.actor"}'}, "claims", "AWS's namespace"),
    ],
)
def test_the_admin_refuses_what_apply_refuses(admin_client_for, tenant, issuer, overrides, field, words):
    client = admin_client_for(tenant, "operator")
    response = post(client, tenant, issuer, when="true", **overrides)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert field in errors and words in " ".join(errors[field]), errors
    assert not Rule.objects.filter(tenant=tenant, name="main branch").exists()


def test_the_simulator_shows_a_rule_to_trys_source_identity_and_refuses_a_bad_one(admin_client_for, tenant, issuer):
    from tests.exchange.test_rule_findings import simulate

    client = admin_client_for(tenant, "auditor")
    draft = (
        "name: try\nissuers: [ci]\nwhen: 'true'\neffect: allow\nsource_identity: aws_source_identity(claims.actor)\n"
    )
    response = simulate(client, tenant, issuer, claims='{"sub": "s", "actor": "dependabot[bot]"}', rule=draft)
    result = response.context["result"]
    assert result.allowed and result.decision.source_identity == "dependabot_bot_"
    assert result.emitted["https://aws.amazon.com/source_identity"] == "dependabot_bot_"
    assert 'id="source-identity"><code>dependabot_bot_</code>' in response.content.decode()

    plain = draft.replace("aws_source_identity(claims.actor)", "claims.actor")
    response = simulate(client, tenant, issuer, claims='{"sub": "s", "actor": "dependabot[bot]"}', rule=plain)
    result = response.context["result"]
    assert not result.allowed and "the source identity is not one AWS accepts" in result.error.description

    response = simulate(
        client, tenant, issuer, rule=draft.replace("aws_source_identity(claims.actor)", "'claims.actor +'")
    )
    assert response.context["result"] is None and "source_identity" in str(response.context["form"].errors["rule"])


def test_the_overviews_aws_set_up_allows_set_source_identity_once_a_rule_sets_one(tenant, issuer, allow_rule):
    from django.utils import timezone

    from exchange.services.overview import tenant_overview_get

    before = tenant_overview_get(tenant=tenant, now=timezone.now()).aws
    assert "sts:SetSourceIdentity" not in before.trust_policy and "sts:SetSourceIdentity" not in before.terraform
    allow_rule.source_identity = "aws_source_identity(claims.actor)"
    allow_rule.save()
    after = tenant_overview_get(tenant=tenant, now=timezone.now()).aws
    for text in (after.trust_policy, after.terraform, after.cloudformation):
        assert "sts:SetSourceIdentity" in text and "sts:SourceIdentity" in text
