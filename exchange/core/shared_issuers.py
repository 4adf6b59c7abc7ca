"""Owner pinning (docs/rules.md#owner-pinning): the CI issuers every customer of a platform
shares, and why an allow rule for one must test who owns the repository or project. Pure; the
one rule check (``validators.rule_problems``, so the admin and ``jwtex_apply``) asks ``owner_pinning_problem``.

A *pin* is decided on the parsed condition, not its text: one of the conditions joined by its
top-level ``&&`` compares an owner claim with literals — ``claims.OWNER == '…'`` (either side)
or ``claims.OWNER in ['…', …]`` (string literals). Anything else that mentions the claim pins
nothing (``has(claims.OWNER)``, ``!=``, a negation, a test inside ``||`` or a ternary, a
number, another claim), and the refusal says which.

The risk, from the public write-ups on GitHub → AWS OIDC trust flaws: a role (here, a rule)
that trusts ``https://token.actions.githubusercontent.com`` and tests only ``ref`` or
``environment`` can be assumed from any repository on github.com; one that tests an owner's
*name* can be taken over when the name is given up and registered again — hence the immutable
``*_id`` claim first.

GitHub's ``sub`` pins too when it names the owner whole: ``claims.sub == '…'``, ``in [...]`` or
``claims.sub.startsWith('…')`` with literals that start ``repo:OWNER/`` or — the immutable form
GitHub sends for repositories created or renamed from 15 July 2026 on — ``repo:OWNER@OWNER_ID/``
(exchange/console/preset_claims.py says where the format is documented). ``repo:octo`` pins nothing: it
lets ``repo:octo-evil/…`` in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .rules.cel_checks import children, claim_path
from .rules.cel_parser import expression_parse
from .rules.cel_syntax import (
    Binary,
    Call,
    CelSyntaxError,
    Conditional,
    Expr,
    Ident,
    ListLit,
    Literal,
    Logic,
    Select,
    Unary,
)

__all__ = ["SHARED_ISSUERS", "SharedIssuer", "owner_pinning_problem"]


@dataclass(frozen=True)
class SharedIssuer:
    """A CI issuer every customer of the platform shares: a rule that trusts it without testing
    who owns the repository (or project, organization) trusts every user of the platform. The
    first owner claim is the immutable id (names can be renamed and then registered again by
    someone else); the second the name."""

    platform: str
    owner_claims: tuple[str, str]
    # What a literal compared with claims.sub must start with to pin the owner (None: sub never pins).
    subject_pin: re.Pattern[str] | None = None


# The issuers whose iss is the same for every customer. CircleCI (…/org/ORG_ID) and Bitbucket
# (…/workspaces/WORKSPACE/…) put the customer into iss itself, which jwtex compares exactly, and
# a GitHub Enterprise issuer (…/ENTERPRISE) is the enterprise's own: none of them is listed.
SHARED_ISSUERS: Mapping[str, SharedIssuer] = {
    "https://token.actions.githubusercontent.com": SharedIssuer(
        "GitHub Actions (github.com)",
        ("repository_owner_id", "repository_owner"),
        # repo:OWNER/ or repo:OWNER@OWNER_ID/ (GitHub account names: letters, digits, inner hyphens).
        re.compile(r"repo:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:@[0-9]+)?/"),
    ),
    "https://gitlab.com": SharedIssuer("GitLab.com", ("namespace_id", "namespace_path")),
    "https://agent.buildkite.com": SharedIssuer("Buildkite", ("organization_id", "organization_slug")),
    "https://app.terraform.io": SharedIssuer(
        "HCP Terraform", ("terraform_organization_id", "terraform_organization_name")
    ),
}


def _conjuncts(tree: Expr) -> list[Expr]:
    """The conditions joined by the top-level ``&&`` (through parentheses)."""
    terms, stack = [], [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, Logic) and node.op == "&&":
            stack.extend(reversed(node.terms))
        else:
            terms.append(node)
    return terms


def _string(node: Expr) -> bool:
    return isinstance(node, Literal) and node.kind == "string"


def _subject_pin(term: Expr, pattern: re.Pattern[str] | None) -> bool:
    """``claims.sub`` compared (==, in, startsWith) with literals that each name one owner whole."""
    if pattern is None:
        return False

    def names_owner(node: Expr) -> bool:
        return _string(node) and pattern.match(node.value) is not None

    if isinstance(term, Call):
        return (
            term.function == "startsWith"
            and term.target is not None
            and claim_path(term.target) == "sub"
            and len(term.args) == 1
            and names_owner(term.args[0])
        )
    if isinstance(term, Binary) and term.op == "==":
        return any(
            claim_path(a) == "sub" and names_owner(b) for a, b in ((term.left, term.right), (term.right, term.left))
        )
    if isinstance(term, Binary) and term.op == "in":
        right = term.right
        return (
            claim_path(term.left) == "sub"
            and isinstance(right, ListLit)
            and bool(right.elements)
            and all(names_owner(element) for element in right.elements)
        )
    return False


def _is_pin(term: Expr, owners: tuple[str, ...]) -> bool:
    if not isinstance(term, Binary):
        return False
    if term.op == "==":
        sides = ((term.left, term.right), (term.right, term.left))
        return any(claim_path(a) in owners and _string(b) for a, b in sides)
    if term.op == "in":
        right = term.right
        return (
            claim_path(term.left) in owners
            and isinstance(right, ListLit)
            and bool(right.elements)
            and all(_string(element) for element in right.elements)
        )
    return False


def _why_not(tree: Expr, owners: tuple[str, ...]) -> str:
    """What the condition does with the owner claim instead of pinning it."""
    stack: list[tuple[Expr, tuple[Expr, ...]]] = [(tree, ())]
    while stack:
        node, ancestors = stack.pop()
        tests_presence = isinstance(node, Select) and node.test and isinstance(node.operand, Ident)
        if tests_presence and node.operand.name == "claims" and node.field in owners:
            return f"has(claims.{node.field}) only tests that the claim is there, which it always is"
        if claim_path(node) in owners:
            return _context(claim_path(node), ancestors)
        stack.extend((child, (*ancestors, node)) for child in reversed(list(children(node))))
    return f"it does not test claims.{owners[0]} or claims.{owners[1]}"


def _context(name: str, ancestors: tuple[Expr, ...]) -> str:
    for ancestor in reversed(ancestors):
        if isinstance(ancestor, Logic) and ancestor.op == "||":
            return f"its test of claims.{name} is inside an ||, whose other side lets every owner in"
        if isinstance(ancestor, Unary) and ancestor.op == "!":
            return f"its test of claims.{name} is negated, which lets every other owner in"
        if isinstance(ancestor, Conditional):
            return f"its test of claims.{name} is inside a ternary (?:), whose other branch decides without it"
    parent = ancestors[-1] if ancestors else None
    if isinstance(parent, Binary) and parent.op == "!=":
        return f"claims.{name} != … lets in every owner but one"
    if isinstance(parent, Binary) and parent.op in ("==", "in"):
        other = parent.right if parent.op == "in" or claim_path(parent.left) == name else parent.left
        if isinstance(other, Literal) and other.kind != "string":
            return f"it compares claims.{name} with the {other.kind} {other.value!r}, but the claim is a string"
        return f"it compares claims.{name} with something other than string literals"
    return f"it uses claims.{name} without comparing it (== or in) with string literals"


def owner_pinning_problem(*, effect: str, when: str, any_owner: bool, issuer_urls: Sequence[str]) -> str | None:
    """Why an allow rule for a shared CI issuer must pin an owner claim, when its condition does
    not (and it does not say ``any_owner``); None when nothing is wrong. Asked by the one rule
    check (``validators.rule_problems``). A condition that does not parse is refused for that already."""
    if effect != "allow" or any_owner:
        return None
    try:
        tree = expression_parse(when) if isinstance(when, str) else None
    except CelSyntaxError:
        return None
    if tree is None:
        return None
    for url in dict.fromkeys(issuer_urls):
        shared = SHARED_ISSUERS.get(url.rstrip("/"))
        if shared is None or any(
            _is_pin(term, shared.owner_claims) or _subject_pin(term, shared.subject_pin) for term in _conjuncts(tree)
        ):
            continue
        stable, name = shared.owner_claims
        return (
            f"This rule allows tokens from {shared.platform}, whose issuer every customer of the platform shares, "
            f"and its condition pins no owner: {_why_not(tree, shared.owner_claims)}. Without such a pin any of the "
            f"platform's users could get this token. Add claims.{stable} == '…' (immutable, recommended; or "
            f"claims.{name}, or in ['…', '…']"
            + (
                ", or claims.sub.startsWith('repo:OWNER@OWNER_ID/'), the immutable subject"
                if shared.subject_pin
                else ""
            )
            + ") as one of the conditions joined by && — or set any owner if every "
            f"{shared.platform} user may really be allowed."
        )
    return None
