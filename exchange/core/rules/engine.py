"""Tenant rules: compile CEL once, evaluate per exchange → ``Decision`` (docs/rules.md#how-rules-decide).
Pure.

The service layer turns ``Rule`` rows into ``RuleSpec`` values, compiles them with
``rule_compile`` (cached per tenant in its runtime) and calls ``decide`` once per exchange;
the simulator calls the same ``decide`` with a trace.

Security invariants:

* The first rule whose issuers include the token's issuer and whose ``when`` evaluates to
  exactly ``True`` decides. Anything else the engine may produce (``False``, a non-bool,
  an exception of any kind — the Rust engine can raise non-``Exception`` panics) never
  grants: ``False`` falls through to the next rule, everything else ends the evaluation
  with ``AccessDenied``.
* A matching ``allow`` rule whose outputs (subject, session tags, extra claims, source identity, audience)
  cannot be produced, or break the AWS limits, denies as well.
* Client-facing descriptions name at most a rule, a tag key or a claim name, never a
  claim value; the details go into ``reason`` (audit and log).
* Cost (docs/rules.md#rule-cost-budget): every rule is charged its worst-case cost (``budget``)
  before it runs, at the bound the exchange's claims fit (measured once, only when the worst
  case at the largest claims would not fit anyway). A rule over its own budget, or one that
  would take the evaluation over ``EXCHANGE_COST_BUDGET``, denies — "over its cost budget" —
  before the engine runs it, so one evaluation never costs more than the budget.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cel

from ..aws import aws_source_identity, aws_tag
from ..errors import AccessDenied, ExchangeError
from ..limits import EXCHANGE_COST_BUDGET, RULE_COST_BUDGET
from ..values import Decision, RuleTrace
from .cel_guard import PASSTHROUGH, PROFILE_STEPS, claims_step
from .compiled import CompiledRule, Delegation
from .outputs import EvaluationError, program_execute, rule_allow, rule_denial

__all__ = ["RULE_FUNCTIONS", "compiled_rules_decide"]


# --------------------------------------------------------------------------- evaluation

# The functions rules may call besides CEL's own (docs/rules.md#cel-in-rules).
RULE_FUNCTIONS = {"aws_tag": aws_tag, "aws_source_identity": aws_source_identity}


def _make_context(*, claims: Mapping[str, Any], issuer_id: str) -> Any:
    try:
        return cel.Context(
            variables={"claims": claims if type(claims) is dict else dict(claims), "issuer": issuer_id},
            functions=RULE_FUNCTIONS,
        )
    except PASSTHROUGH:
        raise
    except BaseException as exc:  # noqa: BLE001 - a pyo3 PanicException too: an error, never an answer
        return EvaluationError(exc)


class _Evaluation:
    """One evaluation over one token's claims: the CEL context and the claims' size, each
    computed once and only if needed, the cost charged so far, and the trace (when the simulator
    wants one)."""

    def __init__(self, *, issuer_id: str, claims: Mapping[str, Any], trace: list[RuleTrace] | None) -> None:
        self.issuer_id = issuer_id
        self.claims = claims
        self.trace = trace
        self._context: Any = None
        self.step = len(PROFILE_STEPS) - 1  # assumed until a charge would not fit; then measured
        self.measured = False
        self.why_large = ""
        self.charged: list[tuple[float, ...]] = []
        self.spent = 0.0  # cost units charged so far, at self.step

    def note(self, rule: CompiledRule, applies: bool, result: str, error: str | None = None) -> None:
        if self.trace is not None:
            self.trace.append(RuleTrace(rule.rule_id, rule.name, applies, result, error))

    @property
    def context(self) -> Any:
        if self._context is None:
            self._context = _make_context(claims=self.claims, issuer_id=self.issuer_id)
        return self._context

    def charge(self, rule: CompiledRule, costs: tuple[float, ...]) -> None:
        """Count ``costs`` (one of the rule's, per claims step) before running them; deny when the
        rule may not run or the evaluation would go over its budget."""
        cost = rule.cost
        spent = self.spent + costs[self.step]
        if spent <= EXCHANGE_COST_BUDGET and cost.totals[self.step] <= RULE_COST_BUDGET:  # the usual case
            self.charged.append(costs)
            self.spent = spent
            return
        if cost.over_budget:
            self.refuse(rule, f"is over its cost budget: {cost.over_budget}")
        if not self.measured:  # the worst case does not fit: measure the claims, once
            self.measured = True
            self.step, self.why_large = claims_step(self.claims)
            self.spent = sum(c[self.step] for c in self.charged)
            spent = self.spent + costs[self.step]
        if cost.totals[self.step] > RULE_COST_BUDGET:
            self.refuse(
                rule,
                f"is over its cost budget for claims this large: {self.why_large}",
                " cannot be evaluated over claims this large.",
            )
        if spent > EXCHANGE_COST_BUDGET:
            before = f"{len(self.charged)} evaluation{'' if len(self.charged) == 1 else 's'} before it"
            self.refuse(
                rule,
                f"is over the exchange's cost budget: {spent:,.0f} cost units with the {before}, over "
                f"{EXCHANGE_COST_BUDGET:,}",
            )
        self.charged.append(costs)
        self.spent = spent

    def refuse(self, rule: CompiledRule, reason: str, description: str = " is over its cost budget.") -> None:
        self.note(rule, True, "error", reason)
        raise rule_denial(rule, description, f" {reason}")

    def matches(self, rule: CompiledRule) -> bool:
        """Whether the rule's condition is exactly true; anything but a boolean denies."""
        cost = rule.cost
        if cost is not None:
            step = self.step  # charge()'s usual case, inline: it runs for every rule of every exchange
            spent = self.spent + cost.when[step]
            if spent <= EXCHANGE_COST_BUDGET and cost.totals[step] <= RULE_COST_BUDGET:
                self.charged.append(cost.when)
                self.spent = spent
            else:
                self.charge(rule, cost.when)
        try:
            matched = program_execute(rule.when, self.context)
            if not isinstance(matched, bool):
                raise EvaluationError(f"the condition returned {type(matched).__name__}, not bool")
        except EvaluationError as exc:
            # Not a match, but never a grant either: an error ends the evaluation (docs/rules.md#how-rules-decide).
            self.note(rule, True, "error", str(exc))
            raise rule_denial(rule, " could not be evaluated.", f": condition failed: {exc}") from None
        if not matched:
            self.note(rule, True, "not matched")
        return matched


def _decide(
    rules: Sequence[CompiledRule],
    *,
    issuer_id: str,
    claims: Mapping[str, Any],
    requested_audience: str | None,
    default_audience: str,
    max_lifetime: int,
    trace: list[RuleTrace] | None,
) -> Decision | Delegation:
    """The evaluation behind ``decide``. With ``trace``, appends one entry per rule it looks at,
    up to and including the rule that decides; ``decide`` fills in the rest."""
    evaluation = _Evaluation(issuer_id=issuer_id, claims=claims, trace=trace)
    applicable = 0
    for rule in rules:
        if issuer_id not in rule.issuers:
            evaluation.note(rule, False, "skipped (other issuer)")
            continue
        applicable += 1
        if not evaluation.matches(rule):
            continue
        if rule.effect == "mapper":
            evaluation.note(rule, True, "matched: the mapper decides")
            return Delegation(rule)
        if rule.effect != "allow":  # "deny", and anything unexpected, denies
            evaluation.note(rule, True, "matched")
            raise rule_denial(rule, " denies this exchange.", " (deny) matched")
        if rule.cost is not None:
            evaluation.charge(rule, rule.cost.outputs)
        try:
            decision = rule_allow(
                rule,
                evaluation.context,
                requested_audience=requested_audience,
                default_audience=default_audience,
                max_lifetime=max_lifetime,
            )
        except ExchangeError as exc:
            evaluation.note(rule, True, "matched", exc.reason)
            raise
        evaluation.note(rule, True, "matched")
        return decision
    raise AccessDenied(
        "No rule allows this exchange.",
        reason=f"no rule matched for issuer {issuer_id!r} ({applicable} of {len(rules)} rules apply to it)",
    )


def compiled_rules_decide(
    rules: Sequence[CompiledRule],
    *,
    issuer_id: str,
    claims: Mapping[str, Any],
    requested_audience: str | None,
    default_audience: str,
    max_lifetime: int,
    trace: list[RuleTrace] | None = None,
) -> Decision | Delegation:
    """Run the tenant's rules over verified claims; raise ``AccessDenied`` (or its subclass
    ``AudienceNotAllowed``) unless an ``allow`` rule decides. With ``trace`` (the simulator),
    one entry per rule is appended: what each rule did, and which were never looked at."""
    seen = len(trace) if trace is not None else 0
    try:
        return _decide(
            rules,
            issuer_id=issuer_id,
            claims=claims,
            requested_audience=requested_audience,
            default_audience=default_audience,
            max_lifetime=max_lifetime,
            trace=trace,
        )
    finally:
        if trace is not None:
            for rule in rules[len(trace) - seen :]:
                applies = issuer_id in rule.issuers
                trace.append(
                    RuleTrace(
                        rule.rule_id, rule.name, applies, "not evaluated" if applies else "skipped (other issuer)"
                    )
                )
