"""The claims each CI platform's tokens carry, for the presets (``presets``): what each holds (the
rule editor's help), the JSON type of those whose type matters to a rule, and session tags worth
emitting. Pure values. Sources: each platform's OIDC documentation (see ``presets``).
"""

from __future__ import annotations

# GitHub's immutable subject ("OpenID Connect" concepts, "Immutable subject claims"; changelog
# https://github.blog/changelog/2026-04-23-immutable-subject-claims-for-github-actions-oidc-tokens/):
# repositories created or renamed from 15 July 2026 on, and those whose admins opt in, send
# repo:OWNER@OWNER_ID/REPO@REPO_ID:… — the others keep repo:OWNER/REPO:…; rules meet both forms.
# Repository custom properties (changelog https://github.blog/changelog/2026-03-12-actions-oidc-tokens-now-support-repository-custom-properties):
# each property the organization adds to its tokens arrives as repo_property_NAME.
GITHUB_CLAIMS = (
    (
        "sub",
        "repo:OWNER/REPO:ref:refs/heads/main (or :environment:NAME, :pull_request); repositories created or "
        "renamed since 15 July 2026 (and those opted in): repo:OWNER@OWNER_ID/REPO@REPO_ID:ref:… — the "
        "immutable ids inside it",
    ),
    ("repository", "OWNER/REPO"),
    ("repository_owner", "the organization or user"),
    ("repository_id / repository_owner_id", "numeric ids (stable across renames)"),
    ("ref", "refs/heads/main, refs/tags/v1 …"),
    ("ref_type", "branch or tag"),
    ("ref_protected", '"true" when the ref is protected'),
    ("sha", "commit"),
    ("environment", "deployment environment, when the job has one"),
    ("actor / actor_id", "who triggered the run"),
    ("event_name", "push, pull_request, workflow_dispatch …"),
    ("workflow / workflow_ref / job_workflow_ref", "workflow name and file@ref (reusable workflows)"),
    ("run_id / run_number / run_attempt", "the run"),
    ("repository_visibility", "public, private or internal"),
    ("runner_environment", "github-hosted or self-hosted"),
    (
        "repo_property_NAME",
        "a repository custom property the organization adds to its tokens (e.g. repo_property_team)",
    ),
)

# GitLab ("OpenID Connect (OIDC) Authentication Using ID Tokens", https://docs.gitlab.com/ci/secrets/id_token_authentication/,
# and the merge request that added them, https://gitlab.com/gitlab-org/gitlab/-/merge_requests/202241): in a
# pipeline for a merge request from a fork that runs in the parent project, project_* and namespace_* name the
# fork (whose code runs), job_project_* and job_namespace_* the project the job runs in.
GITLAB_CLAIMS = (
    ("sub", "project_path:GROUP/PROJECT:ref_type:branch:ref:main"),
    ("namespace_path / namespace_id", "the group or user"),
    ("project_path / project_id", "GROUP/PROJECT — the fork's, in a pipeline for a merge request from a fork"),
    (
        "job_project_path / job_project_id / job_namespace_path / job_namespace_id",
        "the project (and group) the job runs in: the parent project, in a pipeline for a merge request from a fork",
    ),
    ("ref / ref_type", "branch or tag name, and which"),
    ("ref_protected", '"true" when the ref is protected'),
    ("environment / environment_protected / deployment_tier", "deployment environment"),
    ("pipeline_id / pipeline_source / job_id", "the pipeline and job"),
    ("user_login / user_id / user_email", "who started the pipeline"),
    ("sha", "commit"),
    ("runner_environment", "gitlab-hosted or self-hosted"),
    ("ci_config_ref_uri", "the pipeline definition file@ref"),
    ("project_visibility", "public, internal or private"),
)

CIRCLECI_CLAIMS = (
    ("sub", "org/ORG_ID/project/PROJECT_ID/user/USER_ID"),
    ("aud", "the organization id"),
    ("oidc.circleci.com/project-id", "read as claims['oidc.circleci.com/project-id']"),
    ("oidc.circleci.com/vcs-origin", "e.g. github.com/octo-org/app"),
    ("oidc.circleci.com/vcs-ref", "e.g. refs/heads/main"),
    ("oidc.circleci.com/context-ids", "contexts the job uses (list)"),
    ("oidc.circleci.com/ssh-rerun", "true for an SSH re-run"),
)

BUILDKITE_CLAIMS = (
    ("sub", "organization:ORG:pipeline:PIPELINE:ref:REF:commit:SHA:step:STEP"),
    ("organization_slug / organization_id", "the organization — check it: the issuer is shared"),
    ("pipeline_slug / pipeline_id", "the pipeline"),
    ("build_number / build_branch / build_tag / build_commit / build_source", "the build"),
    ("step_key / job_id / agent_id", "the job"),
    ("runner_environment", "buildkite-hosted or self-hosted"),
)

TFC_CLAIMS = (
    ("sub", "organization:ORG:project:PROJECT:workspace:WORKSPACE:run_phase:plan|apply"),
    ("terraform_organization_name / terraform_organization_id", "the organization — check it: the issuer is shared"),
    ("terraform_project_name / terraform_project_id", "the project"),
    ("terraform_workspace_name / terraform_workspace_id / terraform_full_workspace", "the workspace"),
    ("terraform_run_phase", "plan or apply"),
    ("terraform_run_id", "the run"),
)

BITBUCKET_CLAIMS = (
    ("sub", "{REPOSITORY_UUID}:{STEP_UUID} (or with the deployment environment)"),
    ("workspaceUuid", "the workspace"),
    ("repositoryUuid", "the repository"),
    ("pipelineUuid / stepUuid", "the pipeline and step"),
    ("deploymentEnvironmentUuid", "the deployment environment, if any"),
    ("branchName", "the branch"),
)

KUBERNETES_CLAIMS = (
    ("sub", "system:serviceaccount:NAMESPACE:NAME"),
    ("kubernetes.io", "a map: claims['kubernetes.io'].namespace, .serviceaccount.name, .pod.name …"),
)


# GitHub ("About security hardening with OpenID Connect", the example token): every claim but
# the times is a string, ids and counters included.
GITHUB_TYPES = dict.fromkeys(
    (
        "sub",
        "repository",
        "repository_owner",
        "repository_id",
        "repository_owner_id",
        "ref",
        "ref_type",
        "ref_protected",
        "sha",
        "environment",
        "actor",
        "actor_id",
        "event_name",
        "workflow",
        "workflow_ref",
        "workflow_sha",
        "job_workflow_ref",
        "job_workflow_sha",
        "run_id",
        "run_number",
        "run_attempt",
        "repository_visibility",
        "runner_environment",
        "head_ref",
        "base_ref",
        "enterprise",
        "enterprise_id",
    ),
    "string",
)
# GitLab ("OpenID Connect (OIDC) Authentication Using ID Tokens", the example token): ids as strings,
# runner_id a number.
GITLAB_TYPES = {
    **dict.fromkeys(
        (
            "namespace_id",
            "namespace_path",
            "project_id",
            "project_path",
            "job_project_id",
            "job_project_path",
            "job_namespace_id",
            "job_namespace_path",
            "user_id",
            "user_login",
            "user_email",
            "pipeline_id",
            "pipeline_source",
            "job_id",
            "ref",
            "ref_type",
            "ref_path",
            "ref_protected",
            "environment",
            "environment_protected",
            "deployment_tier",
            "sha",
            "runner_environment",
            "project_visibility",
            "ci_config_ref_uri",
            "ci_config_sha",
        ),
        "string",
    ),
    "runner_id": "number",
}

GITHUB_TAGS = (
    ("repository", "claims.repository", False),
    ("ref", "aws_tag(claims.ref)", False),
    ("actor", "aws_tag(claims.actor)", False),  # dependabot[bot], renovate[bot]
    ("workflow", "aws_tag(claims.workflow)", False),
    ("environment", "aws_tag(claims.environment)", True),  # only jobs with an environment have one
    ("team", "aws_tag(claims.repo_property_team)", True),  # a custom property "team", where the organization sends it
)
GITLAB_TAGS = (
    ("project", "claims.project_path", False),
    ("ref", "aws_tag(claims.ref)", False),
    ("user", "aws_tag(claims.user_login)", False),
    ("environment", "aws_tag(claims.environment)", True),
    # Where the job runs (the parent project of a fork's merge request); GitLab 18.3 and later send it.
    ("job_project", "claims.job_project_path", True),
)
# What the presets suggest for a rule's source identity (docs/rules.md#source-identity): who ran the job.
GITHUB_SOURCE_IDENTITY = "aws_source_identity(claims.actor)"
GITLAB_SOURCE_IDENTITY = "aws_source_identity(claims.user_login)"
