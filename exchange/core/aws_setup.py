"""Copy-paste set-up for a tenant: AWS IAM (CloudFormation, Terraform) and CI jobs.

Pure: takes values, returns text. The overview page shows these; nothing here is applied
anywhere. References: IAM User Guide "Create an OpenID Connect (OIDC) identity provider",
"Pass session tags using AssumeRoleWithWebIdentity" (the trust policy must allow
``sts:TagSession``; ``aws:RequestTag/KEY`` tests a tag at assume time, ``aws:PrincipalTag/KEY``
in permission policies afterwards), and the AWS SDKs' web-identity provider
(``AWS_ROLE_ARN`` + ``AWS_WEB_IDENTITY_TOKEN_FILE``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

__all__ = ["AwsSetup", "CiSnippets", "aws_setup_render", "ci_snippets_render", "oidc_provider_host_path"]

EXAMPLE_ACCOUNT = "123456789012"
# What a trust policy usually narrows a well-known CI tag to (examples in the Terraform snippet).
_TAG_EXAMPLES = {
    "repository": "octo-org/*",
    "repository_owner": "octo-org",
    "ref": "refs/heads/main",
    "ref_type": "branch",
    "environment": "production",
    "workflow": "deploy",
    "actor": "octocat",
    "namespace_path": "octo-group",
    "project_path": "octo-group/*",
}
EXAMPLE_REGION = "eu-west-1"


@dataclass(frozen=True)
class AwsSetup:
    cloudformation: str
    terraform: str
    trust_policy: str  # the role's trust policy as JSON (with the provider ARN for account EXAMPLE_ACCOUNT)
    provider_arn: str
    role_name: str
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class CiSnippets:
    github_actions: str
    gitlab_ci: str


def oidc_provider_host_path(issuer_url: str) -> str:
    """What IAM calls the provider: the issuer URL without its scheme (``host/path``); the
    condition keys are ``HOST/PATH:aud`` and ``HOST/PATH:sub``."""
    parts = urlsplit(issuer_url)
    return f"{parts.netloc}{parts.path}".rstrip("/")


def _tf_name(slug: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", slug)


def _yaml_str(value: str) -> str:
    # JSON strings are valid YAML double-quoted scalars.
    return json.dumps(value)


def _hcl_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def aws_setup_render(*, tenant_slug: str, issuer_url: str, audiences: Sequence[str], tag_keys: Sequence[str]) -> AwsSetup:
    """IAM OIDC provider (client ids = the tenant's audiences) and an example role that may be
    assumed with this tenant's tokens, requiring every session tag the tenant's rules emit."""
    provider = oidc_provider_host_path(issuer_url)
    role_name = f"jwtex-{tenant_slug}-example"[:64]
    provider_arn = f"arn:aws:iam::{EXAMPLE_ACCOUNT}:oidc-provider/{provider}"
    audiences = list(audiences) or ["sts.amazonaws.com"]
    warnings = []
    if urlsplit(issuer_url).scheme != "https":
        warnings.append(
            "AWS only trusts https issuers reachable from the internet: set JWTEX_PUBLIC_URL to the public "
            "https URL of this service before creating the provider."
        )
    return AwsSetup(
        cloudformation=_cloudformation(tenant_slug, issuer_url, provider, role_name, audiences, tag_keys),
        terraform=_terraform(tenant_slug, issuer_url, provider, role_name, audiences, tag_keys),
        trust_policy=json.dumps(_trust_policy(provider, provider_arn, audiences, tag_keys), indent=2),
        provider_arn=provider_arn,
        role_name=role_name,
        warnings=tuple(warnings),
    )


def _cloudformation(
    tenant_slug: str, issuer_url: str, provider: str, role_name: str, audiences: Sequence[str], tag_keys: Sequence[str]
) -> str:
    cfn = [
        'AWSTemplateFormatVersion: "2010-09-09"',
        f"Description: jwtex tenant {tenant_slug} as an IAM OIDC identity provider, and an example role",
        "Resources:",
        "  JwtexOidcProvider:",
        "    Type: AWS::IAM::OIDCProvider",
        "    Properties:",
        f"      Url: {_yaml_str(issuer_url)}",
        "      ClientIdList:",
        *[f"        - {_yaml_str(a)}" for a in audiences],
        "      # No ThumbprintList: IAM verifies certificates of public CAs itself.",
        "  JwtexExampleRole:",
        "    Type: AWS::IAM::Role",
        "    Properties:",
        f"      RoleName: {role_name}",
        "      AssumeRolePolicyDocument:",
        '        Version: "2012-10-17"',
        "        Statement:",
        "          - Effect: Allow",
        "            Principal:",
        "              Federated: !GetAtt JwtexOidcProvider.Arn",
        "            Action:",
        "              - sts:AssumeRoleWithWebIdentity",
        "              - sts:TagSession  # the token carries session tags",
        "            Condition:",
        "              StringEquals:",
        f"                {_yaml_str(provider + ':aud')}:",
        *[f"                  - {_yaml_str(a)}" for a in audiences],
    ]
    if tag_keys:
        cfn.append("              StringLike:  # every tag must be present; narrow each value, e.g. \"octo-org/*\"")
        cfn += [f"                {_yaml_str('aws:RequestTag/' + key)}: \"*\"" for key in tag_keys]
    cfn += [
        "      # Permissions: attach policies here; test the tags as aws:PrincipalTag/KEY.",
        "      ManagedPolicyArns: []",
        "Outputs:",
        "  RoleArn:",
        "    Value: !GetAtt JwtexExampleRole.Arn",
        "",
    ]

    return "\n".join(cfn)


def _terraform(
    tenant_slug: str, issuer_url: str, provider: str, role_name: str, audiences: Sequence[str], tag_keys: Sequence[str]
) -> str:
    name = _tf_name(tenant_slug)
    tf = [
        f"# jwtex tenant {tenant_slug} as an IAM OIDC identity provider, and an example role.",
        f'resource "aws_iam_openid_connect_provider" "jwtex_{name}" {{',
        f"  url            = {json.dumps(issuer_url)}",
        f"  client_id_list = {_hcl_list(audiences)}",
        "  # No thumbprint_list: IAM verifies certificates of public CAs itself (AWS provider >= 5.81).",
        "}",
        "",
        f'data "aws_iam_policy_document" "jwtex_{name}_trust" {{',
        "  statement {",
        '    effect  = "Allow"',
        '    actions = ["sts:AssumeRoleWithWebIdentity", "sts:TagSession"]',
        "    principals {",
        '      type        = "Federated"',
        f"      identifiers = [aws_iam_openid_connect_provider.jwtex_{name}.arn]",
        "    }",
        "    condition {",
        '      test     = "StringEquals"',
        f"      variable = {json.dumps(provider + ':aud')}",
        f"      values   = {_hcl_list(audiences)}",
        "    }",
    ]
    if tag_keys:
        tf.append('    # Every tag must be present; narrow each value from "*" to what this role expects.')
    for key in tag_keys:
        example = _TAG_EXAMPLES.get(key.casefold())
        tf += [
            "    condition {",
            '      test     = "StringLike"',
            f"      variable = {json.dumps('aws:RequestTag/' + key)}",
            '      values   = ["*"]' + (f" # e.g. [{json.dumps(example)}]" if example else ""),
            "    }",
        ]
    tf += [
        "  }",
        "}",
        "",
        f'resource "aws_iam_role" "jwtex_{name}_example" {{',
        f"  name               = {json.dumps(role_name)}",
        f"  assume_role_policy = data.aws_iam_policy_document.jwtex_{name}_trust.json",
        "  # Permissions: attach policies; test the tags as aws:PrincipalTag/KEY.",
        "}",
        "",
    ]

    return "\n".join(tf)


def _trust_policy(provider: str, provider_arn: str, audiences: Sequence[str], tag_keys: Sequence[str]) -> dict:
    """The role's trust policy alone, as IAM shows it."""
    condition: dict[str, dict[str, object]] = {"StringEquals": {f"{provider}:aud": audiences}}
    if tag_keys:
        condition["StringLike"] = {f"aws:RequestTag/{key}": "*" for key in tag_keys}
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": provider_arn},
                "Action": ["sts:AssumeRoleWithWebIdentity", "sts:TagSession"],
                "Condition": condition,
            }
        ],
    }


def ci_snippets_render(
    *,
    issuer_url: str,
    role_name: str,
    github_issuer_id: str | None,
    github_audience: str | None,
    gitlab_issuer_id: str | None,
    gitlab_audience: str | None,
) -> CiSnippets:
    """A GitHub Actions job and a GitLab CI job that exchange their platform's token at this
    tenant (raw endpoint, ``Content-Type: application/jwt``) and point the AWS SDKs at it."""
    role_arn = f"arn:aws:iam::{EXAMPLE_ACCOUNT}:role/{role_name}"
    return CiSnippets(
        github_actions=_github_actions(issuer_url, role_arn, github_issuer_id, github_audience),
        gitlab_ci=_gitlab_ci(issuer_url, role_arn, gitlab_issuer_id, gitlab_audience),
    )


def _github_actions(issuer_url: str, role_arn: str, github_issuer_id: str | None, github_audience: str | None) -> str:
    gh_id = github_issuer_id or "github"
    gh_aud = github_audience or "sts.amazonaws.com"
    github = [
        "# .github/workflows/deploy.yml",
        *(["# No GitHub Actions issuer in this tenant yet: add one from the GitHub preset first."]
          if github_issuer_id is None else []),
        "name: deploy",
        "on:",
        "  push:",
        "    branches: [main]",
        "  workflow_dispatch:",
        "jobs:",
        "  deploy:",
        "    runs-on: ubuntu-latest",
        "    permissions:",
        "      id-token: write  # lets the job ask GitHub for its OIDC token",
        "      contents: read",
        "    env:",
        f"      AWS_ROLE_ARN: {role_arn}",
        f"      AWS_REGION: {EXAMPLE_REGION}",
        "    steps:",
        "      - name: Exchange the GitHub token at jwtex",
        "        run: |",
        "          upstream=$(curl -sS --fail-with-body \\",
        '            -H "Authorization: bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN" \\',
        f'            "$ACTIONS_ID_TOKEN_REQUEST_URL&audience={quote(gh_aud, safe="")}" | jq -r .value)',
        '          curl -sS --fail-with-body -H "Content-Type: application/jwt" --data-binary "$upstream" \\',
        f'            -o "$RUNNER_TEMP/jwtex.jwt" "{issuer_url}/exchange?issuerId={quote(gh_id, safe="")}"',
        '          echo "AWS_WEB_IDENTITY_TOKEN_FILE=$RUNNER_TEMP/jwtex.jwt" >> "$GITHUB_ENV"',
        "      # The AWS CLI and SDKs now assume AWS_ROLE_ARN with the jwtex token",
        "      # (valid for the rule's lifetime, 15 minutes by default: exchange again in long jobs).",
        "      - run: aws sts get-caller-identity",
        "",
    ]
    return "\n".join(github)


def _gitlab_ci(issuer_url: str, role_arn: str, gitlab_issuer_id: str | None, gitlab_audience: str | None) -> str:
    gl_id = gitlab_issuer_id or "gitlab"
    gl_aud = gitlab_audience or "https://gitlab.com"
    gitlab = [
        "# .gitlab-ci.yml",
        *(["# No GitLab issuer in this tenant yet: add one from a GitLab preset first."]
          if gitlab_issuer_id is None else []),
        "deploy:",
        "  image:",
        "    name: amazon/aws-cli:latest  # any image with curl and the AWS CLI",
        '    entrypoint: [""]',
        "  id_tokens:",
        "    JWTEX_UPSTREAM_TOKEN:",
        f"      aud: {gl_aud}",
        "  variables:",
        f"    AWS_ROLE_ARN: {role_arn}",
        f"    AWS_DEFAULT_REGION: {EXAMPLE_REGION}",
        "  script:",
        '    - export AWS_WEB_IDENTITY_TOKEN_FILE="$(mktemp)"',
        "    - >-",
        '      curl -sS --fail-with-body -H "Content-Type: application/jwt"',
        '      --data-binary "$JWTEX_UPSTREAM_TOKEN" -o "$AWS_WEB_IDENTITY_TOKEN_FILE"',
        f'      "{issuer_url}/exchange?issuerId={quote(gl_id, safe="")}"',
        "    - aws sts get-caller-identity",
        "",
    ]
    return "\n".join(gitlab)
