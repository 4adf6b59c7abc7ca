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
* A matching ``allow`` rule whose outputs (subject, session tags, extra claims, audience)
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
from dataclasses import dataclass, field
from typing import Any

import cel

from ..aws import aws_tag, session_tag_value_validate
from ..errors import AccessDenied, AudienceNotAllowed, ExchangeError
from ..limits import DEFAULT_LIFETIME, EXCHANGE_COST_BUDGET, RULE_COST_BUDGET
from ..values import Decision, RuleTrace
from .budget import RuleCost, rule_cost
from .cel_guard import PASSTHROUGH, PROFILE_STEPS, claims_step
from .outputs import EvaluationError, program_execute, json_value, tag_problem, tag_value
from .spec import MAX_SUBJECT_LENGTH, RuleSpec, RuleSyntaxError, rule_spec_check, findings_of

__all__ = ["RULE_FUNCTIONS", "CompiledRule", "Delegation", "rule_compile", "compiled_rules_decide", "rule_audience", "rule_denial"]


@dataclass(frozen=True, eq=False)
class CompiledRule:
    """A ``RuleSpec`` with its CEL programs; build it with ``rule_compile``."""

    spec: RuleSpec
    when: cel.Program = field(repr=False)
    subject: cel.Program = field(repr=False)
    session_tags: tuple[tuple[str, cel.Program], ...] = field(repr=False)
    claims: tuple[tuple[str, cel.Program], ...] = field(repr=False)
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
        cost=rule_cost(expressions),
        warnings=findings_of(spec, expressions, claim_types=claim_types).warnings,
    )


# --------------------------------------------------------------------------- evaluation

# The functions rules may call besides CEL's own (docs/rules.md#cel-in-rules).
RULE_FUNCTIONS = {"aws_tag": aws_tag}


def _make_context(*, claims: Mapping[str, Any], issuer_id: str) -> Any:
    try:
        return cel.Context(
            variables={"claims": claims if type(claims) is dict else dict(claims), "issuer": issuer_id},
            functions=RULE_FUNCTIONS,
        )
    except PASSTHROUGH:
        raise
    except BaseException as exc:
        return EvaluationError(exc)


def _by(rule: CompiledRule) -> dict[str, Any]:
    """The deciding rule, as an ExchangeError names it for the audit record (docs/operations.md#what-a-record-holds)."""
    return {"rule_id": rule.rule_id, "rule_name": rule.name}


def _rule_label(rule: CompiledRule) -> str:
    return f"rule {rule.name!r}" + (f" (id {rule.rule_id})" if rule.rule_id is not None else "")


def rule_denial(
    rule: CompiledRule, description: str, reason: str, cls: type[AccessDenied] = AccessDenied,
) -> AccessDenied:
    """The refusal ``rule`` gives: the client reads ``description``, the audit ``reason`` (the
    mapper's answer is refused the same way, core/rules/mapper_answer.py)."""
    return cls(f"Rule '{rule.name}'{description}", reason=f"{_rule_label(rule)}{reason}", **_by(rule))


def rule_audience(rule: CompiledRule, *, requested: str | None, default: str) -> str:
    """The emitted ``aud``: the rule's (or the tenant's default), or a requested one it allows."""
    spec = rule.spec
    audience = spec.audience or default
    if not requested:  # an empty audience parameter means "not given"
        return audience
    if requested != audience and requested not in spec.audiences:
        raise rule_denial(
            rule, " does not allow the requested audience.",
            f" does not allow audience {requested!r} (allowed: {[audience, *spec.audiences]!r})", AudienceNotAllowed,
        )
    return requested


def _subject(rule: CompiledRule, context: Any) -> str:
    try:
        subject = program_execute(rule.subject, context)
    except EvaluationError as exc:
        raise rule_denial(rule, " could not compute the subject.", f": subject: {exc}") from None
    if not isinstance(subject, str) or not subject or len(subject) > MAX_SUBJECT_LENGTH:
        what = f"a {type(subject).__name__}" if not isinstance(subject, str) else f"a string of {len(subject)} characters"
        raise rule_denial(
            rule, " could not compute the subject.",
            f": subject must be a string of 1 to {MAX_SUBJECT_LENGTH} characters, got {what}",
        )
    return subject


def _session_tags(rule: CompiledRule, context: Any) -> tuple[tuple[str, str], ...]:
    tags: list[tuple[str, str]] = []
    sources = dict(rule.spec.session_tags)
    for key, program in rule.session_tags:
        optional = key in rule.spec.optional_tags
        try:
            value = program_execute(program, context)
        except EvaluationError as exc:
            if optional and isinstance(exc.cause, KeyError):  # the claim is missing: no tag
                continue
            raise rule_denial(rule, f": session tag '{key}' has no valid value.", f": session tag {key!r}: {exc}") from None
        if optional and value in ("", None):
            continue
        try:
            value = tag_value(value)
            session_tag_value_validate(key, value)
        except (EvaluationError, ValueError) as exc:
            raise rule_denial(
                rule, f": session tag '{key}' has no valid value.",
                f": session tag {key!r}: {tag_problem(exc, value, sources[key])}",
            ) from None
        tags.append((key, value))
    return tuple(tags)


def _extra_claims(rule: CompiledRule, context: Any) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    for name, program in rule.claims:
        try:
            extra[name] = json_value(program_execute(program, context), name)
        except (EvaluationError, RecursionError) as exc:
            raise rule_denial(rule, f": claim '{name}' could not be computed.", f": claim {name!r}: {exc}") from None
    return extra


def _allow(
    rule: CompiledRule, context: Any, *, requested_audience: str | None, default_audience: str, max_lifetime: int
) -> Decision:
    """What an allow rule emits; audience first, since refusing a request needs no evaluation."""
    spec = rule.spec
    audience = rule_audience(rule, requested=requested_audience, default=default_audience)
    subject = _subject(rule, context)
    tags = _session_tags(rule, context)
    emitted = {key for key, _ in tags}
    extra = _extra_claims(rule, context)
    lifetime = spec.lifetime if spec.lifetime is not None else DEFAULT_LIFETIME
    return Decision(
        rule_id=spec.rule_id,
        rule_name=spec.name,
        subject=subject,
        audience=audience,
        lifetime=min(lifetime, max_lifetime),
        session_tags=tags,
        transitive_tag_keys=tuple(key for key in spec.transitive_tag_keys if key in emitted),  # optional ones left out
        extra_claims=extra,
    )


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
            self.refuse(rule, f"is over its cost budget for claims this large: {self.why_large}",
                        " cannot be evaluated over claims this large.")
        if spent > EXCHANGE_COST_BUDGET:
            self.refuse(rule, f"is over the exchange's cost budget: {spent:,.0f} cost units with the "
                              f"{len(self.charged)} evaluation(s) before it, over {EXCHANGE_COST_BUDGET:,}")
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
            decision = _allow(
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
                    RuleTrace(rule.rule_id, rule.name, applies, "not evaluated" if applies else "skipped (other issuer)")
                )
