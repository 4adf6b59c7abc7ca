"""The AWS and CI set-up snippets (docs/operators.md#aws-and-ci-set-up-snippets): the tenant's own account
ids, region and role name when set, examples (with a warning) when not; the trust policy conditions on the
audience and every emitted tag; the permission policy tests aws:PrincipalTag/…; CI jobs ask their platform
for the tenant's issuer URL as audience."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
import yaml

from exchange.console.aws_setup import EXAMPLE_ACCOUNT, EXAMPLE_REGION, aws_setup_render
from exchange.console.ci_setup import ci_snippets_render

ISSUER = "https://jwtex.example.com/t/acme"
PROVIDER = "jwtex.example.com/t/acme"
TAGS = ["repository", "ref", "actor", "custom_tag"]
ACCOUNTS = ["111122223333", "044455556666"]  # a leading zero is part of an account id


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags (!GetAtt …)."""


CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: {suffix: loader.construct_scalar(node)})


def render(**values):
    return aws_setup_render(
        tenant_slug="acme", issuer_url=ISSUER, audiences=["sts.amazonaws.com", "vault.example"], tag_keys=TAGS, **values
    )


def ci(aws, *, github_audiences=(ISSUER,), gitlab_audiences=(ISSUER,)):
    return ci_snippets_render(
        issuer_url=ISSUER,
        role_arns=aws.role_arns,
        region=aws.region,
        github_issuer_id="github",
        github_audiences=list(github_audiences),
        gitlab_issuer_id="gitlab",
        gitlab_audiences=list(gitlab_audiences),
    )


@pytest.fixture
def real():
    return render(account_ids=ACCOUNTS, region="eu-central-2", role_name="deploy-prod")


def every_snippet(aws, snippets) -> list[str]:
    return [
        aws.cloudformation,
        aws.terraform,
        aws.permission_policy,
        *(p for _, p in aws.trust_policies),
        snippets.github_actions,
        snippets.gitlab_ci,
    ]


def test_with_values_set_no_example_is_left(real):
    snippets = ci(real)
    for text in every_snippet(real, snippets):
        assert EXAMPLE_ACCOUNT not in text and EXAMPLE_REGION not in text and "jwtex-acme-example" not in text
    assert real.warnings == ()  # the https issuer, and nothing left to examples


def test_with_values_set_cloudformation_names_account_region_and_role(real):
    cfn = real.cloudformation
    template = yaml.load(cfn, Loader=CfnLoader)
    assert template["Resources"]["JwtexExampleRole"]["Properties"]["RoleName"] == "deploy-prod"
    header = cfn[: cfn.index("AWSTemplateFormatVersion")]
    assert "111122223333" in header and "044455556666" in header
    assert "--region eu-central-2" in header and "CAPABILITY_NAMED_IAM" in header


def test_with_values_set_terraform_names_account_region_and_role(real):
    tf = real.terraform
    assert 'region              = "eu-central-2"' in tf
    assert 'allowed_account_ids = ["111122223333", "044455556666"]' in tf
    assert "# allowed_account_ids" not in tf  # set, not merely shown
    assert 'name               = "deploy-prod"' in tf
    assert tf.count("{") == tf.count("}")


def test_with_values_set_one_trust_policy_per_account(real):
    assert [account for account, _ in real.trust_policies] == ACCOUNTS
    for account, text in real.trust_policies:
        principal = json.loads(text)["Statement"][0]["Principal"]["Federated"]
        assert principal == f"arn:aws:iam::{account}:oidc-provider/{PROVIDER}"
    assert real.trust_policy == real.trust_policies[0][1]
    assert real.provider_arn == f"arn:aws:iam::111122223333:oidc-provider/{PROVIDER}"
    assert real.role_arns == (
        "arn:aws:iam::111122223333:role/deploy-prod",
        "arn:aws:iam::044455556666:role/deploy-prod",
    )


@pytest.mark.parametrize("values", [{}, {"account_ids": ACCOUNTS, "region": "us-gov-west-1", "role_name": "r"}])
def test_the_trust_policy_conditions_on_the_audience_and_every_emitted_tag(values):
    aws = render(**values)
    for _, text in aws.trust_policies:
        statement = json.loads(text)["Statement"][0]
        assert statement["Action"] == ["sts:AssumeRoleWithWebIdentity", "sts:TagSession"]
        assert statement["Condition"]["StringEquals"] == {f"{PROVIDER}:aud": ["sts.amazonaws.com", "vault.example"]}
        assert set(statement["Condition"]["StringLike"]) == {f"aws:RequestTag/{key}" for key in TAGS}
    statement = yaml.load(aws.cloudformation, Loader=CfnLoader)["Resources"]["JwtexExampleRole"]["Properties"][
        "AssumeRolePolicyDocument"
    ]["Statement"][0]
    assert statement["Condition"]["StringEquals"] == {f"{PROVIDER}:aud": ["sts.amazonaws.com", "vault.example"]}
    assert set(statement["Condition"]["StringLike"]) == {f"aws:RequestTag/{key}" for key in TAGS}
    assert f'"{PROVIDER}:aud"' in aws.terraform
    assert all(f'"aws:RequestTag/{key}"' in aws.terraform for key in TAGS)


def test_without_values_the_examples_stand_in_with_a_warning():
    aws = render()
    snippets = ci(aws)
    assert json.loads(aws.trust_policy)["Statement"][0]["Principal"]["Federated"].startswith(
        f"arn:aws:iam::{EXAMPLE_ACCOUNT}:oidc-provider/"
    )
    assert aws.role_arns == (f"arn:aws:iam::{EXAMPLE_ACCOUNT}:role/jwtex-acme-example",)
    assert f"AWS_ROLE_ARN: arn:aws:iam::{EXAMPLE_ACCOUNT}:role/jwtex-acme-example" in snippets.github_actions
    assert f"AWS_REGION: {EXAMPLE_REGION}" in snippets.github_actions
    assert f"AWS_DEFAULT_REGION: {EXAMPLE_REGION}" in snippets.gitlab_ci
    # An example account id must not refuse the user's real one: shown in Terraform, not set.
    assert f'  # allowed_account_ids = ["{EXAMPLE_ACCOUNT}"]' in aws.terraform
    assert f'region              = "{EXAMPLE_REGION}"' in aws.terraform
    (warning,) = aws.warnings
    assert "Examples stand in" in warning
    assert EXAMPLE_ACCOUNT in warning and EXAMPLE_REGION in warning and "jwtex-acme-example" in warning


def test_a_partial_set_warns_only_of_what_is_left_to_examples():
    aws = render(account_ids=["111122223333"])
    (warning,) = aws.warnings
    assert EXAMPLE_ACCOUNT not in warning and EXAMPLE_REGION in warning and "jwtex-acme-example" in warning
    assert aws.role_arns == ("arn:aws:iam::111122223333:role/jwtex-acme-example",)


@pytest.mark.parametrize(
    ("region", "partition"),
    [("eu-west-1", "aws"), ("cn-north-1", "aws-cn"), ("cn-northwest-1", "aws-cn"), ("us-gov-west-1", "aws-us-gov")],
)
def test_arns_are_in_the_regions_partition(region, partition):
    aws = render(account_ids=["111122223333"], region=region, role_name="deploy")
    assert aws.provider_arn.startswith(f"arn:{partition}:iam::111122223333:oidc-provider/")
    assert aws.role_arns == (f"arn:{partition}:iam::111122223333:role/deploy",)
    assert json.loads(aws.permission_policy)["Statement"][0]["Resource"].startswith(f"arn:{partition}:s3:::")


def test_the_permission_policy_tests_every_emitted_tag_as_a_principal_tag():
    policy = json.loads(render().permission_policy)
    assert policy["Version"] == "2012-10-17"  # policy variables need it
    (statement,) = policy["Statement"]
    assert statement["Effect"] == "Allow" and statement["Action"] == ["s3:GetObject", "s3:PutObject"]
    assert "${aws:PrincipalTag/repository}" in statement["Resource"]
    assert set(statement["Condition"]["StringLike"]) == {f"aws:PrincipalTag/{key}" for key in TAGS}
    assert statement["Condition"]["StringLike"]["aws:PrincipalTag/ref"] == "refs/heads/main"
    assert statement["Condition"]["StringLike"]["aws:PrincipalTag/custom_tag"] == "*"


def test_the_permission_policy_without_a_repository_tag_uses_the_first_tag_and_without_tags_none():
    aws = aws_setup_render(tenant_slug="acme", issuer_url=ISSUER, audiences=["a"], tag_keys=["team", "env"])
    statement = json.loads(aws.permission_policy)["Statement"][0]
    assert "${aws:PrincipalTag/team}" in statement["Resource"]
    assert set(statement["Condition"]["StringLike"]) == {"aws:PrincipalTag/team", "aws:PrincipalTag/env"}
    none = aws_setup_render(tenant_slug="acme", issuer_url=ISSUER, audiences=["a"], tag_keys=[])
    statement = json.loads(none.permission_policy)["Statement"][0]
    assert "Condition" not in statement and "PrincipalTag" not in statement["Resource"]


def test_ci_jobs_ask_their_platform_for_the_tenants_issuer_url_as_audience(real):
    snippets = ci(real)
    github = yaml.safe_load(snippets.github_actions)
    script = github["jobs"]["deploy"]["steps"][0]["run"]
    assert f'$ACTIONS_ID_TOKEN_REQUEST_URL&audience={quote(ISSUER, safe="")}"' in script
    assert f'core.getIDToken("{ISSUER}")' in script
    assert "audience=sts.amazonaws.com" not in script
    gitlab = yaml.safe_load(snippets.gitlab_ci)["deploy"]
    assert gitlab["id_tokens"]["JWTEX_UPSTREAM_TOKEN"]["aud"] == ISSUER
    for text in (snippets.github_actions, snippets.gitlab_ci):
        assert "opens no AWS role that trusts the CI platform directly" in text
        assert "does not accept this audience" not in text  # these issuers accept it


def test_ci_jobs_use_the_first_account_and_name_the_others(real):
    snippets = ci(real)
    github = yaml.safe_load(snippets.github_actions)
    assert github["jobs"]["deploy"]["env"] == {
        "AWS_ROLE_ARN": real.role_arns[0],
        "AWS_REGION": "eu-central-2",
        "AWS_ROLE_SESSION_NAME": "gh-${{ github.run_id }}-${{ github.run_attempt }}",
    }
    gitlab = yaml.safe_load(snippets.gitlab_ci)["deploy"]
    assert gitlab["variables"] == {
        "AWS_ROLE_ARN": real.role_arns[0],
        "AWS_DEFAULT_REGION": "eu-central-2",
        "AWS_ROLE_SESSION_NAME": "gl-${CI_JOB_ID}",
    }
    for text in (snippets.github_actions, snippets.gitlab_ci):
        assert f"# in account 044455556666: {real.role_arns[1]}" in text


def test_ci_jobs_say_when_the_tenants_issuer_does_not_accept_the_audience(real):
    snippets = ci(real, github_audiences=["sts.amazonaws.com"], gitlab_audiences=["https://gitlab.com"])
    assert f"Issuer github does not accept this audience yet: add {ISSUER} to its audiences." in snippets.github_actions
    assert f"Issuer gitlab does not accept this audience yet: add {ISSUER} to its audiences." in snippets.gitlab_ci
    # Still the tenant's URL: the fix is on the issuer, not in the job.
    assert yaml.safe_load(snippets.gitlab_ci)["deploy"]["id_tokens"]["JWTEX_UPSTREAM_TOKEN"]["aud"] == ISSUER


def test_a_source_identity_adds_set_source_identity_and_a_condition_on_it():
    """IAM User Guide, "Monitor and control actions taken with assumed roles": without
    sts:SetSourceIdentity in the trust policy, AssumeRoleWithWebIdentity with the claim fails."""
    plain, with_identity = render(), render(source_identity=True)
    for _, text in plain.trust_policies:
        statement = json.loads(text)["Statement"][0]
        assert "sts:SetSourceIdentity" not in statement["Action"]
        assert "sts:SourceIdentity" not in statement["Condition"]["StringLike"]
    for _, text in with_identity.trust_policies:
        statement = json.loads(text)["Statement"][0]
        assert statement["Action"] == ["sts:AssumeRoleWithWebIdentity", "sts:TagSession", "sts:SetSourceIdentity"]
        assert statement["Condition"]["StringLike"]["sts:SourceIdentity"] == "*"
    cfn = yaml.load(with_identity.cloudformation, Loader=CfnLoader)["Resources"]["JwtexExampleRole"]["Properties"][
        "AssumeRolePolicyDocument"
    ]["Statement"][0]
    assert "sts:SetSourceIdentity" in cfn["Action"] and cfn["Condition"]["StringLike"]["sts:SourceIdentity"] == "*"
    assert "sts:SetSourceIdentity" not in plain.cloudformation and "sts:SetSourceIdentity" not in plain.terraform
    assert (
        '"sts:SetSourceIdentity"]' in with_identity.terraform
        and '"sts:SourceIdentity" = "*"' in with_identity.terraform
    )


def test_a_source_identity_without_tags_still_gets_its_condition():
    aws = aws_setup_render(
        tenant_slug="acme", issuer_url=ISSUER, audiences=["sts.amazonaws.com"], tag_keys=[], source_identity=True
    )
    statement = json.loads(aws.trust_policy)["Statement"][0]
    assert statement["Condition"]["StringLike"] == {"sts:SourceIdentity": "*"}
    cfn = yaml.load(aws.cloudformation, Loader=CfnLoader)["Resources"]["JwtexExampleRole"]["Properties"][
        "AssumeRolePolicyDocument"
    ]["Statement"][0]
    assert cfn["Condition"]["StringLike"] == {"sts:SourceIdentity": "*"}


def test_ci_jobs_name_the_role_session_after_the_run_within_what_sts_accepts(real):
    """STS API Reference, AssumeRoleWithWebIdentity: RoleSessionName is 2-64 of [\\w+=,.@-] (ASCII)."""
    import re

    snippets = ci(real)
    github = yaml.safe_load(snippets.github_actions)["jobs"]["deploy"]["env"]["AWS_ROLE_SESSION_NAME"]
    gitlab = yaml.safe_load(snippets.gitlab_ci)["deploy"]["variables"]["AWS_ROLE_SESSION_NAME"]
    assert github == "gh-${{ github.run_id }}-${{ github.run_attempt }}" and gitlab == "gl-${CI_JOB_ID}"
    # What the platforms put there: run and job ids are decimal (GitHub's are 64-bit), attempts small.
    expanded = [
        github.replace("${{ github.run_id }}", str(2**63 - 1)).replace("${{ github.run_attempt }}", "999"),
        gitlab.replace("${CI_JOB_ID}", str(2**63 - 1)),
    ]
    assert all(re.fullmatch(r"[\w+=,.@-]{2,64}", name, re.ASCII) for name in expanded), expanded
