"""What a rule's CEL may name and call, checked on its syntax tree before it is saved. Pure.

The engine compiles any call by name and fails only when it runs it ("Undefined variable or
function"), so a rule calling ``startsWith(claims.ref)`` would save and then deny every
exchange. ``FUNCTIONS`` is exactly what the engine (``common-expression-language`` 0.10) and
jwtex provide, in the call style each takes (a global call ``size(x)``, a call on a receiver
``x.size()``, or both) and with how many arguments; ``tests/exchange/core/rules`` hold this table
to the engine itself, entry by entry. The macros (``has``, ``all``, ``exists``, ``exists_one``,
``map``, ``filter``) are the parser's; a call with their name and the wrong arguments is an
ordinary call the engine cannot resolve, and is refused here with what to write instead.

``claim_path`` names the claim an expression reads (``claims.x``, ``claims['x']``), for the
owner-pinning check and for the warning when a number is compared with a claim the issuer's
platform sends as a string.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from .cel_regex import pattern_cost
from .cel_syntax import (
    Binary,
    Call,
    Comprehension,
    Conditional,
    Expr,
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

__all__ = ["FUNCTIONS", "Function", "Problem", "VARIABLES", "children", "claim_path", "name_problems", "type_warnings"]

VARIABLES = frozenset({"claims", "issuer"})
# Type names are values in CEL (type(x) == string); these are the ones the engine defines.
TYPE_NAMES = frozenset(
    {"int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type", "optional_type"}
)


@dataclass(frozen=True)
class Problem:
    message: str
    line: int
    column: int


@dataclass(frozen=True)
class Function:
    """``global_args``: the argument counts of ``name(…)``; ``receiver_args``: of ``x.name(…)``
    (not counting ``x``); ``example`` shows the right way to call it."""

    global_args: tuple[int, ...] = ()
    receiver_args: tuple[int, ...] = ()
    example: str = ""


_TIME_PARTS = ("getFullYear", "getMonth", "getDayOfYear", "getDayOfMonth", "getDate", "getDayOfWeek")
_CLOCK_PARTS = ("getHours", "getMinutes", "getSeconds", "getMilliseconds")
FUNCTIONS: Mapping[str, Function] = {
    "size": Function((1,), (0,), "size(claims.groups) or claims.groups.size()"),
    "contains": Function((), (1,), "claims.ref.contains('release')"),
    "startsWith": Function((), (1,), "claims.ref.startsWith('refs/heads/')"),
    "endsWith": Function((), (1,), "claims.workflow_ref.endsWith('@refs/heads/main')"),
    "matches": Function((), (1,), "claims.ref.matches('^refs/heads/release-[0-9]+$')"),
    "int": Function((1,), (), "int(claims.run_number)"),
    "uint": Function((1,), (), "uint(claims.run_number)"),
    "double": Function((1,), (), "double(claims.score)"),
    "string": Function((1,), (), "string(claims.run_id)"),
    "bytes": Function((1,), (), "bytes(claims.sub)"),
    "type": Function((1,), (), "type(claims.aud) == list"),
    "dyn": Function((1,), (), "dyn(claims.aud)"),
    "duration": Function((1,), (), "duration('1h')"),
    "timestamp": Function((1,), (), "timestamp('2030-01-01T00:00:00Z')"),
    **{name: Function((), (0,), f"timestamp(claims.x).{name}()") for name in _TIME_PARTS},
    **{name: Function((), (0,), f"duration(claims.x).{name}()") for name in _CLOCK_PARTS},
    "optional.of": Function((1,), (), "optional.of(claims.x)"),
    "optional.ofNonZeroValue": Function((1,), (), "optional.ofNonZeroValue(claims.x)"),
    "optional.none": Function((0,), (), "optional.none()"),
    "value": Function((), (0,), "optional.of(claims.x).value()"),
    "hasValue": Function((), (0,), "optional.of(claims.x).hasValue()"),
    "or": Function((), (1,), "optional.none().or(optional.of(1))"),
    "orValue": Function((), (1,), "optional.none().orValue(1)"),
    # jwtex's own (docs/rules.md#aws_tag); the engine passes a receiver as the first argument of a
    # Python function.
    "aws_tag": Function((1,), (0,), "aws_tag(claims.actor)"),
    # docs/rules.md#aws_source_identity
    "aws_source_identity": Function((1,), (0,), "aws_source_identity(claims.actor)"),
}
_MACRO_FORMS = {
    "has": "has(claims.environment) — one field selection",
    "all": "claims.groups.all(g, g.startsWith('team-')) — a variable and a condition",
    "exists": "claims.groups.exists(g, g == 'admins') — a variable and a condition",
    "exists_one": "claims.groups.exists_one(g, g == 'admins') — a variable and a condition",
    "existsOne": "claims.groups.existsOne(g, g == 'admins') — a variable and a condition",
    "map": "claims.groups.map(g, aws_tag(g)) — a variable and a result (or a variable, a filter and a result)",
    "filter": "claims.groups.filter(g, g.startsWith('aws-')) — a variable and a condition",
}
_NAMESPACED = frozenset({"of", "ofNonZeroValue", "none"})


def children(node: Expr) -> Iterator[Expr]:
    """The direct subexpressions of ``node``, in source order."""
    if isinstance(node, Select):
        yield node.operand
    elif isinstance(node, Call):
        if node.target is not None:
            yield node.target
        yield from node.args
    elif isinstance(node, Unary):
        yield node.operand
    elif isinstance(node, (Binary,)):
        yield node.left
        yield node.right
    elif isinstance(node, Logic):
        yield from node.terms
    elif isinstance(node, Conditional):
        yield from (node.condition, node.then, node.otherwise)
    elif isinstance(node, Index):
        yield node.operand
        yield node.index
    elif isinstance(node, ListLit):
        yield from node.elements
    elif isinstance(node, MapLit):
        for key, value in node.entries:
            yield key
            yield value
    elif isinstance(node, Struct):
        for _, value in node.fields:
            yield value
    elif isinstance(node, Comprehension):
        yield node.target
        yield from node.args


def namespaced(node: Call) -> str | None:
    """``optional.of(x)`` is the global function ``optional.of``, not ``of`` called on a variable."""
    target = node.target
    if isinstance(target, Ident) and target.name == "optional" and node.function in _NAMESPACED:
        return f"optional.{node.function}"
    return None


def name_problems(tree: Expr) -> list[Problem]:
    """Every name the engine could not resolve and every call it has no function for, in source
    order (iteratively: trees can be deep)."""
    problems: list[Problem] = []
    stack: list[tuple[Expr, frozenset[str]]] = [(tree, frozenset())]
    while stack:
        node, bound = stack.pop()
        problem = _problem(node, bound)
        if problem is not None:
            problems.append(problem)
        kids: list[tuple[Expr, frozenset[str]]] = []
        if isinstance(node, Comprehension):
            kids.append((node.target, bound))
            kids.extend((arg, bound | {node.variable}) for arg in node.args)
        elif isinstance(node, Call) and namespaced(node) is not None:
            kids.extend((arg, bound) for arg in node.args)
        else:
            kids.extend((child, bound) for child in children(node))
        stack.extend(reversed(kids))
    return sorted(problems, key=lambda p: (p.line, p.column))


def _problem(node: Expr, bound: frozenset[str]) -> Problem | None:
    where = (node.line, node.column)
    if isinstance(node, Ident):
        if node.name in bound or node.name in VARIABLES or node.name in TYPE_NAMES:
            return None
        if node.name.startswith("."):
            return Problem(f"Unknown name {node.name!r}: write {node.name[1:]!r} without the leading dot.", *where)
        return Problem(f"Unknown name {node.name!r}: an expression may use only 'claims' and 'issuer'.", *where)
    if isinstance(node, Struct):
        return Problem(
            f"{node.type_name}{{…}} builds a message, and no message types are defined here; "
            "use a map: {'key': value}.",
            *where,
        )
    if isinstance(node, Comprehension):
        if isinstance(node.target, Literal):
            return Problem(f"{node.macro}() ranges over a list or a map, not a {node.target.kind}.", *where)
        return None
    if not isinstance(node, Call):
        return None
    name = namespaced(node) or node.function
    arity = len(node.args)
    if name in _MACRO_FORMS:
        return Problem(f"{name}() is not written like this; the form is {_MACRO_FORMS[name]}.", *where)
    function = FUNCTIONS.get(name)
    if function is None:
        known = ", ".join(sorted(n for n in FUNCTIONS if "." not in n and n not in _TIME_PARTS + _CLOCK_PARTS))
        return Problem(
            f"Unknown function {name!r}. Functions a rule may call: {known} (and the macros has, all, "
            "exists, exists_one, map, filter).",
            *where,
        )
    receiver = node.target is not None and namespaced(node) is None
    allowed = function.receiver_args if receiver else function.global_args
    if arity in allowed:
        if name == "matches":
            pattern = node.args[0]
            if not _is_string_literal(pattern):
                return Problem(
                    "matches() needs a literal pattern (a string in quotes): the cost of a pattern "
                    "taken from the claims cannot be bounded.",
                    pattern.line,
                    pattern.column,
                )
            problem = pattern_cost(pattern.value).problem  # type: ignore[attr-defined]
            if problem:
                return Problem(f"matches(): {problem}.", pattern.line, pattern.column)
        return None
    if not allowed and receiver:
        return Problem(f"{name} is not called on a value: it is a global function, e.g. {function.example}.", *where)
    if not allowed:
        return Problem(f"{name} is not a global function: call it on a value, e.g. {function.example}.", *where)
    counts = " or ".join(str(n) for n in allowed)
    plural = "" if allowed == (1,) else "s"
    return Problem(
        f"{name} takes {counts} argument{plural}{' besides its receiver' if receiver else ''}, not "
        f"{arity}; e.g. {function.example}.",
        *where,
    )


def _is_string_literal(node: Expr) -> bool:
    return isinstance(node, Literal) and node.kind == "string"


def claim_path(node: Expr) -> str | None:
    """The top-level claim ``node`` reads as a whole (``claims.x`` or ``claims['x']``), or None."""
    if isinstance(node, Select) and not node.test and isinstance(node.operand, Ident) and node.operand.name == "claims":
        return node.field
    if (
        isinstance(node, Index)
        and isinstance(node.operand, Ident)
        and node.operand.name == "claims"
        and _is_string_literal(node.index)
    ):
        return node.index.value  # type: ignore[attr-defined]
    return None


def _number(node: Expr) -> Literal | None:
    if isinstance(node, Unary) and node.op == "-":
        node = node.operand
    return node if isinstance(node, Literal) and node.kind in ("int", "uint", "double") else None


def type_warnings(tree: Expr, claim_types: Mapping[str, tuple[str, str]]) -> list[Problem]:
    """Comparisons that can never be true because the claim's documented type differs: a number
    with a claim sent as a string (``claims.repository_owner_id == 1342004``), or a string with
    one sent as a number. ``claim_types``: claim → (``string`` or ``number``, platform)."""
    warnings: list[Problem] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        stack.extend(children(node))
        if not isinstance(node, Binary) or node.op not in ("==", "!=", "<", "<=", ">", ">=", "in"):
            continue
        sides = [(node.left, node.right)] if node.op == "in" else [(node.left, node.right), (node.right, node.left)]
        for claim_side, other in sides:
            name = claim_path(claim_side)
            if name is None or name not in claim_types:
                continue
            kind, platform = claim_types[name]
            literals = list(other.elements) if node.op == "in" and isinstance(other, ListLit) else [other]
            if node.op == "in" and not isinstance(other, ListLit):
                continue
            for literal in literals:
                number = _number(literal)
                if kind == "string" and number is not None:
                    text = str(number.value)
                    warnings.append(
                        Problem(
                            f"claims.{name} is a string in {platform} tokens ('{text}'), "
                            f"so comparing it with the number {text} is never true; write '{text}'.",
                            literal.line,
                            literal.column,
                        )
                    )
                elif kind == "number" and _is_string_literal(literal):
                    warnings.append(
                        Problem(
                            f"claims.{name} is a number in {platform} tokens, so comparing it with the string "
                            f"{literal.value!r} is never true; write it without quotes.",
                            literal.line,
                            literal.column,
                        )
                    )
    return sorted(warnings, key=lambda p: (p.line, p.column))
