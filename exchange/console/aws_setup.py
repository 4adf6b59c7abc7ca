"""Copy-paste set-up for a tenant: AWS IAM (CloudFormation, Terraform, policies); the CI jobs are
exchange.console.ci_setup's.

Pure: takes values, returns text. The overview page shows these; nothing here is applied
anywhere. The tenant's optional account ids, region and role name fill the snippets in; where
they are not set, example values stand in, with a warning. References: IAM User Guide "Create
an OpenID Connect (OIDC) identity provider", "Pass session tags using
AssumeRoleWithWebIdentity" (the trust policy must allow ``sts:TagSession``;
``aws:RequestTag/KEY`` tests a tag at assume time, ``aws:PrincipalTag/KEY`` in permission
policies afterwards), "Monitor and control actions taken with assumed roles" (a token that
carries a source identity needs ``sts:SetSourceIdentity`` in the trust policy, which tests it as
``sts:SourceIdentity``; permission policies as ``aws:SourceIdentity``), and the AWS SDKs' web-identity provider
(``AWS_ROLE_ARN`` + ``AWS_WEB_IDENTITY_TOKEN_FILE``).

Every value is written for each reader it meets (exchange.console.snippet_quoting): a CloudFormation
or YAML scalar, an HCL string without interpolation, and — in a policy's condition values — a
string IAM compares literally, not a policy variable. The Terraform trust policy is
``jsonencode``'d rather than built with ``aws_iam_policy_document``, whose strings turn ``&{`` into
``${`` (a policy variable) with no escape for a literal one. The CloudFormation template uses no
``!Sub``, the one place CloudFormation reads ``${…}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..core.aws import STS_AUDIENCE, session_tag_key_validate
from .snippet_quoting import comment_text, hcl_list, hcl_str, iam_literal, sh_word, yaml_str

__all__ = ["AwsSetup", "aws_setup_render", "oidc_provider_host_path"]

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
    ("cn-", "aws-cn"),
    ("us-gov-", "aws-us-gov"),
    ("us-iso-", "aws-iso"),
    ("us-isob-", "aws-iso-b"),
    ("eu-isoe-", "aws-iso-e"),
    ("us-isof-", "aws-iso-f"),
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


def _partition(region: str) -> str:
    return next((partition for prefix, partition in _PARTITIONS if region.startswith(prefix)), "aws")


def _target(tenant_slug: str, account_ids: Sequence[str], region: str, role_name: str) -> tuple[_Target, list[str]]:
    example_role = f"jwtex-{tenant_slug}-example"[:64]
    missing = [
        what
        for what, value in (
            (f"account id {EXAMPLE_ACCOUNT}", account_ids),
            (f"region {EXAMPLE_REGION}", region),
            (f"role name {example_role}", role_name),
        )
        if not value
    ]
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
    source_identity: bool = False,
) -> AwsSetup:
    """IAM OIDC provider (client ids = the tenant's audiences) and a role that may be assumed
    with this tenant's tokens, requiring every session tag the tenant's rules emit and, when a
    rule sets one (``source_identity``), a source identity (docs/rules.md#source-identity). An IAM OIDC
    provider and a role belong to one account: with several accounts, the same CloudFormation
    template or Terraform is applied in each, and each account has its own trust policy."""
    provider = oidc_provider_host_path(issuer_url)
    target, warnings = _target(tenant_slug, account_ids, region, role_name)
    audiences = list(audiences) or [STS_AUDIENCE]
    if urlsplit(issuer_url).scheme != "https":
        warnings.append(
            "AWS only trusts https issuers reachable from the internet: set JWTEX_PUBLIC_URL to the public "
            "https URL of this service before creating the provider."
        )
    arn = f"arn:{target.partition}:iam::"
    providers = {account: f"{arn}{account}:oidc-provider/{provider}" for account in target.accounts}
    trust_policies = tuple(
        (account, json.dumps(_trust_policy(provider, arn_, audiences, tag_keys, source_identity), indent=2))
        for account, arn_ in providers.items()
    )
    return AwsSetup(
        cloudformation=_cloudformation(tenant_slug, issuer_url, provider, target, audiences, tag_keys, source_identity),
        terraform=_terraform(tenant_slug, issuer_url, provider, target, audiences, tag_keys, source_identity),
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
        where = f"account {accounts}, region {target.region}"
    else:
        where = (
            f"each of the accounts {accounts} (an OIDC provider and a role belong to one account), "
            f"region {target.region}"
        )
    return comment_text(where)


def _cloudformation(
    tenant_slug: str,
    issuer_url: str,
    provider: str,
    target: _Target,
    audiences: Sequence[str],
    tag_keys: Sequence[str],
    source_identity: bool,
) -> str:
    stack = f"jwtex-{tenant_slug}"
    cfn = [
        f"# Deploy in {_where(target)}:",
        f"#   aws cloudformation deploy --region {sh_word(target.region)} --stack-name {sh_word(stack)} \\",
        f"#     --template-file {sh_word(stack + '.yaml')} --capabilities CAPABILITY_NAMED_IAM",
        'AWSTemplateFormatVersion: "2010-09-09"',
        f"Description: {yaml_str(f'jwtex tenant {tenant_slug} as an IAM OIDC identity provider, and an example role')}",
        "Resources:",
        "  JwtexOidcProvider:",
        "    Type: AWS::IAM::OIDCProvider",
        "    Properties:",
        f"      Url: {yaml_str(issuer_url)}",
        "      ClientIdList:",
        *[f"        - {yaml_str(a)}" for a in audiences],
        "      # No ThumbprintList: IAM verifies certificates of public CAs itself.",
        "  JwtexExampleRole:",
        "    Type: AWS::IAM::Role",
        "    Properties:",
        f"      RoleName: {yaml_str(target.role_name)}",
        "      AssumeRolePolicyDocument:",
        '        Version: "2012-10-17"',
        "        Statement:",
        "          - Effect: Allow",
        "            Principal:",
        "              Federated: !GetAtt JwtexOidcProvider.Arn",
        "            Action:",
        "              - sts:AssumeRoleWithWebIdentity",
        "              - sts:TagSession  # the token carries session tags",
        *(["              - sts:SetSourceIdentity  # the token carries a source identity"] if source_identity else []),
        "            Condition:",
        "              StringEquals:",
        f"                {yaml_str(provider + ':aud')}:",
        *[f"                  - {yaml_str(iam_literal(a))}" for a in audiences],
    ]
    if tag_keys or source_identity:
        cfn.append('              StringLike:  # each must be present; narrow each value, e.g. "octo-org/*"')
        cfn += [f'                {yaml_str("aws:RequestTag/" + key)}: "*"' for key in tag_keys]
    if source_identity:
        cfn.append('                sts:SourceIdentity: "*"  # who ran the job; CloudTrail records it on every action')
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
    accounts = f"allowed_account_ids = {hcl_list(target.accounts)}"
    return [
        f"# Apply in {_where(target)}.",
        '# Already have a provider "aws" block? Give it these settings instead.',
        'provider "aws" {',
        f"  region              = {hcl_str(target.region)}",
        # An example account would refuse every real one: shown, not set, until the tenant has its own.
        f"  # {accounts}  # your account id(s)" if target.examples else f"  {accounts}  # refuses other accounts",
        "}",
        "",
    ]


def _terraform(
    tenant_slug: str,
    issuer_url: str,
    provider: str,
    target: _Target,
    audiences: Sequence[str],
    tag_keys: Sequence[str],
    source_identity: bool,
) -> str:
    name = _tf_name(tenant_slug)
    tf = [
        f"# jwtex tenant {comment_text(tenant_slug)} as an IAM OIDC identity provider, and an example role.",
        *_terraform_provider(target),
        f'resource "aws_iam_openid_connect_provider" "jwtex_{name}" {{',
        f"  url            = {hcl_str(issuer_url)}",
        f"  client_id_list = {hcl_list(audiences)}",
        "  # No thumbprint_list: IAM verifies certificates of public CAs itself (AWS provider >= 5.81).",
        "}",
        "",
        f'resource "aws_iam_role" "jwtex_{name}_example" {{',
        f"  name               = {hcl_str(target.role_name)}",
        "  assume_role_policy = jsonencode({",
        '    Version = "2012-10-17"',
        "    Statement = [{",
        '      Effect    = "Allow"',
        f"      Principal = {{ Federated = aws_iam_openid_connect_provider.jwtex_{name}.arn }}",
        f"      Action    = {hcl_list(_trust_actions(source_identity))}",
        "      Condition = {",
        "        StringEquals = {",
        f"          {hcl_str(provider + ':aud')} = {hcl_list([iam_literal(a) for a in audiences])}",
        "        }",
    ]
    if tag_keys or source_identity:
        tf += [
            '        # Each must be present; narrow each value from "*" to what this role expects.',
            "        StringLike = {",
        ]
    for key in tag_keys:
        example = _TAG_EXAMPLES.get(key.casefold())
        tf.append(
            f'          {hcl_str("aws:RequestTag/" + key)} = "*"'
            + (f" # e.g. {json.dumps(example)}" if example else "")
        )
    if source_identity:
        tf.append('          "sts:SourceIdentity" = "*" # who ran the job; CloudTrail records it on every action')
    if tag_keys or source_identity:
        tf.append("        }")
    tf += [
        "      }",
        "    }]",
        "  })",
        "  # Permissions: attach policies (see the example permission policy: aws:PrincipalTag/KEY).",
        "}",
        "",
    ]

    return "\n".join(tf)


def _trust_actions(source_identity: bool) -> list[str]:
    # IAM User Guide, "Monitor and control actions taken with assumed roles": AssumeRoleWithWebIdentity
    # with a source identity claim fails unless the trust policy allows sts:SetSourceIdentity.
    return ["sts:AssumeRoleWithWebIdentity", "sts:TagSession", *(["sts:SetSourceIdentity"] if source_identity else [])]


def _trust_policy(
    provider: str,
    provider_arn: str,
    audiences: Sequence[str],
    tag_keys: Sequence[str],
    source_identity: bool,
) -> dict:
    """The role's trust policy alone, as IAM shows it."""
    condition: dict[str, dict[str, object]] = {"StringEquals": {f"{provider}:aud": [iam_literal(a) for a in audiences]}}
    if tag_keys or source_identity:
        condition["StringLike"] = {f"aws:RequestTag/{key}": "*" for key in tag_keys}
    if source_identity:  # the session must carry one: narrow it, e.g. to the people who may deploy
        condition["StringLike"]["sts:SourceIdentity"] = "*"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": provider_arn},
                "Action": _trust_actions(source_identity),
                "Condition": condition,
            }
        ],
    }


def _valid_tag_key(key: str) -> bool:
    try:
        session_tag_key_validate(key)
    except ValueError:
        return False
    return True


def _permission_policy(partition: str, tag_keys: Sequence[str]) -> dict:
    """An example permission policy: ``aws:PrincipalTag/KEY`` is the token's session tag KEY.
    Each repository reads and writes its own prefix of a bucket, while every tag the rules emit
    matches (an example value for well-known tags). Policy variables need version 2012-10-17;
    only a key AWS accepts becomes one (nothing else can close the variable early)."""
    keys = [key for key in tag_keys if _valid_tag_key(key)]
    path_tag = next((key for key in keys if key.casefold() == "repository"), keys[0] if keys else None)
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
