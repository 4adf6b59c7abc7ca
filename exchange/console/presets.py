"""Issuer presets: the issuer URL, usual audience and algorithms of the CI platforms people
connect, and the claims their tokens carry (for the rule editor's help).

Pure values and functions; the admin's "add issuer from a preset" page calls
``IssuerPreset.build`` and shows the result in the ordinary issuer form, so the operator
sees (and may change) every value before anything is saved.

Sources: each platform's OIDC documentation (GitHub "About security hardening with OpenID
Connect", GitLab "OpenID Connect (OIDC) Authentication Using ID Tokens", CircleCI "Using
OpenID Connect tokens in jobs", Buildkite "OIDC with Buildkite", HCP Terraform "Dynamic
Credentials", Bitbucket "Integrate Pipelines with resource servers using OIDC",
Kubernetes "Service account issuer discovery").

Audience: for the issuers every customer of the platform shares (``SHARED_ISSUERS``) and that
let the job choose the audience, a preset asks for the tenant's own issuer URL
(``{JWTEX_PUBLIC_URL}/t/TENANT``), not ``sts.amazonaws.com``: a token a job gets for jwtex must
not also open AWS roles that trust the CI platform directly (and one minted for another service
must not be accepted here). CircleCI and Bitbucket fix the audience to the organization or
workspace, so their presets keep it.

``max_token_age`` (the longest ``exp − iat`` accepted) is what each platform issues, with a
margin; tokens living longer are refused (401):

- GitHub Actions: 5 minutes (undocumented; the real token in tests/fixtures/github-actions has
  exp − iat = 300 s) → 600 s.
- GitLab: the job's timeout (GitLab "ID tokens": expiry is the job timeout, or 5 minutes
  without one; 60 minutes by default) → 3,600 s; raise it for jobs with a longer timeout.
- CircleCI: one hour ("Using OpenID Connect tokens in jobs": exp is one hour after issuance).
- Buildkite: 5 minutes unless the job asks ``--lifetime`` (``buildkite-agent oidc request-token``) → 600 s.
- HCP Terraform: until the plan or apply phase times out ("Workload identity": the token
  "expires at the end of the plan or apply timeout", 2 hours by default) → 7,200 s.
- Bitbucket Pipelines: not documented → 3,600 s. Kubernetes: the projected token's
  ``expirationSeconds`` (EKS: 24 h) → the default 86,400 s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from ..core import strict_json
from ..core.aws import STS_AUDIENCE
from ..core.jwks import static_jwks_clean
from .preset_claims import (
    BITBUCKET_CLAIMS as _BITBUCKET_CLAIMS,
    BUILDKITE_CLAIMS as _BUILDKITE_CLAIMS,
    CIRCLECI_CLAIMS as _CIRCLECI_CLAIMS,
    GITHUB_CLAIMS as _GITHUB_CLAIMS,
    GITHUB_SOURCE_IDENTITY as _GITHUB_SOURCE_IDENTITY,
    GITHUB_TAGS as _GITHUB_TAGS,
    GITHUB_TYPES as _GITHUB_TYPES,
    GITLAB_CLAIMS as _GITLAB_CLAIMS,
    GITLAB_SOURCE_IDENTITY as _GITLAB_SOURCE_IDENTITY,
    GITLAB_TAGS as _GITLAB_TAGS,
    GITLAB_TYPES as _GITLAB_TYPES,
    KUBERNETES_CLAIMS as _KUBERNETES_CLAIMS,
    TFC_CLAIMS as _TFC_CLAIMS,
)
from .preset_types import IssuerPreset, IssuerValues, PresetError, PresetParameter

__all__ = [
    "IssuerPreset",
    "IssuerValues",
    "PresetError",
    "PresetParameter",
    "PRESETS",
    "preset_claim_types",
    "preset_for_issuer",
    "preset_get",
]


def _own_audience(params: Mapping[str, str]) -> list[str]:
    """The tenant's own issuer URL as the audience its jobs ask for (see the module docstring)."""
    return [params["tenant_issuer"]] if params.get("tenant_issuer") else [STS_AUDIENCE]


def _issuer_url(value: str) -> str:
    """The issuer as tokens spell it (no trailing slash); ``build`` checks it like every issuer URL."""
    return value.rstrip("/")


def _static_jwks(text: str) -> dict[str, Any]:
    try:  # only the members a JWK defines, never private ones (docs/configuration-file.md#issuer-keys)
        document = static_jwks_clean(strict_json.loads(text))
    except (ValueError, RecursionError) as exc:
        raise PresetError("jwks", f"Not a usable JWKS: {exc}.") from None
    if not document["keys"]:
        raise PresetError("jwks", 'A JWKS document: {"keys": [ … ]} with at least one key.')
    return document


_SLUG = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,98}[A-Za-z0-9])?"
_UUID = r"\{?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}?"

PRESETS: tuple[IssuerPreset, ...] = (
    IssuerPreset(
        key="github",
        label="GitHub Actions",
        issuer_id="github",
        description="Jobs on github.com. Ask for the token with `permissions: id-token: write`.",
        claims=_GITHUB_CLAIMS,
        claim_types=_GITHUB_TYPES,
        # The owner's immutable id, which both forms of sub carry (preset_claims.GITHUB_CLAIMS).
        example_when="claims.repository_owner_id == '1342004' && claims.ref == 'refs/heads/main'",
        example_tags=_GITHUB_TAGS,
        example_source_identity=_GITHUB_SOURCE_IDENTITY,
        shared_issuer=True,
        max_token_age=600,
        _build=lambda p: ("https://token.actions.githubusercontent.com", _own_audience(p), None),
    ),
    IssuerPreset(
        key="github-enterprise",
        label="GitHub Enterprise Cloud (enterprise issuer)",
        issuer_id="github",
        description="An enterprise with a customized issuer: tokens say iss = …/ENTERPRISE_SLUG.",
        parameters=(
            PresetParameter(
                "enterprise",
                "Enterprise slug",
                "as in github.com/enterprises/SLUG",
                pattern=_SLUG,
                pattern_message="Letters, digits and inner hyphens.",
            ),
        ),
        claims=(*_GITHUB_CLAIMS, ("enterprise / enterprise_id", "the enterprise")),
        claim_types=_GITHUB_TYPES,
        example_when="claims.enterprise == 'ENTERPRISE' && claims.ref == 'refs/heads/main'",
        example_tags=_GITHUB_TAGS,
        example_source_identity=_GITHUB_SOURCE_IDENTITY,
        max_token_age=600,
        _build=lambda p: (f"https://token.actions.githubusercontent.com/{p['enterprise']}", _own_audience(p), None),
    ),
    IssuerPreset(
        key="gitlab",
        label="GitLab.com",
        issuer_id="gitlab",
        description="Jobs on gitlab.com, with `id_tokens:` whose aud is https://gitlab.com.",
        claims=_GITLAB_CLAIMS,
        claim_types=_GITLAB_TYPES,
        example_when="claims.namespace_id == '72' && claims.ref_protected == 'true'",
        example_tags=_GITLAB_TAGS,
        example_source_identity=_GITLAB_SOURCE_IDENTITY,
        shared_issuer=True,
        max_token_age=3600,
        _build=lambda p: ("https://gitlab.com", _own_audience(p), None),
    ),
    IssuerPreset(
        key="gitlab-self-managed",
        label="GitLab self-managed",
        issuer_id="gitlab",
        description="Your own GitLab instance; its URL is the issuer and the usual audience.",
        parameters=(PresetParameter("url", "GitLab URL", "e.g. https://gitlab.example.com"),),
        claims=_GITLAB_CLAIMS,
        claim_types=_GITLAB_TYPES,
        example_when="claims.namespace_path == 'platform' && claims.ref_protected == 'true'",
        example_tags=_GITLAB_TAGS,
        example_source_identity=_GITLAB_SOURCE_IDENTITY,
        max_token_age=3600,
        _build=lambda p: (_issuer_url(p["url"]), _own_audience(p), None),
    ),
    IssuerPreset(
        key="circleci",
        label="CircleCI",
        issuer_id="circleci",
        description="Tokens in $CIRCLE_OIDC_TOKEN_V2; iss and aud carry the organization id.",
        parameters=(
            PresetParameter(
                "org_id",
                "Organization id",
                "Organization Settings → Overview",
                pattern=r"[0-9a-fA-F-]{36}",
                pattern_message="The organization id is a UUID.",
            ),
        ),
        claims=_CIRCLECI_CLAIMS,
        example_when="claims['oidc.circleci.com/vcs-ref'] == 'refs/heads/main'",
        example_tags=(
            ("project", "claims['oidc.circleci.com/project-id']", False),
            ("ref", "aws_tag(claims['oidc.circleci.com/vcs-ref'])", False),
        ),
        max_token_age=3600,
        _build=lambda p: (f"https://oidc.circleci.com/org/{p['org_id'].lower()}", [p["org_id"].lower()], None),
    ),
    IssuerPreset(
        key="buildkite",
        label="Buildkite",
        issuer_id="buildkite",
        description="`buildkite-agent oidc request-token --audience AUDIENCE`. One issuer for every organization: "
        "rules must check organization_slug.",
        parameters=(
            PresetParameter(
                "organization",
                "Organization slug",
                "as in buildkite.com/ORG",
                pattern=_SLUG,
                pattern_message="Letters, digits and inner hyphens.",
            ),
        ),
        claims=_BUILDKITE_CLAIMS,
        # Buildkite ("OIDC with Buildkite", the example token): ids are UUID strings, build_number a number.
        claim_types={
            **dict.fromkeys(
                (
                    "organization_slug",
                    "organization_id",
                    "pipeline_slug",
                    "pipeline_id",
                    "build_branch",
                    "build_tag",
                    "build_commit",
                    "build_source",
                    "step_key",
                    "job_id",
                    "agent_id",
                    "runner_environment",
                ),
                "string",
            ),
            "build_number": "number",
        },
        example_when="claims.organization_slug == 'ORG' && claims.build_branch == 'main'",
        example_tags=(("pipeline", "claims.pipeline_slug", False), ("branch", "aws_tag(claims.build_branch)", False)),
        example_source_identity="aws_source_identity('bk-' + claims.pipeline_slug + '-' + string(claims.build_number))",
        shared_issuer=True,
        max_token_age=600,
        _build=lambda p: ("https://agent.buildkite.com", _own_audience(p), None),
    ),
    IssuerPreset(
        key="terraform-cloud",
        label="HCP Terraform (Terraform Cloud)",
        issuer_id="terraform",
        description="Workload identity tokens; set TFC_WORKLOAD_IDENTITY_AUDIENCE to the audience. One issuer "
        "for every organization: rules must check terraform_organization_name.",
        claims=_TFC_CLAIMS,
        # HCP Terraform ("Workload identity", the token's claims): strings, the ids included (org-…, ws-…).
        claim_types=dict.fromkeys(
            (
                "terraform_organization_name",
                "terraform_organization_id",
                "terraform_project_name",
                "terraform_project_id",
                "terraform_workspace_name",
                "terraform_workspace_id",
                "terraform_full_workspace",
                "terraform_run_phase",
                "terraform_run_id",
            ),
            "string",
        ),
        example_when="claims.terraform_organization_name == 'acme' && claims.terraform_run_phase == 'apply'",
        example_tags=(
            ("workspace", "aws_tag(claims.terraform_full_workspace)", False),
            ("run_phase", "claims.terraform_run_phase", False),
        ),
        example_source_identity="aws_source_identity(claims.terraform_run_id)",
        shared_issuer=True,
        max_token_age=7200,
        _build=lambda p: ("https://app.terraform.io", _own_audience(p), None),
    ),
    IssuerPreset(
        key="bitbucket",
        label="Bitbucket Pipelines",
        issuer_id="bitbucket",
        description="Steps with `oidc: true` ($BITBUCKET_STEP_OIDC_TOKEN). Repository settings → OpenID Connect "
        "shows the workspace's identity provider URL and audience.",
        parameters=(
            PresetParameter(
                "workspace",
                "Workspace",
                "the workspace slug, as in bitbucket.org/WORKSPACE",
                pattern=_SLUG,
                pattern_message="Letters, digits and inner hyphens.",
            ),
            PresetParameter(
                "workspace_uuid",
                "Workspace UUID",
                "the audience is ari:cloud:bitbucket::workspace/UUID",
                pattern=_UUID,
                pattern_message="A UUID, with or without braces.",
            ),
        ),
        claims=_BITBUCKET_CLAIMS,
        example_when="claims.branchName == 'main'",
        example_tags=(
            ("repository", "aws_tag(claims.repositoryUuid)", False),
            ("branch", "aws_tag(claims.branchName)", False),
        ),
        max_token_age=3600,
        _build=lambda p: (
            f"https://api.bitbucket.org/2.0/workspaces/{p['workspace']}/pipelines-config/identity/oidc",
            [f"ari:cloud:bitbucket::workspace/{p['workspace_uuid'].strip('{}').lower()}"],
            None,
        ),
    ),
    IssuerPreset(
        key="kubernetes",
        label="Kubernetes service accounts",
        issuer_id="kubernetes",
        description="Projected service account tokens of a cluster whose issuer is not reachable from jwtex: "
        "paste its JWKS (kubectl get --raw /openid/v1/jwks).",
        parameters=(
            PresetParameter("url", "Service account issuer", "kubectl get --raw /.well-known/openid-configuration"),
            PresetParameter(
                "jwks", "JWKS (public keys)", "the output of kubectl get --raw /openid/v1/jwks", multiline=True
            ),
        ),
        claims=_KUBERNETES_CLAIMS,
        example_when="claims.sub == 'system:serviceaccount:deploy:ci'",
        algorithms=("RS256", "ES256"),
        _build=lambda p: (_issuer_url(p["url"]), [STS_AUDIENCE], _static_jwks(p["jwks"])),
    ),
)

_BY_KEY = {preset.key: preset for preset in PRESETS}


def preset_claim_types(issuers: Sequence[tuple[str, bool]]) -> dict[str, tuple[str, str]]:
    """claim → (its documented type, the platform that documents it), for the issuers a rule
    applies to, given as (issuer URL, has a static JWKS); the first issuer's word wins."""
    types: dict[str, tuple[str, str]] = {}
    for url, has_static_jwks in issuers:
        preset = preset_for_issuer(url, has_static_jwks=has_static_jwks)
        for claim, kind in preset.claim_types.items() if preset is not None else ():
            types.setdefault(claim, (kind, preset.label))
    return types


def preset_get(key: str) -> IssuerPreset | None:
    return _BY_KEY.get(key)


def preset_for_issuer(issuer_url: str, *, has_static_jwks: bool = False) -> IssuerPreset | None:
    """The preset an issuer URL most likely came from (for claim help and CI snippets)."""
    if issuer_url == "https://token.actions.githubusercontent.com":
        return _BY_KEY["github"]
    if issuer_url.startswith("https://token.actions.githubusercontent.com/"):
        return _BY_KEY["github-enterprise"]
    if issuer_url == "https://gitlab.com":
        return _BY_KEY["gitlab"]
    if issuer_url.startswith("https://oidc.circleci.com/org/"):
        return _BY_KEY["circleci"]
    if issuer_url == "https://agent.buildkite.com":
        return _BY_KEY["buildkite"]
    if issuer_url == "https://app.terraform.io":
        return _BY_KEY["terraform-cloud"]
    if issuer_url.startswith("https://api.bitbucket.org/2.0/workspaces/"):
        return _BY_KEY["bitbucket"]
    if "gitlab" in (urlsplit(issuer_url).hostname or ""):
        return _BY_KEY["gitlab-self-managed"]
    host = urlsplit(issuer_url).hostname or ""
    if (host.startswith("oidc.eks.") and host.endswith(".amazonaws.com")) or (
        has_static_jwks and any(word in issuer_url for word in ("kubernetes", "k8s", ".svc"))
    ):
        return _BY_KEY["kubernetes"]
    return None
