"""exchange.core.rules.cel_cost, cel_regex, budget and the engine's charging: the worst-case cost
of a rule, bounded by construction.

The argument the bound rests on is tested directly: a comprehension's body, costed once with the
whole range as its variable and once with the smallest element, bounds the sum over *any* split
of the range into elements (``f(a) + f(b) ≤ f(a + b) + f(smallest)``). What the units are worth
in CPU time is measured by ``bench/rule_cost.py`` (``make bench``), not here.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from exchange.core.errors import AccessDenied
from exchange.core.rules import engine
from exchange.core.rules.cel_cost import (
    PROFILE_ITERATING,
    SCALAR,
    UNBOUNDED,
    CostEstimator,
    Shape,
    costliest_part,
    expression_cost,
)
from exchange.core.rules.cel_guard import PROFILE_STEPS, expression_compile
from exchange.core.rules.cel_parser import expression_parse
from exchange.core.rules.cel_regex import pattern_cost
from exchange.core.rules.compiled import rule_compile
from exchange.core.rules.engine import compiled_rules_decide
from exchange.core.rules.spec import RuleSpec

OPERANDS = ["x", "claims.s", "claims.g", "'abc'", "1", "[x, x]", "{'k': x}", "issuer"]


@st.composite
def body(draw, depth=0):
    """An expression over the comprehension variable ``x`` (and the claims)."""
    if depth > 2 or draw(st.integers(0, 2)) == 0:
        return draw(st.sampled_from(OPERANDS))

    def sub():
        return draw(body(depth + 1))

    kind = draw(st.integers(0, 8))
    if kind == 0:
        return f"({sub()} + {sub()})"
    if kind == 1:
        return f"({sub()} == {sub()})"
    if kind == 2:
        return f"({sub()} in {sub()})"
    if kind == 3:
        return f"size({sub()})"
    if kind == 4:
        return f"({sub()} ? {sub()} : {sub()})"
    if kind == 5:
        return f"{sub()}.{draw(st.sampled_from(['map', 'filter', 'exists']))}(y, {sub().replace('x', 'y')})"
    if kind == 6:
        return f"{draw(st.sampled_from(['aws_tag', 'aws_source_identity']))}({sub()})"
    if kind == 7:
        return f"{sub()}[{sub()}]"
    return f"{sub()}.contains({sub()})"


shapes = st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 20000)), min_size=1, max_size=6)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=body(), parts=shapes)
# What max() would get wrong: branches that grow with different parts of the range.
@example(source="(claims.s == '' ? x.contains(x) : x == x)", parts=[(1000, 0), (0, 10000)])
def test_a_body_costed_on_the_whole_range_bounds_every_split_of_it(source, parts):
    tree = expression_parse(source)
    estimator = CostEstimator(PROFILE_ITERATING)
    elements = [Shape(1 + items, text, items) for items, text in parts]  # each element: one value and more
    whole = Shape(sum(e.items for e in elements), sum(e.bytes for e in elements), sum(e.items for e in elements))
    bound = estimator.of(tree, {"x": whole})[0] + len(elements) * estimator.of(tree, {"x": SCALAR})[0]
    actual = sum(estimator.of(tree, {"x": element})[0] for element in elements)
    assert actual <= bound * (1 + 1e-9)
    # and what a map builds of them: no bigger than the result the estimate assumes
    results = [estimator.of(tree, {"x": element})[1] for element in elements]
    full, least = estimator.of(tree, {"x": whole})[1], estimator.of(tree, {"x": SCALAR})[1]
    assert sum(r.items for r in results) <= full.items + len(elements) * least.items
    assert sum(r.bytes for r in results) <= full.bytes + len(elements) * least.bytes


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=body())
def test_costs_grow_with_the_claims_they_are_computed_for(source):
    costs = expression_compile(source.replace("x", "claims.x")).costs
    assert list(costs) == sorted(costs) and len(costs) == len(PROFILE_STEPS)


@pytest.mark.parametrize(
    "source",
    [
        "claims.s.matches(claims.p)",  # a pattern from the claims: its compile cannot be bounded
        "claims.s.matches('[abc')",  # one the scan cannot weigh
        "claims.s.matches('\\\\w{100}')",  # one over the compile bound
    ],
)
def test_what_cannot_be_bounded_costs_without_bound(source):
    assert expression_cost(expression_parse(source), PROFILE_ITERATING) == UNBOUNDED
    assert (
        expression_cost(expression_parse(f"claims.g.exists(x, [].exists(y, {source}))"), PROFILE_ITERATING) == UNBOUNDED
    )


def test_patterns_weigh_what_they_cost_to_compile():
    weights = [pattern_cost(p).compile for p in ("a", "[a-z]", ".", "\\d", "\\w", "\\w{3}")]
    assert weights == sorted(weights) and len(set(weights)) == len(weights)
    assert pattern_cost("a{1000}").per_byte > 100 * pattern_cost("a").per_byte  # matching grows with the states
    assert pattern_cost("(?i)abc").compile > pattern_cost("abc").compile
    for refused in ("(?x)a b", "[abc", "(ab", "*a", "x{1000}{1000}", "\\w{100}"):
        assert pattern_cost(refused).problem, refused


def test_the_costliest_part_is_pointed_at():
    source = "claims.ref == 'main' && claims.g.map(x, claims.b + claims.b).size() > 0"
    part = costliest_part(expression_parse(source), PROFILE_ITERATING)
    assert (part.line, part.column) == (1, 34)  # .map(


# --- charged when it runs ---------------------------------------------------------------------------


def _rules(*conditions: str):
    return [
        rule_compile(RuleSpec(name=f"r{n}", issuers=frozenset({"ci"}), when=when, effect="deny"))
        for n, when in enumerate(conditions)
    ]


def _decide(rules, claims):
    return compiled_rules_decide(
        rules, issuer_id="ci", claims=claims, requested_audience=None, default_audience="a", max_lifetime=900
    )


def test_claims_are_measured_only_when_the_worst_case_would_not_fit(monkeypatch):
    measured = []
    real = engine.claims_step
    monkeypatch.setattr(engine, "claims_step", lambda claims: measured.append(1) or real(claims))
    with pytest.raises(AccessDenied, match="no rule matched"):
        _decide(_rules("claims.sub == 'x'"), {"sub": "s"})  # cheap over any token: not measured
    assert measured == []
    with pytest.raises(AccessDenied, match="no rule matched"):
        _decide(_rules(*["claims.sub == 'x'"] * 30), {"sub": "s"})  # thirty would not fit at the worst: measured once
    assert measured == [1]


def test_every_evaluation_is_charged_against_the_budget():
    costly = "claims.g.filter(x, x == 'z').size() > 0"
    rules = _rules(costly, costly, costly)
    per_rule = rules[0].cost.total(1)
    assert per_rule * 2 > engine.EXCHANGE_COST_BUDGET > per_rule  # one fits, two do not
    with pytest.raises(AccessDenied) as denied:
        _decide(rules, {"g": ["a"] * 100})
    assert "rule 'r1'" in denied.value.reason and "exchange's cost budget" in denied.value.reason
    with pytest.raises(AccessDenied, match="no rule matched"):  # small claims: every rule is cheap
        _decide(rules, {"g": ["a"] * 3})


def test_a_rule_over_its_budget_never_runs():
    [rule] = _rules("claims.g.map(x, claims.g.map(y, x + y)).size() > 0")
    assert "its worst-case cost is" in rule.cost.over_budget and math.isinf(rule.cost.total(1))
    with pytest.raises(AccessDenied) as denied:
        _decide([rule], {})  # the engine would fail on the missing claim: it never gets to
    assert "is over its cost budget: its worst-case cost is" in denied.value.reason
    assert denied.value.description == "Rule 'r0' is over its cost budget."
