"""Copy-paste CI jobs for a tenant: a GitHub Actions workflow and a GitLab CI job that exchange
their platform's OIDC token at the tenant (raw endpoint, ``Content-Type: application/jwt``) and
point the AWS SDKs at the role (``AWS_ROLE_ARN`` + ``AWS_WEB_IDENTITY_TOKEN_FILE``). Pure.

Every value is written for what reads it (exchange.console.snippet_quoting): YAML scalars that read
back as themselves, GitHub expressions and GitLab variables that cannot start inside a value,
URLs in scripts percent-encoded and single-quoted, and comments on one printable line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from ..core.aws import STS_AUDIENCE
from .snippet_quoting import comment_text, gha_literal, gitlab_literal, sh_url, yaml_scalar, yaml_str

__all__ = ["GITHUB_WORKFLOW_HEAD", "CiSnippets", "ci_snippets_render"]


@dataclass(frozen=True)
class CiSnippets:
    github_actions: str
    gitlab_ci: str


# How both GitHub jobs (this one and the client's, ci_client_setup.py) begin: the workflow, its
# triggers and the job's permissions, up to the job's environment.
GITHUB_WORKFLOW_HEAD = (
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
)


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
    tenant and assume the role (the first account's; the others are named in a comment).
    ``*_audiences``: what the tenant's issuer of that platform accepts, to say so when it does
    not accept the audience the job asks for."""
    return CiSnippets(
        github_actions=_github_actions(issuer_url, role_arns, region, github_issuer_id, github_audiences),
        gitlab_ci=_gitlab_ci(issuer_url, role_arns, region, gitlab_issuer_id, gitlab_audiences),
    )


def _gha_comment(value: str) -> str:
    return gha_literal(comment_text(value))


def _ci_notes(
    issuer_url: str, issuer_id: str | None, audiences: Sequence[str] | None, *, indent: str, comment=comment_text
) -> list[str]:
    """Why the job asks for this tenant's issuer URL as audience (a token minted for jwtex must
    not also open AWS roles that trust the CI platform directly: whoever sees it on its way here
    could assume those), and a word when the tenant's issuer does not accept that audience."""
    notes = [
        f"{indent}# The audience is this tenant's issuer URL, not {STS_AUDIENCE}: a token meant for",
        f"{indent}# jwtex then opens no AWS role that trusts the CI platform directly.",
    ]
    if issuer_id is not None and audiences is not None and issuer_url not in audiences:
        notes.append(
            f"{indent}# Issuer {comment(issuer_id)} does not accept this audience yet: add "
            f"{comment(issuer_url)} to its audiences."
        )
    return notes


def _role_lines(role_arns: Sequence[str], variable: str, *, indent: str, scalar, comment) -> list[str]:
    others = [
        f"{indent}# in account {comment((arn.split(':') + [''] * 5)[4])}: {comment(arn)}" for arn in role_arns[1:]
    ]
    return [*others, f"{indent}{variable}: {scalar(role_arns[0])}"]


def _exchange_url(issuer_url: str, issuer_id: str) -> str:
    return f"{issuer_url}/exchange?issuerId={quote(issuer_id, safe='')}"


def _github_actions(
    issuer_url: str,
    role_arns: Sequence[str],
    region: str,
    github_issuer_id: str | None,
    github_audiences: Sequence[str] | None,
) -> str:
    def scalar(value: str) -> str:  # GitHub evaluates ${{ }} in env values and in run scripts, comments included
        return yaml_scalar(gha_literal(value))

    gh_id = github_issuer_id or "github"
    github = [
        "# .github/workflows/deploy.yml",
        *(
            ["# No GitHub Actions issuer in this tenant yet: add one from the GitHub preset first."]
            if github_issuer_id is None
            else []
        ),
        *GITHUB_WORKFLOW_HEAD,
        *_role_lines(role_arns, "AWS_ROLE_ARN", indent="      ", scalar=scalar, comment=_gha_comment),
        f"      AWS_REGION: {scalar(region)}",
        # STS API Reference, AssumeRoleWithWebIdentity: RoleSessionName is the caller's, 2-64 of [\w+=,.@-];
        # from the run, CloudTrail names it (digits and hyphens: always within).
        "      AWS_ROLE_SESSION_NAME: gh-${{ github.run_id }}-${{ github.run_attempt }}  # the run, in CloudTrail",
        "    steps:",
        "      - name: Exchange the GitHub token at jwtex",
        "        run: |",
        *_ci_notes(issuer_url, github_issuer_id, github_audiences, indent="          ", comment=_gha_comment),
        f'          # (in actions/github-script: core.getIDToken("{_gha_comment(issuer_url)}"))',
        "          upstream=$(curl -sS --fail-with-body \\",
        '            -H "Authorization: bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN" \\',
        f'            "$ACTIONS_ID_TOKEN_REQUEST_URL&audience={quote(issuer_url, safe="")}" | jq -r .value)',
        '          curl -sS --fail-with-body -H "Content-Type: application/jwt" --data-binary "$upstream" \\',
        f'            -o "$RUNNER_TEMP/jwtex.jwt" {sh_url(_exchange_url(issuer_url, gh_id))}',
        '          echo "AWS_WEB_IDENTITY_TOKEN_FILE=$RUNNER_TEMP/jwtex.jwt" >> "$GITHUB_ENV"',
        "      # The AWS CLI and SDKs now assume AWS_ROLE_ARN with the jwtex token",
        "      # (valid for the rule's lifetime, 15 minutes by default: exchange again in long jobs).",
        "      - run: aws sts get-caller-identity",
        "",
    ]
    return "\n".join(github)


def _gitlab_ci(
    issuer_url: str,
    role_arns: Sequence[str],
    region: str,
    gitlab_issuer_id: str | None,
    gitlab_audiences: Sequence[str] | None,
) -> str:
    def scalar(value: str) -> str:  # GitLab expands $VARIABLES in variables: and id_tokens: aud:
        return yaml_scalar(gitlab_literal(value))

    gl_id = gitlab_issuer_id or "gitlab"
    gitlab = [
        "# .gitlab-ci.yml",
        *(
            ["# No GitLab issuer in this tenant yet: add one from a GitLab preset first."]
            if gitlab_issuer_id is None
            else []
        ),
        "deploy:",
        "  image:",
        "    name: amazon/aws-cli:latest  # any image with curl and the AWS CLI",
        '    entrypoint: [""]',
        "  id_tokens:",
        *_ci_notes(issuer_url, gitlab_issuer_id, gitlab_audiences, indent="    "),
        "    JWTEX_UPSTREAM_TOKEN:",
        f"      aud: {yaml_str(gitlab_literal(issuer_url))}",
        "  variables:",
        *_role_lines(role_arns, "AWS_ROLE_ARN", indent="    ", scalar=scalar, comment=comment_text),
        f"    AWS_DEFAULT_REGION: {scalar(region)}",
        "    AWS_ROLE_SESSION_NAME: gl-${CI_JOB_ID}  # the job, in CloudTrail (2-64 of [\\w+=,.@-])",
        "  script:",
        '    - export AWS_WEB_IDENTITY_TOKEN_FILE="$(mktemp)"',
        "    - >-",
        '      curl -sS --fail-with-body -H "Content-Type: application/jwt"',
        '      --data-binary "$JWTEX_UPSTREAM_TOKEN" -o "$AWS_WEB_IDENTITY_TOKEN_FILE"',
        f"      {sh_url(_exchange_url(issuer_url, gl_id))}",
        "    - aws sts get-caller-identity",
        "",
    ]
    return "\n".join(gitlab)
