"""Rule engine safety (docs/rules.md#evaluation-limits): CEL expressions are limited in length, nesting and
comprehension shape when saved (admin forms and models through ``full_clean``, files through
``jwtex_apply``); every engine failure — including panics that are not ``Exception``s — denies
with a reason; and evaluation cost is bounded so no rule can hang a worker.

Measured before the guard (common-expression-language 0.10): the Rust engine holds the GIL
while it runs and its ``map``/``filter`` copy their growing result at every step, so
``claims.list.map(x, claims.list.map(y, x + y))`` over a 1,000-item list (4 KB, well inside a
16 KiB token) took 72 s, and even the single ``claims.list.map(x, claims.list)`` took 38 s at
1,000 items (0.7 s at 256). Hence: no nested comprehensions, comprehensions range only over a
claim, at most 4 per expression (checked when saved), and a rule that iterates runs only over
claims with at most 128 items per list or map and 512 in all (checked per exchange; else deny).
"""

from __future__ import annotations

import dataclasses
import io
import time

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from exchange.core import limits as conf
from exchange.core.rules import cel_guard
from exchange.models import ExchangeRecord, Rule
from exchange.core.rules.cel_guard import check_expression
from exchange.core.rules.engine import compile_rule, decide
from exchange.core.rules.spec import RuleSpec

from . import jose
from .endpoints import ENDPOINTS, assert_nothing_allowed, assert_refused, send

NESTED = "claims.list.map(x, claims.list.map(y, x + y)).size() > 0"


def _rule(tenant, issuer=None, **fields) -> Rule:
    rule = Rule(tenant=tenant, name=fields.pop("name", "r"), effect=fields.pop("effect", "allow"), **fields)
    rule.full_clean()
    rule.save()
    if issuer is not None:
        rule.issuers.add(issuer)
    return rule


# --- limits when saved ----------------------------------------------------------------------------

TOO_LONG = "claims.sub == '" + "a" * conf.CEL_MAX_EXPRESSION_LENGTH + "'"
TOO_DEEP = "(" * 40 + "true" + ")" * 40
REFUSED_AT_SAVE = {
    "too long": (TOO_LONG, "the limit is 4096"),
    "nested too deeply": (TOO_DEEP, "deeper than 32 levels"),
    "nested comprehension": (NESTED, "cannot be nested"),
    "nested all/exists": ("claims.groups.all(g, claims.groups.exists(h, h == g))", "cannot be nested"),
    "comprehension over a computed list": ("(claims.a + claims.a).exists(x, x == 1)", "only range over a claim"),
    "comprehension over a literal": ("[1, 2, 3].map(x, claims).size() > 0", "only range over a claim"),
    "chained comprehensions": ("claims.a.map(x, x).exists(y, y == 1)", "only range over a claim"),
    "too many comprehensions": (" && ".join(f"claims.g{i}.exists(x, x == 1)" for i in range(5)), "at most 4 comprehensions"),
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


@pytest.mark.parametrize("case", list(REFUSED_AT_SAVE))
def test_cel_limits_are_enforced_by_jwtex_apply_and_nothing_changes(case, tenant, issuer, tmp_path):
    import json

    source, message = REFUSED_AT_SAVE[case]
    document = {
        "tenants": [
            {
                "slug": "acme",
                "name": "Acme Corp",
                "issuers": [{"id": "ci", "issuer": issuer.issuer, "audiences": issuer.audiences, "jwks": issuer.static_jwks}],
                "rules": [
                    {"name": "fine", "issuers": ["ci"], "when": "true", "effect": "deny"},
                    {"name": "bad", "issuers": ["ci"], "when": source, "effect": "allow"},
                ],
            }
        ]
    }
    path = tmp_path / "acme.json"
    path.write_text(json.dumps(document))
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
    ],
)
def test_reasonable_comprehensions_are_accepted(source):
    check_expression(source)


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

    real = runtime.compile_rule

    def compile_with_bomb(spec):
        compiled = real(spec)
        bomb = _Exploding(exc)
        if slot == "when":
            return dataclasses.replace(compiled, when=bomb)
        if slot == "subject":
            return dataclasses.replace(compiled, subject=bomb)
        if slot == "session tag":
            return dataclasses.replace(compiled, session_tags=((compiled.session_tags[0][0], bomb),))
        return dataclasses.replace(compiled, claims=(("extra", bomb),))

    monkeypatch.setattr(runtime, "compile_rule", compile_with_bomb)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("slot", ["when", "subject", "session tag", "claim"])
@pytest.mark.parametrize(
    "exc",
    [Panic("rust panicked at 'index out of bounds'"), RecursionError("deep"), MemoryError(), ValueError("x"), GeneratorExit()],
    ids=["panic", "recursion", "memory", "value", "generator-exit"],
)
def test_engine_failure_of_any_kind_denies_through_the_endpoint(endpoint, slot, exc, client, monkeypatch, exchangeable, allow_rule, upstream):
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
    rule = dataclasses.replace(compile_rule(RuleSpec(name="r", issuers=frozenset({"ci"}), when="true", effect="allow")), when=_Exploding(exc))
    with pytest.raises(type(exc)):
        decide([rule], issuer_id="ci", claims={}, requested_audience=None, default_audience="a", max_lifetime=900)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_evaluation_error_never_falls_through_to_a_later_allow(endpoint, client, exchangeable, tenant, issuer, upstream):
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


def _token_with_list(upstream, items: int, **extra) -> str:
    token = jose.signed(
        {"alg": "RS256", "kid": upstream.rsa_kid}, upstream.claims(list=list(range(items)), **extra), rsa_key=upstream.rsa_key
    )
    assert len(token) <= 16 * 1024
    return token


def test_nested_comprehension_stored_behind_the_validators_back_fails_closed(client, exchangeable, tenant, issuer, upstream):
    # A rule written straight into the database (an old row, a manual UPDATE) is compiled with
    # the same checks when the runtime loads it: the tenant denies everything, at once.
    rule = _rule(tenant, issuer, name="allow", when="true")
    Rule.objects.filter(pk=rule.pk).update(when=NESTED)
    Rule.objects.get(pk=rule.pk).save()  # bump the tenant's config version
    token = _token_with_list(upstream, 1000)
    started = time.perf_counter()
    for endpoint in ENDPOINTS:
        assert_refused(endpoint, send(endpoint, client, token), 403, "access_denied")
    assert time.perf_counter() - started < 2
    assert "cannot be nested" in ExchangeRecord.objects.first().reason


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_iterating_rule_over_oversized_claims_denies_without_evaluating(endpoint, client, exchangeable, tenant, issuer, upstream):
    # The worst single comprehension a rule may hold: its result copies the whole claims at each
    # step. 1,000 items would take tens of seconds; it is refused before the engine runs.
    _rule(tenant, issuer, name="costly", when="claims.list.map(x, claims).size() > 0")
    started = time.perf_counter()
    body = assert_refused(endpoint, send(endpoint, client, _token_with_list(upstream, 1000)), 403, "access_denied")
    assert time.perf_counter() - started < 1
    if endpoint != "rfc8693":
        assert "claims this large" in body["error_description"]
    assert "1000 items" in ExchangeRecord.objects.get().reason


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_iterating_rule_within_the_limits_stays_fast(endpoint, client, exchangeable, tenant, issuer, upstream):
    # The worst case the limits allow: 128 items, 512 in all, the result copying the claims.
    _rule(tenant, issuer, name="costly", when="claims.list.map(x, claims).size() > 0")
    filler = {f"pad{i}": list(range(120)) for i in range(3)}  # 128 + 360 + the rest < 512
    token = _token_with_list(upstream, 128, **filler)
    started = time.perf_counter()
    response = send(endpoint, client, token)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.content
    assert elapsed < 2, f"the worst allowed comprehension took {elapsed:.2f} s"


def test_rules_without_comprehensions_accept_large_claims(client, exchangeable, tenant, issuer, upstream):
    _rule(tenant, issuer, name="plain", when="size(claims.list) == 1000 && 999 in claims.list")
    assert send("raw", client, _token_with_list(upstream, 1000)).status_code == 200


def test_claims_size_guard_counts_nested_containers_without_recursion():
    deep: list = []
    for _ in range(5000):  # deeper than Python's recursion limit
        deep = [deep]
    assert cel_guard.claims_too_large({"deep": deep}) is not None  # 5,000 items in all
    assert cel_guard.claims_too_large({"ok": [[1, 2], {"a": [3]}]}) is None
    assert "129 items" in cel_guard.claims_too_large({"l": list(range(129))})
    assert "more than 512" in cel_guard.claims_too_large({f"l{i}": list(range(100)) for i in range(6)})
