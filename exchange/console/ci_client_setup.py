"""Copy-paste CI jobs that use jwtex's own client: the GitHub Action (``action.yml`` at the root of
the jwtex repository) and the GitLab CI/CD component (``templates/jwtex-token/template.yml``).

Pure: values in, YAML text out. Every value is written as a double-quoted YAML scalar with every
character outside printable ASCII escaped (comments hold values only so quoted), so nothing a
tenant, an operator or a setting holds can change a document's shape or become part of a script
(the Action and the component pass their inputs to their scripts as environment variables, and the
client checks each one again). The curl jobs of ``ci_setup.ci_snippets_render`` stay beside these
as the recipe "without the client".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .ci_setup import GITHUB_WORKFLOW_HEAD

__all__ = ["ACTION_PLACEHOLDER", "COMPONENT_PLACEHOLDER", "CiClientSnippets", "ci_client_snippets_render"]

# Placeholders no runner can resolve (``<`` is in no repository or host name), so a job copied
# before they are replaced fails instead of running someone else's code.
ACTION_PLACEHOLDER = "<owner>/<repository>@<commit>"
COMPONENT_PLACEHOLDER = "<gitlab-host>/<group>/<project>/jwtex-token@<version>"
_ACTION = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(/[A-Za-z0-9_./-]+)?@[A-Za-z0-9_./-]+", re.ASCII)
_COMPONENT = re.compile(
    r"(\$CI_SERVER_FQDN|[A-Za-z0-9.-]+(:[0-9]+)?)(/[A-Za-z0-9_.-]+)+/jwtex-token@[A-Za-z0-9_.~-]+", re.ASCII
)


@dataclass(frozen=True)
class CiClientSnippets:
    github_action: str
    gitlab_component: str
    warnings: tuple[str, ...]


def _q(value: str) -> str:
    """A YAML double-quoted scalar (YAML 1.1 and 1.2, §5.7): printable ASCII as it is, every other
    character escaped (``\\xXX``, ``\\uXXXX``, ``\\UXXXXXXXX``). Not ``json.dumps``: JSON writes a
    character beyond U+FFFF as two ``\\u`` surrogates, which YAML reads as two characters."""
    escaped = []
    for character in value:
        code = ord(character)
        if character in '"\\':
            escaped.append("\\" + character)
        elif 0x20 <= code < 0x7F:
            escaped.append(character)
        else:
            escaped.append(
                f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
            )
    return '"' + "".join(escaped) + '"'


def ci_client_snippets_render(
    *,
    public_url: str,
    tenant_slug: str,
    role_arns: Sequence[str],
    region: str,
    github_issuer_id: str | None,
    github_audiences: Sequence[str] | None,
    gitlab_issuer_id: str | None,
    gitlab_audiences: Sequence[str] | None,
    action: str = "",
    component: str = "",
) -> CiClientSnippets:
    """A GitHub workflow using jwtex's Action and a ``.gitlab-ci.yml`` including its component,
    for this tenant and the first account's role (the others in a comment). ``action`` and
    ``component`` say where the operators keep them (``JWTEX_CI_ACTION``,
    ``JWTEX_CI_COMPONENT``); unset or malformed, placeholders stand in, with a warning. Both ask
    their platform for a token whose audience is ``public_url/t/tenant_slug``, the client's
    default: ``*_audiences`` (what the tenant's issuer of that platform accepts) say when it does
    not accept it."""
    warnings = []
    if not _ACTION.fullmatch(action):
        warnings.append(
            "Set JWTEX_CI_ACTION to where your organisation keeps jwtex's GitHub Action "
            "(OWNER/REPO@COMMIT, the jwtex repository whose root holds action.yml): the workflow "
            "shows a placeholder."
        )
        action = ACTION_PLACEHOLDER
    if not _COMPONENT.fullmatch(component):
        warnings.append(
            "Set JWTEX_CI_COMPONENT to where your organisation keeps jwtex's GitLab CI/CD component "
            "(HOST/GROUP/PROJECT/jwtex-token@VERSION): the pipeline shows a placeholder."
        )
        component = COMPONENT_PLACEHOLDER
    audience = f"{public_url}/t/{tenant_slug}"
    common = {"url": public_url, "tenant": tenant_slug, "role-arn": role_arns[0]}
    return CiClientSnippets(
        github_action=_github_action(
            action,
            {**common, "issuer-id": github_issuer_id},
            role_arns,
            region,
            _issuer_notes("GitHub Actions", "the GitHub preset", github_issuer_id, github_audiences, audience),
        ),
        gitlab_component=_gitlab_component(
            component,
            {**common, "issuer-id": gitlab_issuer_id},
            role_arns,
            region,
            _issuer_notes("GitLab", "a GitLab preset", gitlab_issuer_id, gitlab_audiences, audience),
        ),
        warnings=tuple(warnings),
    )


def _github_action(
    action: str, inputs: dict[str, str | None], role_arns: Sequence[str], region: str, notes: list[str]
) -> str:
    return "\n".join(
        [
            "# .github/workflows/deploy.yml",
            *notes,
            *GITHUB_WORKFLOW_HEAD,
            f"      AWS_REGION: {_q(region)}",
            "    steps:",
            "      # Asks GitHub for a token for this tenant's issuer URL, exchanges it at jwtex (retrying a",
            "      # 503 or 429), renews it in the background before it expires, and sets",
            "      # AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN and AWS_ROLE_SESSION_NAME (gh-RUN-ATTEMPT).",
            f"      - uses: {_q(action)}",
            "        with:",
            *_inputs(inputs, indent="          "),
            *_other_roles(role_arns, indent="      "),
            "      - run: aws sts get-caller-identity",
            "",
        ]
    )


def _gitlab_component(
    component: str, inputs: dict[str, str | None], role_arns: Sequence[str], region: str, notes: list[str]
) -> str:
    return "\n".join(
        [
            "# .gitlab-ci.yml",
            *notes,
            "include:",
            f"  - component: {_q(component)}",
            "    inputs:",
            *_inputs(inputs, indent="      "),
            *_other_roles(role_arns, indent="    "),
            "deploy:",
            "  # The component's job: an ID token for this tenant's issuer URL, exchanged at jwtex and",
            "  # renewed while GitLab's token is accepted; AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN and",
            "  # AWS_ROLE_SESSION_NAME (gl-JOB_ID) for the script. It runs python3: use an image with it.",
            "  extends: .jwtex-token",
            "  image: python:3.12-slim",
            "  variables:",
            f"    AWS_DEFAULT_REGION: {_q(region)}",
            "  script:",
            "    - pip install --quiet awscli",
            "    - aws sts get-caller-identity",
            "",
        ]
    )


def _inputs(values: dict[str, str | None], *, indent: str) -> list[str]:
    order = ("url", "tenant", "issuer-id", "role-arn")
    return [f"{indent}{name}: {_q(values[name])}" for name in order if values.get(name)]


def _issuer_notes(
    platform: str, preset: str, issuer_id: str | None, audiences: Sequence[str] | None, audience: str
) -> list[str]:
    if issuer_id is None:
        return [f"# No {platform} issuer in this tenant yet: add one from {preset} first."]
    if audiences is not None and audience not in audiences:
        return [
            f"# This tenant's {platform} issuer does not accept the audience the job asks for yet:",
            "# add this tenant's issuer URL to its audiences.",
        ]
    return []


def _other_roles(role_arns: Sequence[str], *, indent: str) -> list[str]:
    if len(role_arns) < 2:
        return []
    return [
        f"{indent}# The same role in the tenant's other accounts (role-arn):",
        *(f"{indent}#   {_q(arn)}" for arn in role_arns[1:]),
    ]
