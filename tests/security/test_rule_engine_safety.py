"""Rule engine safety (docs/rules.md#evaluation-limits, docs/rules.md#rule-cost-budget): what a rule
may cost is decided when it is saved (admin forms and models through ``full_clean``, files through
``jwtex_apply``, the simulator's rule to try) and charged when it runs; every engine failure —
including panics that are not ``Exception``s — denies with a reason; and no rule can hang a worker.

Measured before the cost budget (common-expression-language 0.10): three rules within every
limit of the time (4,096 characters, 32 brackets, 4 comprehensions that do not nest and range
over a claim) that build strings inside one ``map`` over a 128-item claim —
``claims.g.map(x, claims.b + claims.b + …).size() == 0`` — took 1.1–2.5 s each, one exchange with
a 13 KB token over 4.5 s, and it still answered 200 (``ATTACK`` below, reproduced by
``bench/rule_cost.py``). The engine holds the GIL while it runs: every other tenant waited.
"""

from __future__ import annotations

import dataclasses
import io
import json
import time

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from exchange.core import limits as conf
from exchange.core.rules.cel_guard import check_expression, claims_step
from exchange.core.rules.compiled import rule_compile
from exchange.core.rules.engine import compiled_rules_decide
from exchange.core.rules.spec import RuleSpec
from exchange.models import ExchangeRecord, Rule

from . import jose
from .endpoints import ENDPOINTS, assert_nothing_allowed, assert_refused, send

NESTED = "claims.list.map(x, claims.list.map(y, x + y)).size() > 0"
# The rules of the measurement above: each builds strings of 120 copies of a 6 KB claim in a map
# over 128 items (1.1 s of CPU each then).
ATTACK = "claims.g.map(x, " + " + ".join(["claims.b"] * 120) + ").size() {} 0"


def _rule(tenant, issuer=None, **fields) -> Rule:
    rule = Rule(tenant=tenant, name=fields.pop("name", "r"), effect=fields.pop("effect", "allow"), **fields)
    rule.full_clean()
    rule.save()
    if issuer is not None:
        rule.issuers.add(issuer)
    return rule


def _stored(tenant, issuer, **fields) -> Rule:
    """A rule written straight into the database (saved before the budget, or by a manual UPDATE)."""
    rule = Rule.objects.create(tenant=tenant, effect=fields.pop("effect", "allow"), **fields)
    rule.issuers.add(issuer)
    return rule


# --- limits when saved ----------------------------------------------------------------------------

TOO_LONG = "claims.sub == '" + "a" * conf.CEL_MAX_EXPRESSION_LENGTH + "'"
TOO_DEEP = "(" * 40 + "true" + ")" * 40
OVER_BUDGET = "a rule may cost at most 50,000,000"
REFUSED_AT_SAVE = {
    "too long": (TOO_LONG, "the limit is 4096"),
    "nested too deeply": (TOO_DEEP, "deeper than 32 levels"),
    "strings built in a map": (ATTACK.format("=="), OVER_BUDGET),
    "nested comprehension": (NESTED, OVER_BUDGET),
    "nested all/exists": ("claims.groups.all(g, claims.groups.exists(h, h + g == g + h))", OVER_BUDGET),
    "a map copying the claims": ("claims.list.map(x, claims).size() > 0", OVER_BUDGET),
    "a long concatenation": ("(" + " + ".join(["claims.g"] * 40) + ").size() > 0", OVER_BUDGET),
    "a Unicode pattern at every element": ("claims.g.exists(x, x.matches('\\\\w+\\\\d'))", OVER_BUDGET),
    "a pattern from the claims": ("claims.sub.matches(claims.pattern)", "needs a literal pattern"),
    "a counted repetition of a class": ("claims.sub.matches('.{1000}')", "too costly to compile"),
    "comprehensions nested four deep": (
        "claims.a.all(w, claims.a.all(x, claims.a.all(y, claims.a.all(z, true))))",
        "nest at most 3 deep",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED_AT_SAVE))
@pytest.mark.parametrize("field", ["when", "subject", "session_tags", "claims"])
def test_cel_limits_are_enforced_when_a_rule_is_saved(case, field, tenant):
    source, message = REFUSED_AT_SAVE[case]
    value = {"session_tags": {"team": source}, "claims": {"extra": source}}.get(field, source)
    rule = Rule(tenant=tenant, name="r", effect="allow", **{field: value})
    with pytest.raises(ValidationError) as error:
        rule.full_clean()
    assert message in str(error.value.message_dict)
    if case != "too long":  # a position points into the expression
        assert "line 1, column" in str(error.value.message_dict)


def _document(issuer, source: str) -> dict:
    return {
        "tenants": [
            {
                "slug": "acme",
                "name": "Acme Corp",
                "issuers": [
                    {"id": "ci", "issuer": issuer.issuer, "audiences": issuer.audiences, "jwks": issuer.static_jwks}
                ],
                "rules": [
                    {"name": "fine", "issuers": ["ci"], "when": "true", "effect": "deny"},
                    {"name": "bad", "issuers": ["ci"], "when": source, "effect": "allow"},
                ],
            }
        ]
    }


@pytest.mark.parametrize("case", list(REFUSED_AT_SAVE))
def test_cel_limits_are_enforced_by_jwtex_apply_and_nothing_changes(case, tenant, issuer, tmp_path):
    source, message = REFUSED_AT_SAVE[case]
    path = tmp_path / "acme.json"
    path.write_text(json.dumps(_document(issuer, source)))
    before = list(Rule.objects.values_list("name", flat=True))
    stderr = io.StringIO()
    with pytest.raises(CommandError, match="nothing was changed"):
        call_command("jwtex_apply", str(path), stdout=io.StringIO(), stderr=stderr)
    assert 'tenants[acme].rules["bad"].when' in stderr.getvalue() and message in stderr.getvalue()
    assert list(Rule.objects.values_list("name", flat=True)) == before


@pytest.mark.parametrize(
    "source",
    [
        "claims.groups.exists(g, g == 'ops') && claims.aud.exists(a, a == 'x')",
        "claims['groups'].exists(g, g.startsWith('team-'))",
        "claims.groups.filter(g, g.startsWith('team-')).size() > 0",
        "claims.map(k, k).size() > 3",
        "claims.groups.exists(g, g == '.map(x, claims.a.map(y, y))')",  # inside a string: not code
        "has(claims.groups) && claims.groups.exists_one(g, g == 'ops')",
        "'(' + claims.sub + '[' == '(x['",
        # Refused by the shape limits of before, cheap in fact: the cost decides now.
        "(claims.a + claims.b).exists(x, x == 'z')",
        "[1, 2, 3].map(x, x * 2).size() == 3",
        "claims.a.map(x, x).exists(y, y == 1)",
        " && ".join(f"claims.g{i}.exists(x, x == 1)" for i in range(5)),
        "claims.teams.exists(t, t in ['ops', 'dev'])",
        "claims.ref.matches('^refs/heads/(main|release-[0-9]+)$')",
    ],
)
def test_reasonable_comprehensions_are_accepted(source):
    assert check_expression(source)
    rule = RuleSpec(name="r", issuers=frozenset({"ci"}), when=source, effect="deny")
    assert rule_compile(rule).cost.over_budget is None


# --- every engine failure denies ------------------------------------------------------------------


class Panic(BaseException):
    """Like pyo3's PanicException: a Rust panic surfaces as a BaseException, not an Exception."""


class _Exploding:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def execute(self, context):
        raise self.exc


def _explode(monkeypatch, slot: str, exc: BaseException) -> None:
    """Make the compiled rules' ``slot`` program raise ``exc`` when evaluated."""
    from exchange import runtime

    real = runtime.rule_compile

    def compile_with_bomb(spec, **kwargs):
        compiled = real(spec, **kwargs)
        bomb = _Exploding(exc)
        if slot == "when":
            return dataclasses.replace(compiled, when=bomb)
        if slot == "subject":
            return dataclasses.replace(compiled, subject=bomb)
        if slot == "session tag":
            return dataclasses.replace(compiled, session_tags=((compiled.session_tags[0][0], bomb),))
        return dataclasses.replace(compiled, claims=(("extra", bomb),))

    monkeypatch.setattr(runtime, "rule_compile", compile_with_bomb)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("slot", ["when", "subject", "session tag", "claim"])
@pytest.mark.parametrize(
    "exc",
    [
        Panic("rust panicked at 'index out of bounds'"),
        RecursionError("deep"),
        MemoryError(),
        ValueError("x"),
        GeneratorExit(),
    ],
    ids=["panic", "recursion", "memory", "value", "generator-exit"],
)
def test_engine_failure_of_any_kind_denies_through_the_endpoint(
    endpoint, slot, exc, client, monkeypatch, exchangeable, allow_rule, upstream
):
    allow_rule.claims = {"extra": "claims.actor"}
    allow_rule.save()
    _explode(monkeypatch, slot, exc)
    response = send(endpoint, client, upstream.mint())
    assert_refused(endpoint, response, 403, "access_denied")
    record = ExchangeRecord.objects.get()
    assert record.decision == "denied" and type(exc).__name__ in record.reason
    assert_nothing_allowed()


def test_context_conversion_panic_denies(client, monkeypatch, exchangeable, allow_rule, upstream):
    import cel

    def panic(*args, **kwargs):
        raise Panic("conversion panicked")

    monkeypatch.setattr(cel, "Context", panic)
    for endpoint in ENDPOINTS:
        assert_refused(endpoint, send(endpoint, client, upstream.mint()), 403, "access_denied")
    assert_nothing_allowed()


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(1)], ids=["keyboard-interrupt", "system-exit"])
def test_interpreter_exits_are_not_swallowed(exc):
    rule = dataclasses.replace(
        rule_compile(RuleSpec(name="r", issuers=frozenset({"ci"}), when="true", effect="allow")), when=_Exploding(exc)
    )
    with pytest.raises(type(exc)):
        compiled_rules_decide(
            [rule], issuer_id="ci", claims={}, requested_audience=None, default_audience="a", max_lifetime=900
        )


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_evaluation_error_never_falls_through_to_a_later_allow(
    endpoint, client, exchangeable, tenant, issuer, upstream
):
    # The first rule errors (no such claim); the allow-everything rule after it is never reached.
    _rule(tenant, issuer, name="broken", when="claims.no_such_claim == 'x'", effect="deny", position=1)
    _rule(tenant, issuer, name="everything", when="true", position=2)
    assert_refused(endpoint, send(endpoint, client, upstream.mint()), 403, "access_denied")
    assert "broken" in ExchangeRecord.objects.get().reason


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_condition_that_is_not_a_bool_denies(endpoint, client, exchangeable, tenant, issuer, upstream):
    _rule(tenant, issuer, name="truthy", when="claims.actor", position=1)
    assert_refused(endpoint, send(endpoint, client, upstream.mint()), 403, "access_denied")


# --- evaluation cost --------------------------------------------------------------------------------


def _token(upstream, **claims) -> str:
    token = jose.signed({"alg": "RS256", "kid": upstream.rsa_kid}, upstream.claims(**claims), rsa_key=upstream.rsa_key)
    assert len(token) <= 16 * 1024
    return token


def _attack_token(upstream) -> str:
    """13.4 KB: a 128-item claim and a 6 KB string, as in the issue."""
    token = _token(upstream, g=[f"g{i:03d}" for i in range(128)], b="y" * 6000, pad="p" * 2500)
    assert 13_000 < len(token) < 14_000
    return token


def test_the_rules_that_stalled_a_process_are_refused_when_saved(tenant, issuer):
    for position, (effect, comparison) in enumerate([("deny", "=="), ("deny", "=="), ("allow", ">")]):
        rule = Rule(
            tenant=tenant, name=f"r{position}", position=position, effect=effect, when=ATTACK.format(comparison)
        )
        with pytest.raises(ValidationError, match="cost units"):
            rule.full_clean()


def test_the_rules_that_stalled_a_process_cannot_stall_it_when_stored_anyway(
    client, exchangeable, tenant, issuer, upstream
):
    # Saved behind the validators' back (or before the budget): the first one reached denies at
    # once, audited, without the engine running it; tenants' other rules are not affected.
    Rule.objects.all().delete()
    for position, (effect, comparison) in enumerate([("deny", "=="), ("deny", "=="), ("allow", ">")]):
        _stored(tenant, issuer, name=f"r{position}", position=position, effect=effect, when=ATTACK.format(comparison))
    token = _attack_token(upstream)
    started = time.process_time()
    response = send("raw", client, token)
    assert time.process_time() - started < 0.5  # 4.5 s of CPU before the budget
    assert_refused("raw", response, 403, "access_denied")
    record = ExchangeRecord.objects.get()
    assert record.rule_name == "r0" and "over its cost budget" in record.reason


def test_a_rule_over_budget_denies_only_when_reached(client, exchangeable, tenant, issuer, upstream):
    # Unlike a rule that does not compile, it does not switch the tenant off: the rules before
    # it decide as before, and it denies (never grants) whatever comes to it.
    _stored(tenant, issuer, name="too costly", position=99, when=NESTED)
    assert send("raw", client, upstream.mint()).status_code == 200  # the allow rule (position 10) decides first
    response = send("raw", client, upstream.mint(ref="refs/heads/feature"))
    assert_refused("raw", response, 403, "access_denied")
    assert "rule 'too costly' (id " in ExchangeRecord.objects.order_by("-id").first().reason
    assert "is over its cost budget" in ExchangeRecord.objects.order_by("-id").first().reason


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_costly_rule_over_oversized_claims_denies_without_evaluating(
    endpoint, client, exchangeable, tenant, issuer, upstream
):
    # Within the budget for claims of at most 128 items a list, 512 in all — and only for them.
    _rule(tenant, issuer, name="costly", position=1, when="claims.list.filter(x, x >= 0).size() > 0")
    started = time.perf_counter()
    response = send(endpoint, client, _token(upstream, list=list(range(1000))))
    body = assert_refused(endpoint, response, 403, "access_denied")
    assert time.perf_counter() - started < 1
    if endpoint != "rfc8693":
        assert "claims this large" in body["error_description"]
    assert "1000 items" in ExchangeRecord.objects.get().reason


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_costly_rule_within_the_limits_runs(endpoint, client, exchangeable, tenant, issuer, upstream):
    _rule(tenant, issuer, name="costly", position=1, effect="deny", when="claims.list.filter(x, x < 0).size() > 0")
    filler = {f"pad{i}": list(range(120)) for i in range(3)}  # 128 + 360 + the rest < 512
    response = send(endpoint, client, _token(upstream, list=list(range(128)), **filler))
    assert response.status_code == 200, response.content


def test_rules_cheap_over_any_token_accept_large_claims(client, exchangeable, tenant, issuer, upstream):
    _rule(tenant, issuer, name="plain", position=1, when="size(claims.list) == 1000 && 999 in claims.list")
    assert send("raw", client, _token(upstream, list=list(range(1000)))).status_code == 200


def test_an_exchange_stops_at_its_budget(client, exchangeable, tenant, issuer, upstream):
    # Each rule fits its own budget; together they would not: the one that would go over denies.
    costly = "claims.list.filter(x, x < 0).size() > 0"
    for position in range(1, 6):
        _rule(tenant, issuer, name=f"costly {position}", position=position, effect="deny", when=costly)
    token = _token(upstream, list=list(range(128)), **{f"pad{i}": list(range(120)) for i in range(3)})
    assert_refused("raw", send("raw", client, token), 403, "access_denied")
    reason = ExchangeRecord.objects.get().reason
    assert "is over the exchange's cost budget" in reason and "costly 2" in reason


def test_the_claims_measure_counts_nested_containers_without_recursion():
    deep: list = []
    for _ in range(5000):  # deeper than Python's recursion limit
        deep = [deep]
    assert claims_step({"deep": deep})[0] == 2 and "512" in claims_step({"deep": deep})[1]
    assert claims_step({"ok": [[1, 2], {"a": [3]}]}) == (0, "")
    assert "129 items" in claims_step({"l": list(range(129))})[1]
    assert "more than 512" in claims_step({f"l{i}": list(range(100)) for i in range(6)})[1]
