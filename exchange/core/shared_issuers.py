"""Owner pinning (docs/rules.md#owner-pinning): the CI issuers every customer of a platform shares, and why an
allow rule for one must test who owns the repository or project. Pure; the admin's rule form
and ``jwtex_apply`` both ask ``owner_pinning_problem``.

The risk, from the public write-ups on GitHub → AWS OIDC trust flaws: a role (here, a rule)
that trusts ``https://token.actions.githubusercontent.com`` and tests only ``ref`` or
``environment`` can be assumed from any repository on github.com; one that tests an owner's
*name* can be taken over when the name is given up and registered again — hence the immutable
``*_id`` claim first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .rules.cel_guard import blank_literals

__all__ = ["SHARED_ISSUERS", "SharedIssuer", "owner_pinning_problem"]


@dataclass(frozen=True)
class SharedIssuer:
    """A CI issuer every customer of the platform shares: a rule that trusts it without testing
    who owns the repository (or project, organization) trusts every user of the platform. The
    first owner claim is the immutable id (names can be renamed and then registered again by
    someone else); the second the name."""

    platform: str
    owner_claims: tuple[str, str]


# The issuers whose iss is the same for every customer. CircleCI (…/org/ORG_ID) and Bitbucket
# (…/workspaces/WORKSPACE/…) put the customer into iss itself, which jwtex compares exactly, and
# a GitHub Enterprise issuer (…/ENTERPRISE) is the enterprise's own: none of them is listed.
SHARED_ISSUERS: Mapping[str, SharedIssuer] = {
    "https://token.actions.githubusercontent.com": SharedIssuer("GitHub Actions (github.com)", ("repository_owner_id", "repository_owner")),
    "https://gitlab.com": SharedIssuer("GitLab.com", ("namespace_id", "namespace_path")),
    "https://agent.buildkite.com": SharedIssuer("Buildkite", ("organization_id", "organization_slug")),
    "https://app.terraform.io": SharedIssuer("HCP Terraform", ("terraform_organization_id", "terraform_organization_name")),
}


def _references_claim(source: str, name: str) -> bool:
    """Whether CEL ``source`` reads ``claims.NAME`` or ``claims['NAME']`` (outside string literals
    for the dotted form; the bracket form is itself a literal)."""
    if re.search(rf"\bclaims\s*\.\s*{re.escape(name)}\b", blank_literals(source)):
        return True
    return re.search(rf"\bclaims\s*\[\s*(['\"]){re.escape(name)}\1\s*\]", source) is not None


def owner_pinning_problem(*, effect: str, when: str, any_owner: bool, issuer_urls: Sequence[str]) -> str | None:
    """Why an allow rule for a shared CI issuer must test an owner claim, when its condition does
    not (and it does not say ``any_owner``); None when nothing is wrong. The admin and
    ``jwtex_apply`` both ask this."""
    if effect != "allow" or any_owner:
        return None
    for url in dict.fromkeys(issuer_urls):
        shared = SHARED_ISSUERS.get(url.rstrip("/"))
        if shared is None or any(_references_claim(when, claim) for claim in shared.owner_claims):
            continue
        stable, name = shared.owner_claims
        return (
            f"This rule allows tokens from {shared.platform}, whose issuer every customer of the platform shares: "
            f"without a test of who owns the repository or project, any of its users could get this token. Test "
            f"claims.{stable} (immutable, recommended) or claims.{name} in the condition, e.g. "
            f"claims.{stable} == '…' — or set any owner if every {shared.platform} user may really be allowed."
        )
    return None
