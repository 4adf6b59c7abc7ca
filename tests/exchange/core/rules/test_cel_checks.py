"""exchange.core.rules.cel_checks: exactly the functions the engine and jwtex provide, in the call
style each takes, refused otherwise when a rule is saved (with line and column); and the warning
for a comparison that can never be true because of a claim's documented type."""

from __future__ import annotations

import itertools

import cel
import pytest

from exchange.console.presets import preset_claim_types
from exchange.core.rules.cel_checks import FUNCTIONS, name_problems, type_warnings
from exchange.core.rules.cel_guard import check_expression
from exchange.core.rules.cel_parser import expression_parse
from exchange.core.rules.engine import RULE_FUNCTIONS
from exchange.core.rules.spec import RuleSyntaxError

# One value of every type the engine knows, to call functions with.
SAMPLES = {
    "int": "1",
    "uint": "1u",
    "double": "1.5",
    "string": "'1s'",
    "bytes": "b'a'",
    "bool": "true",
    "null": "null",
    "list": "[1]",
    "map": "{'a': 1}",
    "timestamp": "timestamp('2020-01-01T00:00:00Z')",
    "duration": "duration('1s')",
    "type": "int",
    "optional": "optional.of(1)",
}
CONTEXT = cel.Context(variables={}, functions=RULE_FUNCTIONS)


def defined(source: str, name: str) -> bool:
    """Whether the engine has a function ``name`` for this call (any outcome but "undefined"
    counts); one of jwtex's own (Python, which the engine calls with any arguments) must run."""
    try:
        cel.compile(source).execute(CONTEXT)
    except BaseException as exc:  # noqa: BLE001 - a Rust panic is an outcome here too
        if name in RULE_FUNCTIONS:
            return False
        root = name.split(".")[0]
        return f"Undefined variable or function: '{name}'" not in str(
            exc
        ) and f"Undefined variable or function: '{root}'" not in str(exc)
    return True


def _calls(name: str, *, receiver: bool, arity: int, types=SAMPLES):
    for args in itertools.product(types, repeat=arity):
        argument_text = ", ".join(SAMPLES[a] for a in args)
        if receiver:
            for target in types:
                yield f"({SAMPLES[target]}).{name}({argument_text})"
        else:
            yield f"{name}({argument_text})"


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_every_function_of_the_table_is_the_engines_in_that_style_and_no_other(name):
    function = FUNCTIONS[name]
    for receiver, arities in ((False, function.global_args), (True, function.receiver_args)):
        if receiver and "." in name:
            continue
        for arity in range(4 if not receiver else 3):
            types = SAMPLES if arity < 3 else {k: SAMPLES[k] for k in ("int", "string", "list", "map")}
            found = any(defined(call, name) for call in _calls(name, receiver=receiver, arity=arity, types=types))
            assert found == (arity in arities), (name, "receiver" if receiver else "global", arity)


# Functions of cel-go and its extensions (and look-alikes) that this engine does not have.
ABSENT = [
    "max",
    "min",
    "sum",
    "charAt",
    "indexOf",
    "lastIndexOf",
    "lowerAscii",
    "upperAscii",
    "replace",
    "split",
    "substring",
    "trim",
    "join",
    "quote",
    "format",
    "reverse",
    "flatten",
    "sort",
    "sortBy",
    "slice",
    "distinct",
    "range",
    "first",
    "last",
    "transformList",
    "transformMap",
    "isSorted",
    "bool",
    "ceil",
    "floor",
    "abs",
    "greatest",
    "least",
    "url",
    "ip",
    "cidr",
    "base64",
    "keys",
    "values",
    "lower",
    "upper",
    "len",
    "startswith",
    "getTimezone",
    "exists_one_",
    "matchesAll",
    "containsAll",
]


@pytest.mark.parametrize("name", ABSENT)
def test_functions_the_table_leaves_out_are_not_the_engines(name):
    assert name not in FUNCTIONS
    types = {k: SAMPLES[k] for k in ("int", "string", "list", "map", "timestamp")}
    for receiver in (False, True):
        for arity in range(3):
            assert not any(defined(call, name) for call in _calls(name, receiver=receiver, arity=arity, types=types))


@pytest.mark.parametrize(
    "macro, good, bad",
    [
        ("has", "has(claims.x)", ["has()", "has(claims.x, 1)"]),
        ("all", "claims.g.all(g, g > 0)", ["claims.g.all(g)", "claims.g.all(i, v, v > 0)", "all(claims.g, g, true)"]),
        ("exists", "claims.g.exists(g, g > 0)", ["claims.g.exists(g)", "exists(claims.g, g, true)"]),
        ("exists_one", "claims.g.exists_one(g, g > 0)", ["claims.g.exists_one(g)"]),
        ("existsOne", "claims.g.existsOne(g, g > 0)", ["claims.g.existsOne(g, g, g)"]),
        ("map", "claims.g.map(g, g + 1) == claims.g.map(g, g > 0, g)", ["claims.g.map(g)", "claims.g.map(g, 1, 2, 3)"]),
        ("filter", "claims.g.filter(g, g > 0)", ["claims.g.filter(g)", "claims.g.filter(g, true, g)"]),
    ],
)
def test_macros_in_their_one_form(macro, good, bad):
    assert cel.compile(good).execute({"claims": {"x": 1, "g": [1]}}) is not None
    check_expression(good)
    for source in bad:
        with pytest.raises(RuleSyntaxError, match=f"{macro}\\(\\) is not written like this"):
            check_expression(source)


def test_a_global_call_of_a_method_is_refused_where_it_is():
    source = "claims.repository_owner_id == 1342004 && startsWith(claims.ref)"
    with pytest.raises(RuleSyntaxError) as error:
        check_expression(source)
    assert (error.value.line, error.value.column) == (1, 42)
    assert "startsWith is not a global function" in error.value.message
    assert "claims.ref.startsWith('refs/heads/')" in error.value.message


@pytest.mark.parametrize(
    "source, message",
    [
        ("claims.ref.startsWith()", "startsWith takes 1 argument besides its receiver, not 0"),
        ("size(claims.a, claims.b) == 1", "size takes 1 argument, not 2"),
        ("matches(claims.ref, 'x')", "matches is not a global function"),
        ("claims.run_number.int() == 1", "int is not called on a value"),
        ("foo(claims.x)", "Unknown function 'foo'"),
        ("claims.groups.join(',') == ''", "Unknown function 'join'"),
        ("math.greatest(1, 2) == 2", "Unknown name 'math'"),
        ("claims.g.exists(g, g == 1) && g == 2", "Unknown name 'g'"),
        (".claims.x == 1", "without the leading dot"),
        ("google.protobuf.Duration{seconds: 1} == duration('1s')", "no message types are defined"),
        ("'abc'.all(c, true)", "ranges over a list or a map"),
        ("claims.ref.matches(claims.pattern)", "needs a literal pattern"),
        ("claims.ref.matches('(?x) a')", "verbose patterns"),
    ],
)
def test_what_the_engine_cannot_run_is_refused_with_its_place(source, message):
    with pytest.raises(RuleSyntaxError, match="line 1, column") as error:
        check_expression(source)
    assert message in str(error.value)


@pytest.mark.parametrize(
    "source",
    [
        "aws_tag(claims.actor) == claims.actor.aws_tag()",
        "optional.of(claims.x).orValue(1) == optional.none().or(optional.of(1)).value()",
        "optional.ofNonZeroValue(claims.x).hasValue()",
        "type(claims.aud) == list && type(claims.x) in [int, uint, double, string, bytes, bool, map, null_type, type]",
        "timestamp(claims.t).getFullYear() > 2000 && duration(claims.d).getSeconds() > 0",
        "size(claims.g) == claims.g.size() && string(claims.x) == '1' && dyn(claims.x) == 1",
        "claims.g.exists(claims, claims == 1)",  # a variable may shadow claims inside its comprehension
        "claims.g.all(x, claims.h.all(y, claims.k.exists(z, x + y == z)))",
    ],
)
def test_what_the_engine_has_is_accepted(source):
    assert name_problems(expression_parse(source)) == []


GITHUB = preset_claim_types([("https://token.actions.githubusercontent.com", False)])
BUILDKITE = preset_claim_types([("https://agent.buildkite.com", False)])


@pytest.mark.parametrize(
    "types, source, column, words",
    [
        (GITHUB, "claims.repository_owner_id == 1342004", 31, "is a string in GitHub Actions tokens ('1342004')"),
        (GITHUB, "1342004 == claims['repository_owner_id']", 1, "write '1342004'"),
        (GITHUB, "claims.run_number >= -1", 22, "the number -1"),
        (GITHUB, "claims.repository_id in ['1', 2]", 31, "the number 2"),
        (BUILDKITE, "claims.build_number == '5'", 24, "is a number in Buildkite tokens"),
    ],
)
def test_a_comparison_that_cannot_be_true_for_the_platforms_type_is_warned_about(types, source, column, words):
    [warning] = type_warnings(expression_parse(source), types)
    assert warning.column == column and words in warning.message


@pytest.mark.parametrize(
    "types, source",
    [
        (GITHUB, "claims.repository_owner_id == '1342004'"),
        (GITHUB, "claims.unknown_claim == 1"),
        (GITHUB, "int(claims.run_number) > 5"),
        ({}, "claims.repository_owner_id == 1342004"),
        (BUILDKITE, "claims.build_number == 5"),
    ],
)
def test_comparisons_that_can_be_true_are_not(types, source):
    assert type_warnings(expression_parse(source), types) == []
