"""exchange.core.rules.cel_parser: exactly what the engine compiles, read the way it reads it.

Held to the engine itself: whatever the parser accepts, the engine compiles, and the other way
round, over generated expressions (from the grammar, mutated, and token soup), every literal
form (values included) and the real rules of the presets and examples; and a parsed tree
written back out with every operation in parentheses evaluates, in the engine, to what the
source does (the precedence, associativity and ternaries are the engine's).
"""

from __future__ import annotations

import math
from pathlib import Path

import cel
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings, strategies as st

from exchange.console.presets import PRESETS
from exchange.core.rules.cel_parser import MAX_EXPR_DEPTH, RESERVED_WORDS, expression_parse
from exchange.core.rules.cel_syntax import (
    Binary,
    Call,
    CelSyntaxError,
    Comprehension,
    Conditional,
    Ident,
    Index,
    ListLit,
    Literal,
    Logic,
    MapLit,
    Select,
    Struct,
    Unary,
)

ROOT = Path(__file__).resolve().parents[4]


def engine_accepts(source: str) -> bool:
    try:
        cel.compile(source)
    except BaseException:  # noqa: BLE001 - a Rust panic is a refusal too
        return False
    return True


def parser_accepts(source: str) -> bool:
    try:
        expression_parse(source)
    except CelSyntaxError:
        return False
    return True


def agree(source: str) -> None:
    assert parser_accepts(source) == engine_accepts(source), source


# --- generated expressions ----------------------------------------------------------------------

LEAVES = [
    "a",
    "claims.x",
    "1",
    "-2",
    "'s'",
    '"t"',
    "true",
    "null",
    "1u",
    "2.5",
    "b'q'",
    "x",
    "-9223372036854775808",
    "0x1F",
    ".5",
    "1e3",
    "r'\\\\'",
    "'''m'''",
    "9223372036854775808",
    "if",
    "in",
    "`f`",
]
BINARY = ["+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "in", "&&", "||"]


@st.composite
def grammar(draw, depth=0):
    if depth > 3 or draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(LEAVES))

    def sub():
        return draw(grammar(depth + 1))

    kind = draw(st.integers(0, 12))
    if kind == 0:
        return f"{sub()} {draw(st.sampled_from(BINARY))} {sub()}"
    if kind == 1:
        return f"{sub()} ? {sub()} : {sub()}"
    if kind == 2:
        return f"{draw(st.sampled_from(['!', '-', '!!', '--', '- ']))}{sub()}"
    if kind == 3:
        return f"({sub()})"
    if kind == 4:
        return f"{sub()}.{draw(st.sampled_from(['f', 'size', 'if', 'true', '?g']))}"
    if kind == 5:
        args = ", ".join(sub() for _ in range(draw(st.integers(0, 2))))
        return f"{sub()}.{draw(st.sampled_from(['size', 'startsWith', 'all', 'map', 'exists_one']))}({args})"
    if kind == 6:
        return f"{sub()}[{draw(st.sampled_from(['', '?']))}{sub()}]"
    if kind == 7:
        items = ", ".join(sub() for _ in range(draw(st.integers(0, 3))))
        return f"[{items}{draw(st.sampled_from(['', ',']))}]"
    if kind == 8:
        entries = ", ".join(f"{sub()}: {sub()}" for _ in range(draw(st.integers(0, 2))))
        return "{" + entries + draw(st.sampled_from(["", ","])) + "}"
    if kind == 9:
        var = draw(st.sampled_from(["v", "1", "a.b", "(v)", ".v"]))
        more = draw(st.sampled_from(["", ", " + sub()]))
        return f"{sub()}.{draw(st.sampled_from(['all', 'exists', 'map', 'filter']))}({var}, {sub()}{more})"
    if kind == 10:
        return f"has({sub()})"
    if kind == 11:
        args = ", ".join(sub() for _ in range(draw(st.integers(0, 2))))
        return f"{draw(st.sampled_from(['f', 'size', 'int', 'if', '.f', 'has']))}({args})"
    fields = ", ".join(f"{draw(st.sampled_from(['f', 'if', '?g']))}: {sub()}" for _ in range(draw(st.integers(0, 2))))
    return f"{draw(st.sampled_from(['A', 'a.B', '.a.b', 'if']))}{{{fields}}}"


@st.composite
def mutated(draw):
    text = list(draw(grammar()))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        action = draw(st.integers(0, 2))
        if action == 0 and text:
            del text[min(at, len(text) - 1)]
        else:
            piece = draw(st.sampled_from(list("()[]{}.,?:-!'\"\\ \nubrxe0`") + ["//", "'''", "\r"]))
            if action == 1:
                text.insert(at, piece)
            elif text:
                text[min(at, len(text) - 1)] = piece
    return "".join(text)


TOKENS = (
    LEAVES + BINARY + ["!", "?", ":", ".", ",", "(", ")", "[", "]", "{", "}", "has", "map", ".?", "[?", "{?", "é", "#"]
)
SPACES = ["", " ", "\n", "\t", "\f", "\r", "\v", "\x00"]  # CEL's whitespace, and two that are not
soup = st.lists(st.tuples(st.sampled_from(TOKENS), st.sampled_from(SPACES)), min_size=1, max_size=8).map(
    lambda parts: "".join(token + space for token, space in parts)
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=grammar() | mutated() | soup)
@example("!-x")
@example("-!x")
@example("--9223372036854775808")
@example("has(!!claims.x)")
@example("a?b?c:d:e")
@example("[,]")
@example("f(1,)")
@example("x.all(if, true)")
@example("if{}")
@example("r'''\x00'''")
def test_the_parser_accepts_exactly_what_the_engine_compiles(source):
    agree(source)


# --- literals -------------------------------------------------------------------------------------

PIECES = [
    "a",
    "é",
    "😀",
    " ",
    "\\n",
    "\\\\",
    "\\'",
    '\\"',
    "\\x41",
    "\\X7f",
    "\\101",
    "\\377",
    "\\400",
    "\\u00e9",
    "\\ud800",
    "\\U0001F600",
    "\\U00110000",
    "\\z",
    "\\",
    "'",
    '"',
    "\n",
    "\r",
    "\r\n",
    "\t",
    "\\?",
    "\\`",
    "\\a",
    "\\v",
    "''",
    '""',
    "'''",
    '"""',
    "\x00",
    "\\0",
    "\\12",
    "\\u12",
]
literal = st.builds(
    lambda prefix, quote, body: prefix + quote + "".join(body) + quote,
    st.sampled_from(["", "", "r", "R", "b", "B", "br", "bR", "Br", "rb"]),
    st.sampled_from(["'", '"', "'''", '"""']),
    st.lists(st.sampled_from(PIECES), max_size=5),
)
number = st.builds(
    lambda sign, digits, suffix: sign + digits + suffix,
    st.sampled_from(["", "-", "--", "- "]),
    st.sampled_from(
        [
            "0",
            "007",
            "9223372036854775807",
            "9223372036854775808",
            "0x7fffffffffffffff",
            "0x8000000000000000",
            "18446744073709551615",
            "1.5",
            "1e308",
            "1e309",
            ".5",
            "1e-400",
            "0xFFFFFFFFFFFFFFFF",
            "0x10000000000000000",
            "1.0e+2",
            "00.5",
        ]
    ),
    st.sampled_from(["", "", "u", "U"]),
)


def _value(tree):
    """A literal's value, through a negation (``--1`` is 1, ``-1u`` has no value)."""
    if isinstance(tree, Literal):
        return tree.value
    if isinstance(tree, Unary) and tree.op == "-" and isinstance(tree.operand, Literal) and tree.operand.kind != "uint":
        return -tree.operand.value
    return None


@settings(max_examples=1500, deadline=None)
@given(source=literal | number)
def test_literals_are_read_as_the_engine_reads_them(source):
    agree(source)
    if not parser_accepts(source):
        return
    ours = _value(expression_parse(source))
    try:
        theirs = cel.evaluate(source)
    except BaseException:  # noqa: BLE001 - e.g. -1u: no value, and none here either
        assert ours is None
        return
    if isinstance(theirs, float) and math.isnan(theirs):
        assert math.isnan(ours)
    else:
        assert ours == theirs and type(ours) is type(theirs), source


@pytest.mark.parametrize(
    "opening, closing", [("(", ")"), ("[", "]"), ("f(", ")"), ("x[", "]"), ("{1: ", "}"), ("true ? 1 : ", "")]
)
def test_the_engines_depth_limit_is_kept_to_the_level(opening, closing):
    # Each parenthesis, argument, element, index, entry or else-branch nests an expression; the
    # engine refuses the 97th: the parser too, at the same place.
    for depth in (MAX_EXPR_DEPTH - 2, MAX_EXPR_DEPTH - 1, MAX_EXPR_DEPTH, MAX_EXPR_DEPTH + 1):
        inner = "1" if opening not in ("[", "f(") else ""
        agree(opening * depth + inner + closing * depth)


@pytest.mark.parametrize("word", sorted(RESERVED_WORDS))
def test_reserved_words_are_refused_as_names_but_not_as_fields(word):
    for source in (
        word,
        f"{word}(1)",
        f".{word}",
        f"[{word}]",
        f"x.all({word}, true)",
        f"a.{word}",
        f"x.{word}()",
        f"{word}{{}}",
        f"A{{{word}: 1}}",
    ):
        agree(source)


# --- the rules people write -----------------------------------------------------------------------


def _corpus() -> list[str]:
    sources = []
    for preset in PRESETS:
        sources.append(preset.example_when)
        sources.extend(source for _, source, _ in preset.example_tags)
        if preset.example_source_identity:
            sources.append(preset.example_source_identity)
    document = yaml.safe_load((ROOT / "examples" / "acme.yaml").read_text())
    for tenant in document["tenants"]:
        for rule in tenant.get("rules", []):
            sources.append(rule["when"])
            sources.extend(v if isinstance(v, str) else v["value"] for v in (rule.get("session_tags") or {}).values())
            sources.extend((rule.get("claims") or {}).values())
            if rule.get("subject"):
                sources.append(rule["subject"])
            if rule.get("source_identity"):
                sources.append(rule["source_identity"])
    return sources


@pytest.mark.parametrize("source", _corpus())
def test_every_preset_and_example_rule_parses(source):
    assert engine_accepts(source) and parser_accepts(source), source


# --- the tree means what the engine means ---------------------------------------------------------


def unparse(node) -> str:
    """The tree with every operation in parentheses (literals as the engine writes them)."""
    if isinstance(node, Literal):
        if node.kind == "string":
            escaped = (f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}" for c in node.value)
            return "'" + "".join(escaped) + "'"
        if node.kind == "bytes":
            return "b'" + "".join(f"\\x{b:02x}" for b in node.value) + "'"
        if node.kind == "uint":
            return f"{node.value}u"
        if node.kind == "double":
            return repr(node.value)
        return {"bool": str(node.value).lower(), "null": "null"}.get(node.kind, str(node.value))
    if isinstance(node, Ident):
        return node.name
    if isinstance(node, Select):
        text = f"{unparse(node.operand)}.{node.field}"
        return f"has({text})" if node.test else f"({text})"
    if isinstance(node, Index):
        return f"({unparse(node.operand)}[{unparse(node.index)}])"
    if isinstance(node, Unary):
        return f"({node.op}({unparse(node.operand)}))"
    if isinstance(node, Binary):
        return f"({unparse(node.left)} {node.op} {unparse(node.right)})"
    if isinstance(node, Logic):
        return "(" + f" {node.op} ".join(unparse(term) for term in node.terms) + ")"
    if isinstance(node, Conditional):
        return f"({unparse(node.condition)} ? {unparse(node.then)} : {unparse(node.otherwise)})"
    if isinstance(node, ListLit):
        return "[" + ", ".join(unparse(element) for element in node.elements) + "]"
    if isinstance(node, MapLit):
        return "{" + ", ".join(f"{unparse(k)}: {unparse(v)}" for k, v in node.entries) + "}"
    if isinstance(node, Struct):
        return node.type_name + "{" + ", ".join(f"{name}: {unparse(v)}" for name, v in node.fields) + "}"
    if isinstance(node, Comprehension):
        args = ", ".join([node.variable, *(unparse(arg) for arg in node.args)])
        return f"({unparse(node.target)}.{node.macro}({args}))"
    assert isinstance(node, Call)
    args = ", ".join(unparse(arg) for arg in node.args)
    if node.target is not None:
        return f"({unparse(node.target)}.{node.function}({args}))"
    return f"{node.function}({args})"


CLAIMS = {"x": 3, "s": "ab", "l": [1, 2, 3], "m": {"k": 1}, "b": True}
ARITH_LEAVES = [
    "1",
    "2",
    "-3",
    "4u",
    "2.5",
    "'a'",
    "'b'",
    "true",
    "false",
    "claims.x",
    "claims.s",
    "claims.l",
    "claims.m",
    "claims.b",
    "[1, 2]",
    "{'k': 1}",
    "null",
]
ARITH_OPS = ["+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "in", "&&", "||"]


@st.composite
def closed(draw, depth=0):
    if depth > 3 or draw(st.integers(0, 2)) == 0:
        return draw(st.sampled_from(ARITH_LEAVES))

    def sub():
        return draw(closed(depth + 1))

    kind = draw(st.integers(0, 5))
    if kind <= 1:
        return " ".join([sub(), draw(st.sampled_from(ARITH_OPS)), sub(), draw(st.sampled_from(ARITH_OPS)), sub()])
    if kind == 2:
        return f"{sub()} ? {sub()} : {sub()} ? {sub()} : {sub()}"
    if kind == 3:
        return f"{draw(st.sampled_from(['!', '-', '!!', '--']))}{sub()}"
    if kind == 4:
        macro = draw(st.sampled_from(["map", "filter", "exists", "all"]))
        return f"claims.l.{macro}(v, {sub().replace('claims.x', 'v')})"
    return f"size({sub()})"


def _evaluate(source: str):
    try:
        return ("value", cel.compile(source).execute({"claims": CLAIMS}))
    except BaseException as exc:  # noqa: BLE001 - a Rust panic is an outcome to compare too
        return ("error", type(exc).__name__)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=closed())
def test_the_tree_keeps_the_engines_precedence_and_grouping(source):
    if not engine_accepts(source):
        return
    explicit = unparse(expression_parse(source))
    assert engine_accepts(explicit), explicit
    assert _evaluate(explicit) == _evaluate(source), (source, explicit)


def test_positions_are_lines_and_columns_in_characters():
    tree = expression_parse("'é😀' +\n  claims.x")
    assert isinstance(tree, Binary) and (tree.line, tree.column) == (1, 6)
    assert (tree.right.line, tree.right.column) == (2, 10)  # the field name
    with pytest.raises(CelSyntaxError) as error:
        expression_parse("'é' + ")
    assert (error.value.line, error.value.column) == (1, 7)  # where the engine reports it
