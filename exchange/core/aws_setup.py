"""Copy-paste set-up for a tenant: AWS IAM (CloudFormation, Terraform, policies) and CI jobs.

Pure: takes values, returns text. The overview page shows these; nothing here is applied
anywhere. The tenant's optional account ids, region and role name fill the snippets in; where
they are not set, example values stand in, with a warning. References: IAM User Guide "Create
an OpenID Connect (OIDC) identity provider", "Pass session tags using
AssumeRoleWithWebIdentity" (the trust policy must allow ``sts:TagSession``;
``aws:RequestTag/KEY`` tests a tag at assume time, ``aws:PrincipalTag/KEY`` in permission
policies afterwards), and the AWS SDKs' web-identity provider (``AWS_ROLE_ARN`` +
``AWS_WEB_IDENTITY_TOKEN_FILE``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

__all__ = ["AwsSetup", "CiSnippets", "aws_setup_render", "ci_snippets_render", "oidc_provider_host_path"]

EXAMPLE_ACCOUNT = "123456789012"
EXAMPLE_REGION = "eu-west-1"
EXAMPLE_BUCKET = "amzn-s3-demo-bucket"  # the bucket name AWS's own documentation uses as a placeholder
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

# ARNs outside the commercial partition do not start with arn:aws: (China, GovCloud, ISO regions).
_PARTITIONS = (
    ("cn-", "aws-cn"), ("us-gov-", "aws-us-gov"), ("us-iso-", "aws-iso"), ("us-isob-", "aws-iso-b"),
    ("eu-isoe-", "aws-iso-e"), ("us-isof-", "aws-iso-f"),
)


@dataclass(frozen=True)
class AwsSetup:
    cloudformation: str
    terraform: str
    trust_policy: str  # the role's trust policy as JSON, in the first account
    trust_policies: tuple[tuple[str, str], ...]  # (account id, trust policy JSON), one per account
    permission_policy: str  # an example permission policy (JSON) testing aws:PrincipalTag/KEY
    provider_arn: str  # in the first account
    role_name: str
    role_arns: tuple[str, ...]  # one per account, in the tenant's order
    region: str
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class CiSnippets:
    github_actions: str
    gitlab_ci: str


@dataclass(frozen=True)
class _Target:  # where the snippets point: the tenant's values, or examples standing in for them
    accounts: tuple[str, ...]
    region: str
    role_name: str
    partition: str
    examples: bool  # the account ids are the example one


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


def _partition(region: str) -> str:
    return next((partition for prefix, partition in _PARTITIONS if region.startswith(prefix)), "aws")


def _target(tenant_slug: str, account_ids: Sequence[str], region: str, role_name: str) -> tuple[_Target, list[str]]:
    example_role = f"jwtex-{tenant_slug}-example"[:64]
    missing = [what for what, value in (
        (f"account id {EXAMPLE_ACCOUNT}", account_ids), (f"region {EXAMPLE_REGION}", region),
        (f"role name {example_role}", role_name),
    ) if not value]
    region = region or EXAMPLE_REGION
    target = _Target(
        accounts=tuple(account_ids) or (EXAMPLE_ACCOUNT,),
        region=region,
        role_name=role_name or example_role,
        partition=_partition(region),
        examples=not account_ids,
    )
    warning = (
        f"Examples stand in for what this tenant's settings leave empty ({', '.join(missing)}): replace them "
        "here, or fill in the tenant's AWS set-up (account ids, region, role name)."
    )
    return target, [warning] if missing else []


def aws_setup_render(
    *,
    tenant_slug: str,
    issuer_url: str,
    audiences: Sequence[str],
    tag_keys: Sequence[str],
    account_ids: Sequence[str] = (),
    region: str = "",
    role_name: str = "",
) -> AwsSetup:
    """IAM OIDC provider (client ids = the tenant's audiences) and a role that may be assumed
    with this tenant's tokens, requiring every session tag the tenant's rules emit. An IAM OIDC
    provider and a role belong to one account: with several accounts, the same CloudFormation
    template or Terraform is applied in each, and each account has its own trust policy."""
    provider = oidc_provider_host_path(issuer_url)
    target, warnings = _target(tenant_slug, account_ids, region, role_name)
    audiences = list(audiences) or ["sts.amazonaws.com"]
    if urlsplit(issuer_url).scheme != "https":
        warnings.append(
            "AWS only trusts https issuers reachable from the internet: set JWTEX_PUBLIC_URL to the public "
            "https URL of this service before creating the provider."
        )
    arn = f"arn:{target.partition}:iam::"
    providers = {account: f"{arn}{account}:oidc-provider/{provider}" for account in target.accounts}
    trust_policies = tuple(
        (account, json.dumps(_trust_policy(provider, arn_, audiences, tag_keys), indent=2)) for account, arn_ in providers.items()
    )
    return AwsSetup(
        cloudformation=_cloudformation(tenant_slug, issuer_url, provider, target, audiences, tag_keys),
        terraform=_terraform(tenant_slug, issuer_url, provider, target, audiences, tag_keys),
        trust_policy=trust_policies[0][1],
        trust_policies=trust_policies,
        permission_policy=json.dumps(_permission_policy(target.partition, tag_keys), indent=2),
        provider_arn=providers[target.accounts[0]],
        role_name=target.role_name,
        role_arns=tuple(f"{arn}{account}:role/{target.role_name}" for account in target.accounts),
        region=target.region,
        warnings=tuple(warnings),
    )


def _where(target: _Target) -> str:
    accounts = ", ".join(target.accounts)
    if len(target.accounts) == 1:
        return f"account {accounts}, region {target.region}"
    return f"each of the accounts {accounts} (an OIDC provider and a role belong to one account), region {target.region}"


def _cloudformation(
    tenant_slug: str, issuer_url: str, provider: str, target: _Target, audiences: Sequence[str], tag_keys: Sequence[str]
) -> str:
    cfn = [
        f"# Deploy in {_where(target)}:",
        f"#   aws cloudformation deploy --region {target.region} --stack-name jwtex-{tenant_slug} \\",
        f"#     --template-file jwtex-{tenant_slug}.yaml --capabilities CAPABILITY_NAMED_IAM",
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
        f"      RoleName: {_yaml_str(target.role_name)}",
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
        "      # Permissions: attach policies here (see the example permission policy: aws:PrincipalTag/KEY).",
        "      ManagedPolicyArns: []",
        "Outputs:",
        "  RoleArn:",
        "    Value: !GetAtt JwtexExampleRole.Arn",
        "",
    ]

    return "\n".join(cfn)


def _terraform_provider(target: _Target) -> list[str]:
    accounts = f"allowed_account_ids = {_hcl_list(target.accounts)}"
    return [
        f"# Apply in {_where(target)}.",
        '# Already have a provider "aws" block? Give it these settings instead.',
        'provider "aws" {',
        f"  region              = {json.dumps(target.region)}",
        # An example account would refuse every real one: shown, not set, until the tenant has its own.
        f"  # {accounts}  # your account id(s)" if target.examples else f"  {accounts}  # refuses other accounts",
        "}",
        "",
    ]


def _terraform(
    tenant_slug: str, issuer_url: str, provider: str, target: _Target, audiences: Sequence[str], tag_keys: Sequence[str]
) -> str:
    name = _tf_name(tenant_slug)
    tf = [
        f"# jwtex tenant {tenant_slug} as an IAM OIDC identity provider, and an example role.",
        *_terraform_provider(target),
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
        f"  name               = {json.dumps(target.role_name)}",
        f"  assume_role_policy = data.aws_iam_policy_document.jwtex_{name}_trust.json",
        "  # Permissions: attach policies (see the example permission policy: aws:PrincipalTag/KEY).",
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


def _permission_policy(partition: str, tag_keys: Sequence[str]) -> dict:
    """An example permission policy: ``aws:PrincipalTag/KEY`` is the token's session tag KEY.
    Each repository reads and writes its own prefix of a bucket, while every tag the rules emit
    matches (an example value for well-known tags). Policy variables need version 2012-10-17."""
    path_tag = next((key for key in tag_keys if key.casefold() == "repository"), tag_keys[0] if tag_keys else None)
    prefix = f"${{aws:PrincipalTag/{path_tag}}}" if path_tag else "ci"
    statement: dict[str, object] = {
        "Sid": "ArtifactsUnderTheCallersOwnPrefix",
        "Effect": "Allow",
        "Action": ["s3:GetObject", "s3:PutObject"],
        "Resource": f"arn:{partition}:s3:::{EXAMPLE_BUCKET}/{prefix}/*",
    }
    if tag_keys:
        statement["Condition"] = {
            "StringLike": {f"aws:PrincipalTag/{key}": _TAG_EXAMPLES.get(key.casefold(), "*") for key in tag_keys}
        }
    return {"Version": "2012-10-17", "Statement": [statement]}


def ci_snippets_render(
    *,
    issuer_url: str,
    role_arns: Sequence[str],
    region: str,
    github_issuer_id: str | None,
    github_audiences: Sequence[str] | None,
    gitlab_issuer_id: str | None,
    gitlab_audiences: Sequence[str] | None,
) -> CiSnippets:
    """A GitHub Actions job and a GitLab CI job that exchange their platform's token at this
    tenant (raw endpoint, ``Content-Type: application/jwt``) and point the AWS SDKs at the role
    (the first account's; the others are named in a comment). ``*_audiences``: what the
    tenant's issuer of that platform accepts, to say so when it does not accept the audience
    the job asks for."""
    return CiSnippets(
        github_actions=_github_actions(issuer_url, role_arns, region, github_issuer_id, github_audiences),
        gitlab_ci=_gitlab_ci(issuer_url, role_arns, region, gitlab_issuer_id, gitlab_audiences),
    )


def _ci_notes(issuer_url: str, issuer_id: str | None, audiences: Sequence[str] | None, *, indent: str) -> list[str]:
    """Why the job asks for this tenant's issuer URL as audience (a token minted for jwtex must
    not also open AWS roles that trust the CI platform directly: whoever sees it on its way here
    could assume those), and a word when the tenant's issuer does not accept that audience."""
    notes = [f"{indent}# The audience is this tenant's issuer URL, not sts.amazonaws.com: a token meant for",
             f"{indent}# jwtex then opens no AWS role that trusts the CI platform directly."]
    if issuer_id is not None and audiences is not None and issuer_url not in audiences:
        notes.append(f"{indent}# Issuer {issuer_id} does not accept this audience yet: add {issuer_url} to its audiences.")
    return notes


def _role_lines(role_arns: Sequence[str], variable: str, *, indent: str) -> list[str]:
    others = [f"{indent}# in account {arn.split(':')[4]}: {arn}" for arn in role_arns[1:]]
    return [*others, f"{indent}{variable}: {role_arns[0]}"]


def _github_actions(issuer_url: str, role_arns: Sequence[str], region: str, github_issuer_id: str | None,
                    github_audiences: Sequence[str] | None) -> str:
    gh_id = github_issuer_id or "github"
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
        *_role_lines(role_arns, "AWS_ROLE_ARN", indent="      "),
        f"      AWS_REGION: {region}",
        "    steps:",
        "      - name: Exchange the GitHub token at jwtex",
        "        run: |",
        *_ci_notes(issuer_url, github_issuer_id, github_audiences, indent="          "),
        f"          # (in actions/github-script: core.getIDToken({json.dumps(issuer_url)}))",
        "          upstream=$(curl -sS --fail-with-body \\",
        '            -H "Authorization: bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN" \\',
        f'            "$ACTIONS_ID_TOKEN_REQUEST_URL&audience={quote(issuer_url, safe="")}" | jq -r .value)',
        '          curl -sS --fail-with-body -H "Content-Type: application/jwt" --data-binary "$upstream" \\',
        f'            -o "$RUNNER_TEMP/jwtex.jwt" "{issuer_url}/exchange?issuerId={quote(gh_id, safe="")}"',
        '          echo "AWS_WEB_IDENTITY_TOKEN_FILE=$RUNNER_TEMP/jwtex.jwt" >> "$GITHUB_ENV"',
        "      # The AWS CLI and SDKs now assume AWS_ROLE_ARN with the jwtex token",
        "      # (valid for the rule's lifetime, 15 minutes by default: exchange again in long jobs).",
        "      - run: aws sts get-caller-identity",
        "",
    ]
    return "\n".join(github)


def _gitlab_ci(issuer_url: str, role_arns: Sequence[str], region: str, gitlab_issuer_id: str | None,
               gitlab_audiences: Sequence[str] | None) -> str:
    gl_id = gitlab_issuer_id or "gitlab"
    gitlab = [
        "# .gitlab-ci.yml",
        *(["# No GitLab issuer in this tenant yet: add one from a GitLab preset first."]
          if gitlab_issuer_id is None else []),
        "deploy:",
        "  image:",
        "    name: amazon/aws-cli:latest  # any image with curl and the AWS CLI",
        '    entrypoint: [""]',
        "  id_tokens:",
        *_ci_notes(issuer_url, gitlab_issuer_id, gitlab_audiences, indent="    "),
        "    JWTEX_UPSTREAM_TOKEN:",
        f"      aud: {_yaml_str(issuer_url)}",
        "  variables:",
        *_role_lines(role_arns, "AWS_ROLE_ARN", indent="    "),
        f"    AWS_DEFAULT_REGION: {region}",
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
