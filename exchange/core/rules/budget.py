"""What a rule can cost and how long its tokens can be, judged from its expressions. Pure.

**Cost** (docs/rules.md#rule-cost-budget): a rule's cost is the sum of its expressions' worst-case
costs (``cel_cost``) — the condition, then its outputs — at each step of ``PROFILE_STEPS``. A rule
is saved only if it fits ``RULE_COST_BUDGET`` over claims within the bound checked at run time
(``PROFILE_ITERATING``); ``engine`` charges each rule it evaluates at the step the exchange's
claims fall into, and stops at ``EXCHANGE_COST_BUDGET``.

**Token length** (docs/rules.md#checked-when-a-rule-is-saved: every token jwtex emits is one AWS
STS accepts): literals count at their own length, other values at their worst case (a tag value
at AWS's 256 characters). A rule whose *smallest* token is longer than STS accepts is refused;
one whose largest only may be is saved with a warning that gives the figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..aws import (
    MAX_SOURCE_IDENTITY_LENGTH,
    MAX_SUBJECT_LENGTH,
    MAX_TAG_VALUE_LENGTH,
    MAX_WEB_IDENTITY_TOKEN_LENGTH,
    MIN_SOURCE_IDENTITY_LENGTH,
)
from ..limits import EXCHANGE_COST_BUDGET, RULE_COST_BUDGET
from ..minting import token_length_bound
from .cel_cost import costliest_part
from .cel_guard import PROFILE_STEPS, SAVE_STEP, CompiledExpression
from .cel_syntax import Call, Conditional, Expr, Literal

__all__ = ["EXCHANGE_COST_BUDGET", "RULE_COST_BUDGET", "RuleCost", "cost_problem", "rule_cost", "token_length_findings"]


@dataclass(frozen=True, slots=True)
class RuleCost:
    """Worst-case cost units of a rule's condition (``when``) and of the whole rule (``totals``:
    the condition and its outputs) at each ``PROFILE_STEPS`` step; ``over_budget`` says why the
    rule may not run at all (None when it may). Compact: one of these lives per rule per process."""

    when: tuple[float, ...]
    totals: tuple[float, ...]
    over_budget: str | None = None

    @property
    def outputs(self) -> tuple[float, ...]:
        return tuple(total - when for total, when in zip(self.totals, self.when, strict=True))

    def total(self, step: int) -> float:
        return self.totals[step]


def rule_cost(expressions: Mapping[str, CompiledExpression]) -> RuleCost:
    """``expressions`` by field path (``when``, ``subject``, ``session_tags.x`` …)."""
    steps = range(len(PROFILE_STEPS))
    when = expressions["when"].costs if "when" in expressions else (0.0,) * len(PROFILE_STEPS)
    totals = tuple(sum(e.costs[s] for e in expressions.values()) for s in steps)
    total = totals[SAVE_STEP]
    if total <= RULE_COST_BUDGET:
        return RuleCost(when, totals)
    over = (
        f"its worst-case cost is {_figure(total)} units, over the {RULE_COST_BUDGET:,} a rule may take"
        if total < float("inf")
        else "its cost cannot be bounded"
    )
    return RuleCost(when, (float("inf"),) * len(PROFILE_STEPS), over)  # never cheap enough to run


def _figure(units: float) -> str:
    return f"{units:,.0f}"


def cost_problem(expressions: Mapping[str, CompiledExpression]) -> tuple[str, str, int | None, int | None] | None:
    """Why the rule is over ``RULE_COST_BUDGET``: (field path, message, line, column) of its
    costliest expression, where most of that cost is; None when it fits."""
    if rule_cost(expressions).over_budget is None:
        return None
    total = sum(expression.costs[SAVE_STEP] for expression in expressions.values())
    path, worst = max(expressions.items(), key=lambda item: item[1].costs[SAVE_STEP])
    where = costliest_part(worst.tree, PROFILE_STEPS[SAVE_STEP]) if worst.tree is not None else None
    if total == float("inf"):
        message = "jwtex cannot bound what evaluating this costs"
    else:
        message = (
            f"Evaluating this rule can cost up to {_figure(total)} cost units over claims within the limits "
            f"(lists and maps of up to 128 items, 512 in all, 16 KiB of token); a rule may cost at most "
            f"{RULE_COST_BUDGET:,}"
        )
    if where is not None:
        excerpt = worst.source.split("\n")[where.line - 1][where.column - 1 : where.column + 39].strip()
        message += f". Most of it is here: {excerpt}{'…' if len(excerpt) >= 40 else ''}"
    message += (
        ". Comprehensions that build lists (map, filter), long concatenations and patterns with "
        "classes cost the most; test fewer claims, or split the rule."
    )
    return path, message, (where.line if where else None), (where.column if where else None)


# ----------------------------------------------------------------------------- token length

_OPAQUE = "v" * MAX_TAG_VALUE_LENGTH  # an expression's value at its worst (ASCII: see aws.py)


def _literal_text(node: Expr | None) -> str | None:
    """The tag value a literal becomes (engine._tag_value), or None for anything else."""
    if isinstance(node, Literal):
        if node.kind == "string":
            return node.value
        if node.kind in ("int", "uint"):
            return str(node.value)
        if node.kind == "bool":
            return "true" if node.value else "false"
    return None


def _longest(node: Expr | None) -> int:
    """The most characters a tag value can have: a literal's own, a ternary's longer branch,
    aws_tag() at most 256, anything else 256 (the exchange refuses a longer one)."""
    text = _literal_text(node)
    if text is not None:
        return len(text)
    if isinstance(node, Conditional):
        return max(_longest(node.then), _longest(node.otherwise))
    if isinstance(node, Call) and node.function == "aws_tag" and len(node.args) == 1 and node.target is None:
        return min(_longest(node.args[0]), MAX_TAG_VALUE_LENGTH)
    return MAX_TAG_VALUE_LENGTH


def token_length_findings(
    *,
    tags: Sequence[tuple[str, CompiledExpression]],
    optional: frozenset[str],
    transitive: Sequence[str],
    subject: CompiledExpression,
    claim_names: Sequence[str],
    audiences: Sequence[str],
    source_identity: bool = False,
) -> tuple[str | None, str | None]:
    """(error, warning): the error when even the shortest token the rule can make is longer than
    STS accepts, the warning when its longest can be. ``source_identity``: the rule sets one (2 to
    64 characters, docs/rules.md#source-identity)."""
    largest = smallest = 0
    for biggest in (True, False):
        values = []
        for key, expression in tags:
            literal = _literal_text(expression.tree)
            if biggest:
                text = literal if literal is not None else "v" * _longest(expression.tree)
                values.append((key, text if text else ""))
            elif key not in optional:
                values.append((key, literal if literal is not None else ""))
        kept = {key for key, _ in values}
        subject_text = _literal_text(subject.tree)
        length = token_length_bound(
            tags=values,
            transitive_tag_keys=[key for key in transitive if key in kept],
            claim_names=claim_names,
            audiences=audiences,
            subject=subject_text or ("s" * MAX_SUBJECT_LENGTH if biggest else "s"),
            largest=biggest,
            source_identity=(
                "i" * (MAX_SOURCE_IDENTITY_LENGTH if biggest else MIN_SOURCE_IDENTITY_LENGTH)
                if source_identity
                else None
            ),
        )
        largest, smallest = (length, smallest) if biggest else (largest, length)
    tag_words = f"{len(tags)} session tag{'s' if len(tags) != 1 else ''}"
    if smallest > MAX_WEB_IDENTITY_TOKEN_LENGTH:
        return (
            f"Tokens from this rule are at least {smallest:,} characters long ({tag_words}, with every value that "
            f"is not a literal empty); AWS STS accepts at most {MAX_WEB_IDENTITY_TOKEN_LENGTH:,}. Use fewer tags, "
            "shorter keys or fewer transitive keys."
        ), None
    if largest > MAX_WEB_IDENTITY_TOKEN_LENGTH:
        return None, (
            f"Tokens from this rule can be up to {largest:,} characters long ({tag_words}, literals at their "
            f"length and every other value at up to 256 characters); AWS STS accepts at most "
            f"{MAX_WEB_IDENTITY_TOKEN_LENGTH:,}, so an exchange whose values are that long is refused (403)."
        )
    return None, None
