"""The tenant's optional AWS set-up values in the admin (docs/operators.md#aws-and-ci-set-up-snippets): an
owner fills them in, the overview's snippets use them (no 123456789012 left), invalid ones are refused
with a clear message and change nothing."""

from __future__ import annotations

import html as html_lib
import json
from urllib.parse import quote

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from exchange.models import Issuer
from tenants.models import Tenant

pytestmark = pytest.mark.django_db

EXAMPLE_ACCOUNT = "123456789012"
ISSUER_URL = "http://127.0.0.1:8000/t/acme"


def tenant_form(tenant: Tenant, **changes) -> dict:
    """What the tenant's change page posts, with ``changes``."""
    data = {
        "name": tenant.name,
        "enabled": "on",
        "default_audience": tenant.default_audience,
        "max_token_lifetime": tenant.max_token_lifetime,
        "signing_algorithm": tenant.signing_algorithm,
        "rate_limit_per_minute": tenant.rate_limit_per_minute,
        "key_rotation_interval": tenant.key_rotation_interval,
        "key_prepublish_window": tenant.key_prepublish_window,
        "audit_retention_days": tenant.audit_retention_days,
        "aws_account_ids": "",
        "aws_region": "",
        "aws_role_name": "",
    }
    data.update(changes)
    return data


def overview_html(client, tenant) -> str:
    response = client.get(reverse("admin:tenants_tenant_overview", args=[tenant.pk]))
    assert response.status_code == 200
    return html_lib.unescape(response.content.decode())


def test_the_tenant_form_has_an_optional_aws_fieldset_that_says_what_it_changes(admin_client_for, tenant):
    page = admin_client_for(tenant, "owner").get(reverse("admin:tenants_tenant_change", args=[tenant.pk]))
    text = html_lib.unescape(page.content.decode())
    assert "AWS set-up (optional)" in text
    for name in ("aws_account_ids", "aws_region", "aws_role_name"):
        assert f'name="{name}"' in text
    assert "change nothing the exchange does" in text
    assert text.count("changes nothing the exchange does") == 3  # each field's help says so too


def test_an_owner_sets_the_values_and_the_overview_uses_them(admin_client_for, tenant, issuer, allow_rule):
    client = admin_client_for(tenant, "owner")
    response = client.post(
        reverse("admin:tenants_tenant_change", args=[tenant.pk]),
        tenant_form(
            tenant,
            aws_account_ids="111122223333\n 044455556666 \n\n",
            aws_region="us-gov-west-1",
            aws_role_name="ci-deploy@acme",
        ),
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    tenant.refresh_from_db()
    assert tenant.aws_account_ids == ["111122223333", "044455556666"]
    assert (tenant.aws_region, tenant.aws_role_name) == ("us-gov-west-1", "ci-deploy@acme")

    html = overview_html(client, tenant)
    assert EXAMPLE_ACCOUNT not in html and "Examples stand in" not in html
    overview = client.get(reverse("admin:tenants_tenant_overview", args=[tenant.pk])).context["overview"]
    aws = overview.aws
    assert "111122223333" in aws.cloudformation and "--region us-gov-west-1" in aws.cloudformation
    assert '"ci-deploy@acme"' in aws.cloudformation
    assert 'allowed_account_ids = ["111122223333", "044455556666"]' in aws.terraform
    assert 'region              = "us-gov-west-1"' in aws.terraform and '"ci-deploy@acme"' in aws.terraform
    for account in ("111122223333", "044455556666"):
        policy = json.loads(dict(aws.trust_policies)[account])
        assert policy["Statement"][0]["Principal"]["Federated"] == (
            f"arn:aws-us-gov:iam::{account}:oidc-provider/127.0.0.1:8000/t/acme"
        )
        assert f"arn:aws-us-gov:iam::{account}:role/ci-deploy@acme" in html
    assert "AWS_ROLE_ARN: arn:aws-us-gov:iam::111122223333:role/ci-deploy@acme" in overview.ci.github_actions
    assert "AWS_DEFAULT_REGION: us-gov-west-1" in overview.ci.gitlab_ci
    # Both trust policies and the permission policy are on the page, ready to copy.
    assert 'id="aws-trust"' in html and 'id="aws-trust-2"' in html and 'id="aws-permissions"' in html


def test_without_values_the_overview_shows_the_examples_and_says_so(admin_client_for, tenant, issuer, allow_rule):
    html = overview_html(admin_client_for(tenant, "auditor"), tenant)
    assert f"arn:aws:iam::{EXAMPLE_ACCOUNT}:oidc-provider/127.0.0.1:8000/t/acme" in html
    assert f"arn:aws:iam::{EXAMPLE_ACCOUNT}:role/jwtex-acme-example" in html
    assert "Examples stand in for what this tenant's settings leave empty" in html
    assert 'id="aws-trust-2"' not in html


def test_the_overview_shows_the_permission_policy_for_the_emitted_tags(admin_client_for, tenant, issuer, allow_rule):
    client = admin_client_for(tenant, "auditor")
    overview = client.get(reverse("admin:tenants_tenant_overview", args=[tenant.pk])).context["overview"]
    statement = json.loads(overview.aws.permission_policy)["Statement"][0]
    assert set(statement["Condition"]["StringLike"]) == {f"aws:PrincipalTag/{key}" for key in overview.tag_keys}
    assert overview.tag_keys == ["repository", "ref", "actor"]
    html = overview_html(client, tenant)
    assert "${aws:PrincipalTag/repository}" in html and '"aws:PrincipalTag/actor"' in html


def test_the_overviews_ci_jobs_ask_for_the_tenants_issuer_url(admin_client_for, tenant):
    Issuer.objects.create(
        tenant=tenant, issuer_id="gh", issuer="https://token.actions.githubusercontent.com", audiences=[ISSUER_URL]
    )
    Issuer.objects.create(tenant=tenant, issuer_id="gl", issuer="https://gitlab.com", audiences=["https://gitlab.com"])
    client = admin_client_for(tenant, "auditor")
    ci = client.get(reverse("admin:tenants_tenant_overview", args=[tenant.pk])).context["overview"].ci
    assert f"&audience={quote(ISSUER_URL, safe='')}" in ci.github_actions
    assert f'aud: "{ISSUER_URL}"' in ci.gitlab_ci
    assert "does not accept this audience" not in ci.github_actions  # gh lists the tenant's URL
    assert f"Issuer gl does not accept this audience yet: add {ISSUER_URL}" in ci.gitlab_ci


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("aws_account_ids", "12345678901", "“12345678901” is not an AWS account id: exactly 12 digits"),
        ("aws_account_ids", "1111-2222-3333", "without dashes or spaces"),
        ("aws_account_ids", "111122223333\n12345678901x", "“12345678901x” is not an AWS account id"),
        ("aws_account_ids", "111122223333\n111122223333", "Each AWS account id once"),
        ("aws_region", "Europe", "An AWS region such as eu-west-1, us-gov-west-1 or cn-north-1."),
        ("aws_region", "eu-west", "An AWS region such as eu-west-1"),
        ("aws_role_name", "deploy role", "An IAM role name: 1 to 64 letters, digits and _ + = , . @ -"),
        ("aws_role_name", "path/deploy", "An IAM role name"),
        ("aws_role_name", "rôle", "An IAM role name"),
        ("aws_role_name", "r" * 65, "at most 64 characters"),
    ],
)
def test_invalid_values_are_refused_with_a_clear_message_and_change_nothing(
    admin_client_for, tenant, field, value, message
):
    tenant.aws_account_ids, tenant.aws_region, tenant.aws_role_name = ["111122223333"], "eu-west-1", "deploy"
    tenant.save()
    before = Tenant.objects.filter(pk=tenant.pk).values().get()
    client = admin_client_for(tenant, "owner")
    data = tenant_form(
        tenant, name="Renamed", aws_account_ids="111122223333", aws_region="eu-west-1", aws_role_name="deploy"
    )
    data[field] = value
    response = client.post(reverse("admin:tenants_tenant_change", args=[tenant.pk]), data)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == [field], errors
    assert any(message in error for error in errors[field]), errors[field]
    assert message in html_lib.unescape(response.content.decode())
    assert Tenant.objects.filter(pk=tenant.pk).values().get() == before  # not even the name changed


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"aws_account_ids": [111122223333]}, "aws_account_ids"),  # a number loses leading zeros
        ({"aws_account_ids": "111122223333"}, "aws_account_ids"),
        ({"aws_account_ids": ["111122223333", "abc"]}, "aws_account_ids"),
        ({"aws_region": "EU-WEST-1"}, "aws_region"),
        ({"aws_region": "eu-west-1\n"}, "aws_region"),  # the form would strip it; a config file might not
        ({"aws_role_name": "a:b"}, "aws_role_name"),
    ],
)
def test_the_model_refuses_invalid_values_as_the_form_does(tenant, values, field):
    """``full_clean`` is what ``jwtex_apply`` runs: the same rule as the admin's."""
    for name, value in values.items():
        setattr(tenant, name, value)
    with pytest.raises(ValidationError) as refused:
        tenant.full_clean()
    assert list(refused.value.message_dict) == [field]


@pytest.mark.parametrize(
    "values",
    [
        {"aws_account_ids": ["012345678901", "111122223333"], "aws_region": "cn-northwest-1", "aws_role_name": "a"},
        {"aws_region": "ap-southeast-4", "aws_role_name": "Deploy_role+=,.@-" + "x" * 47},
        {"aws_region": "us-isob-east-1"},
        {},
    ],
)
def test_the_model_accepts_valid_and_empty_values(tenant, values):
    for name, value in values.items():
        setattr(tenant, name, value)
    tenant.full_clean()
