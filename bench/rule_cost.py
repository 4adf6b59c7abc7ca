"""The rules a hostile tenant would write, at the largest size the cost guard lets through, and
what they cost one exchange (process CPU time), over the claims that make them slowest.

    .venv/bin/python bench/rule_cost.py            # also part of `make bench`

Each family is an attack shape (the issue that led to the cost budget: strings built inside a
comprehension over a 128-item claim took 1.1–2.5 s a rule): its parameter ``k`` grows until the
rule is refused when saved (``rule_findings``, the admin's and jwtex_apply's check), and the
largest ``k`` that saves is run — through ``decide`` as an exchange runs it — over claims a
16 KiB token can carry: the largest the rule may run on (the per-exchange claims check), built
to make it slowest. Printed: ``k``, the rule's cost units at those claims, the CPU it took, and
ns per unit (what makes the budget a bound in time: units × worst ns/unit ≤ the target).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from exchange.core.limits import EXCHANGE_COST_BUDGET, MAX_TOKEN_BYTES, RULE_COST_BUDGET
from exchange.core.rules.cel_guard import claims_step
from exchange.core.rules.compiled import rule_compile
from exchange.core.rules.engine import compiled_rules_decide
from exchange.core.rules.spec import RuleSpec, rule_findings

SHORT = [f"g{i:03d}" for i in range(128)]  # a 128-item claim of short strings
MEDIUM = ["x" * 70 for _ in range(128)]  # a 128-item claim filling a 13 KB token
NESTED = [[f"{i}-{j}" for j in range(3)] for i in range(120)]  # 120 lists: 480 items in all
BIG = "y" * 6000
WIDE = [0] * 6000  # beyond the per-exchange check: only rules cheap over any token run on it


@dataclass(frozen=True)
class Family:
    name: str
    source: Callable[[int], str]  # k → the rule's condition
    claims: dict  # the claims that make it slowest among those it may run on
    k_max: int = 4000


def _join(term: str, k: int, op: str = " + ") -> str:
    return op.join([term] * k)


FAMILIES = (
    Family(
        "strings built in a map (the issue's rules)",
        lambda k: f"claims.g.map(x, {_join('claims.b', k)}).size() == 0",
        {"g": SHORT, "b": BIG},
    ),
    Family(
        "concatenation chain in a comprehension",
        lambda k: f"claims.g.exists(x, ({_join('x', k)}).size() == 0)",
        {"g": MEDIUM},
    ),
    Family("list concatenation", lambda k: f"({_join('claims.g', k)}).size() == 0", {"g": SHORT}),
    Family(
        "nested comprehensions",
        lambda k: f"claims.g.exists(x, claims.g.exists(y, ({_join('x + y', k)}) == ''))",
        {"g": SHORT},
    ),
    Family(
        "three nested comprehensions",
        lambda k: f"claims.g.exists(x, claims.g.exists(y, claims.g.exists(z, ({_join('z', k)}) == x)))",
        {"g": SHORT},
    ),
    Family("large list literal", lambda k: f"claims.b in [{_join('claims.b', k, ', ')}]", {"b": BIG}),
    Family(
        "list literal of claims in a comprehension",
        lambda k: f"claims.g.exists(x, x in [{_join('claims.g', k, ', ')}])",
        {"g": SHORT},
    ),
    Family(
        "Unicode regex in a comprehension",
        lambda k: "claims.g.exists(x, x.matches('" + "\\\\w" * k + "'))",
        {"g": MEDIUM},
    ),
    Family("regex calls", lambda k: _join("claims.b.matches('^.*[a-z]+.*$')", k, " || "), {"b": BIG}),
    Family("Unicode regex calls", lambda k: _join("claims.s.matches('\\\\w+\\\\pL')", k, " || "), {"s": "a"}),
    Family("aws_tag of non-ASCII text", lambda k: _join("aws_tag(claims.u) == ''", k, " || "), {"u": "\u200b" * 300}),
    Family(
        "aws_source_identity of non-ASCII text",
        lambda k: _join("aws_source_identity(claims.u) == ''", k, " || "),
        {"u": "\u200b" * 300},
    ),
    Family("copies of a list of lists", lambda k: _join("claims.l == claims.m", k, " || "), {"l": NESTED, "m": []}),
    Family("copies of a 6,000-item list", lambda k: _join("claims.w.size() == 0", k, " || "), {"w": WIDE}),
    Family("a comprehension over 6,000 items", lambda k: f"claims.w.exists(x, {_join('x', k)} == -1)", {"w": WIDE}),
    Family("aws_tag in a map", lambda k: f"claims.g.map(x, aws_tag({_join('x', k)})).size() == 0", {"g": MEDIUM}),
    Family(
        "map copying the claims",
        lambda k: _join("claims.g.map(x, claims).size() == 0", k, " || "),
        {"g": SHORT[:100], "pad": [str(i) for i in range(120)]},
    ),
)


def _spec(source: str) -> RuleSpec:
    return RuleSpec(name="hostile", issuers=frozenset({"ci"}), when=source, effect="deny")


def _saves(source: str) -> bool:
    return len(source) <= 4096 and not rule_findings(_spec(source)).errors


def largest_saved(family: Family) -> int | None:
    """The largest k whose rule saves (costs grow with k), or None if even k=1 is refused."""
    if not _saves(family.source(1)):
        return None
    low, high = 1, family.k_max
    while low < high:
        mid = (low + high + 1) // 2
        if _saves(family.source(mid)):
            low = mid
        else:
            high = mid - 1
    return low


def run_ms(rules, claims: dict, repeat: int = 3) -> tuple[float, str]:
    """Best CPU time (ms) of one evaluation of ``rules`` over ``claims``, and how it ended."""
    best, outcome = float("inf"), ""
    for _ in range(repeat):
        start = time.process_time()
        try:
            compiled_rules_decide(
                rules, issuer_id="ci", claims=claims, requested_audience=None, default_audience="a", max_lifetime=900
            )
            outcome = "allowed"
        except Exception as exc:  # noqa: BLE001 - a denial is an outcome here
            outcome = getattr(exc, "reason", str(exc))
        best = min(best, time.process_time() - start)
    return best * 1e3, outcome


def report(out=print) -> float:
    """Print every family at its largest saved size; return the worst CPU time (ms) of one."""
    out(
        f"rule cost guard: budget {RULE_COST_BUDGET:,} units a rule, {EXCHANGE_COST_BUDGET:,} an exchange; "
        "each attack at its largest saved size, over the slowest claims it may run on"
    )
    worst_ms = 0.0
    for family in FAMILIES:
        k = largest_saved(family)
        claims = {"sub": "s", **family.claims}
        assert len(json.dumps(claims, separators=(",", ":"))) <= MAX_TOKEN_BYTES * 3 // 4, family.name  # a 16 KiB token
        if k is None:
            out(f"  {family.name:44} refused at any size")
            continue
        rule = rule_compile(_spec(family.source(k)))
        step, _ = claims_step(claims)
        units = rule.cost.total(step)
        ms, outcome = run_ms([rule], claims)
        worst_ms = max(worst_ms, ms)
        ran = "" if outcome in ("allowed",) or "no rule" in outcome.lower() else f"  ({outcome[:60]})"
        out(
            f"  {family.name:44} k={k:<5} {units / 1e6:7.1f} M units {ms:8.2f} ms  "
            f"{ms * 1e6 / units if units else 0:5.2f} ns/unit{ran}"
        )
    return worst_ms


def exchange_worst(out=print) -> float:
    """One exchange at its worst: live rules and a candidate set of ten copies of an attack each
    (the budget of each set stops them), and a 16 KiB token of 4,000 strings (the engine converts
    the claims once per set, whatever the rules)."""
    worst = 0.0
    for family in FAMILIES:
        k = largest_saved(family)
        if k is None:
            continue
        claims = {"sub": "s", **family.claims}
        rules = [
            rule_compile(RuleSpec(name=f"hostile {i}", issuers=frozenset({"ci"}), when=family.source(k), effect="deny"))
            for i in range(10)
        ]
        live, outcome = run_ms(rules, claims, repeat=2)
        candidate, _ = run_ms(rules, claims, repeat=2)
        if live + candidate > worst:
            worst, slowest, why = live + candidate, family.name, outcome
    out(
        f"  one exchange, live and candidate sets of ten copies of an attack each, the slowest ({slowest}): "
        f"{worst:.2f} ms; each set stopped by its budget: {why[:70]}…"
    )
    wide = {"sub": "s", "l": [""] * 4000}
    assert len(json.dumps(wide, separators=(",", ":"))) <= MAX_TOKEN_BYTES * 3 // 4
    simple = [
        rule_compile(RuleSpec(name=f"r{i}", issuers=frozenset({"ci"}), when=f"claims.sub == 'x{i}'", effect="deny"))
        for i in range(20)
    ]
    converted = 2 * run_ms(simple, wide)[0]
    out(
        f"  one exchange with a 16 KiB token of 4,000 strings, 20 simple rules in each set: {converted:.2f} ms "
        "(converting the claims for the engine, once a set)"
    )
    return max(worst, converted)


if __name__ == "__main__":
    worst = report()
    worst = max(worst, exchange_worst())
    print(f"  the slowest: {worst:.2f} ms of CPU (target: no exchange over 50 ms, live and candidate rules together)")
