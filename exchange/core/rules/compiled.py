"""A tenant rule compiled: its CEL programs built once (cached per tenant in its runtime), its
worst-case cost measured, what the rule editor would warn about. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cel

from .budget import RuleCost, rule_cost
from .spec import RuleSpec, RuleSyntaxError, findings_of, rule_spec_check

__all__ = ["CompiledRule", "Delegation", "rule_compile"]


@dataclass(frozen=True, eq=False)
class CompiledRule:
    """A ``RuleSpec`` with its CEL programs; build it with ``rule_compile``."""

    spec: RuleSpec
    when: cel.Program = field(repr=False)
    subject: cel.Program = field(repr=False)
    session_tags: tuple[tuple[str, cel.Program], ...] = field(repr=False)
    claims: tuple[tuple[str, cel.Program], ...] = field(repr=False)
    source_identity: cel.Program | None = field(default=None, repr=False)  # None: the rule sets none
    # Worst-case cost units of the condition and of the outputs at each step of the claims'
    # size (budget.RuleCost); None for a rule built by hand (tests), which is not charged.
    cost: RuleCost | None = field(default=None, repr=False)
    # What the rule editor would warn about (a token that may be too long…), for the simulator.
    warnings: tuple[tuple[str, str], ...] = ()

    @property
    def rule_id(self) -> int | None:
        return self.spec.rule_id

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def issuers(self) -> frozenset[str]:
        return self.spec.issuers

    @property
    def effect(self) -> str:
        return self.spec.effect


@dataclass(frozen=True)
class Delegation:
    """A ``mapper`` rule matched: its webhook decides and shapes the token (docs/mapper.md#mapper-webhooks)."""

    rule: CompiledRule

    def request(self, *, issuer_id: str, claims: Mapping[str, Any]) -> dict[str, Any]:
        """The JSON the mapper is sent, exactly as docs/mapper.md#the-request writes it."""
        return {"version": "1", "issuerId": issuer_id, "claims": dict(claims)}


def rule_compile(spec: RuleSpec, *, claim_types: Mapping[str, tuple[str, str]] | None = None) -> CompiledRule:
    """Compile every expression of ``spec``; raise ``RuleSyntaxError`` (with ``field``) for
    the first problem that keeps it from compiling. What only refuses a rule when it is saved
    (unknown functions, a cost over budget) does not stop a saved rule from compiling: its cost
    is enforced when it runs."""
    problems, expressions = rule_spec_check(spec)
    if problems:
        path, problem = problems[0]
        if isinstance(problem, RuleSyntaxError):
            raise problem.with_field(path)
        raise RuleSyntaxError(problem, field=path)
    return CompiledRule(
        spec=spec,
        when=expressions["when"].program,
        subject=expressions["subject"].program,
        session_tags=tuple((key, expressions[f"session_tags.{key}"].program) for key, _ in spec.session_tags),
        claims=tuple((name, expressions[f"claims.{name}"].program) for name, _ in spec.claims),
        source_identity=expressions["source_identity"].program if spec.source_identity else None,
        cost=rule_cost(expressions),
        warnings=findings_of(spec, expressions, claim_types=claim_types).warnings,
    )
