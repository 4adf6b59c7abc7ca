"""One CEL expression of a rule: compiled by the engine, read into a tree, checked and costed. Pure.

``expression_compile`` refuses what the engine cannot run at all (its syntax errors, with line
and column) and what keeps a hostile source cheap to even look at (``CEL_MAX_EXPRESSION_LENGTH``
characters, ``MAX_NESTING_DEPTH`` brackets). What it returns carries the tree (``cel_parser``),
the problems that refuse it when a rule is *saved* (unknown names and functions, wrong
argument counts, patterns that cannot be costed, trees deeper than ``MAX_TREE_DEPTH`` — the
engine recurses once a level — or comprehensions nested deeper than ``MAX_COMPREHENSION_DEPTH``)
and its worst-case cost at each ``PROFILE_STEPS`` bound on the claims (``cel_cost``).

A rule saved before these checks existed still compiles (only its cost is enforced, when it
runs: ``engine``), so tightening them never switches a tenant off.

``claims_step`` measures the claims of one exchange against ``PROFILE_STEPS`` (once per
exchange, only when a rule's cost depends on it).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cel

from ..limits import CEL_MAX_CLAIM_ITEMS, CEL_MAX_EXPRESSION_LENGTH, CEL_MAX_ITERABLE_ITEMS
from .cel_checks import Problem, children, name_problems
from .cel_cost import PROFILE_ITERATING, PROFILE_MAX, UNBOUNDED, Profile, expression_cost
from .cel_parser import expression_parse
from .cel_syntax import CelSyntaxError, Comprehension, Expr, Token, expression_tokenize

__all__ = [
    "MAX_NESTING_DEPTH",
    "PASSTHROUGH",
    "PROFILE_STEPS",
    "CompiledExpression",
    "RuleSyntaxError",
    "check_expression",
    "claims_step",
    "expression_compile",
]

# Brackets an expression may nest: a cheap bound checked before anything else reads it.
MAX_NESTING_DEPTH = 32
# Levels of the tree (a.b.c…, 1 + 2 + …): the engine evaluates recursively, one native stack frame
# a level, so a deep tree could overflow a server thread's stack; no real rule comes near.
MAX_TREE_DEPTH = 128
# Comprehensions inside comprehensions (each level multiplies the cost; the estimate looks at a
# body twice per level).
MAX_COMPREHENSION_DEPTH = 3
# The bounds on the claims a cost is computed for, smallest first. The step an exchange's claims
# fall into decides what each rule is charged; PROFILE_ITERATING is the bound a rule must fit at
# save (its cost within the budget), PROFILE_MAX any token jwtex accepts.
PROFILE_STEPS: tuple[Profile, ...] = (
    Profile(items=1 + 2 * 64, length=32, bytes=4096),  # a usual CI token: a few dozen claims, short lists
    PROFILE_ITERATING,
    PROFILE_MAX,
)
SAVE_STEP = PROFILE_STEPS.index(PROFILE_ITERATING)

# Only the interpreter's own exits pass through; anything else the engine raises (pyo3's
# PanicException is a BaseException; so is a GeneratorExit, which has no business coming out
# of a plain call) is an evaluation failure, which denies.
PASSTHROUGH = (KeyboardInterrupt, SystemExit)


class RuleSyntaxError(ValueError):
    """A CEL expression (or another part of a rule) that cannot be compiled.

    ``line``/``column`` are 1-based and point into the expression, when known; ``field``
    names the rule field (``when``, ``session_tags.repository`` …) when raised by
    ``rule_compile``.
    """

    def __init__(self, message: str, *, line: int | None = None, column: int | None = None, field: str | None = None):
        self.message = message
        self.line = line
        self.column = column
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"line {self.line}, column {self.column}: " if self.line is not None else ""
        prefix = f"{self.field}: " if self.field else ""
        return f"{prefix}{where}{self.message}"

    def with_field(self, field_path: str) -> RuleSyntaxError:
        return RuleSyntaxError(self.message, line=self.line, column=self.column, field=field_path)


@dataclass(frozen=True, eq=False)
class CompiledExpression:
    source: str
    program: cel.Program = field(repr=False)
    tree: Expr | None = field(repr=False)  # None: compiled by the engine, but not read here (never seen)
    problems: tuple[Problem, ...] = ()  # what refuses it when a rule is saved
    costs: tuple[float, ...] = ()  # worst-case cost units at each PROFILE_STEPS step


def _engine_compile(source: str) -> cel.Program:
    try:
        return cel.compile(source)
    except PASSTHROUGH:
        raise
    except BaseException as exc:  # noqa: BLE001 - ValueError normally; a Rust panic must not escape either
        text = str(exc)
        _, _, tail = text.partition("ERROR: <input>:")
        location, _, message = tail.partition(": ")
        line, _, column = location.partition(":")
        if line.isdigit() and column.isdigit():
            raise RuleSyntaxError(_plain(message.split("\n")[0].strip()), line=int(line), column=int(column)) from None
        _, _, tail = text.partition("ERROR: ")
        raise RuleSyntaxError((tail or text or type(exc).__name__).strip().splitlines()[0]) from None


_UNRECOGNISED = "Syntax error: token recognition error at: "


def _plain(message: str) -> str:
    """The engine's lexer message in words: an unterminated string, or the character it cannot read."""
    if not message.startswith(_UNRECOGNISED):
        return message
    text = message[len(_UNRECOGNISED) + 1 : -1] if message.endswith("'") else message[len(_UNRECOGNISED) :]
    body = text.lstrip("rRbB")
    if body[:1] in ("'", '"'):
        quote = body[:3] if body[:3] in ("'''", '"""') else body[:1]
        return f"Unterminated string: it opens with {quote} here and is never closed."
    return f"Syntax error: unexpected character {text[:1]!r}."


def _bracket_depth(tokens: list[Token]) -> tuple[int, int] | None:
    """The (line, column) of the first bracket nested deeper than MAX_NESTING_DEPTH, or None."""
    depth = 0
    for token in tokens:
        if token.kind in ("(", "[", "{"):
            depth += 1
            if depth > MAX_NESTING_DEPTH:
                return token.line, token.column
        elif token.kind in (")", "]", "}"):
            depth = max(depth - 1, 0)
    return None


def _shape_problems(tree: Expr) -> list[Problem]:
    """Trees too deep for the engine's stack, and comprehensions nested too deeply (iteratively)."""
    problems: list[Problem] = []
    stack: list[tuple[Expr, int, int]] = [(tree, 1, 0)]
    deep = nested = False
    while stack:
        node, depth, comprehensions = stack.pop()
        if depth > MAX_TREE_DEPTH and not deep:
            deep = True
            problems.append(
                Problem(
                    f"The expression nests more than {MAX_TREE_DEPTH} operations inside each "
                    "other; split it or use lists (x in ['a', 'b']).",
                    node.line,
                    node.column,
                )
            )
        if isinstance(node, Comprehension):
            comprehensions += 1
            if comprehensions > MAX_COMPREHENSION_DEPTH and not nested:
                nested = True
                problems.append(
                    Problem(f"Comprehensions nest at most {MAX_COMPREHENSION_DEPTH} deep.", node.line, node.column)
                )
        stack.extend((child, depth + 1, comprehensions) for child in children(node))
    return problems


def expression_compile(source: str, *, max_length: int = CEL_MAX_EXPRESSION_LENGTH) -> CompiledExpression:
    if not isinstance(source, str):
        raise RuleSyntaxError("The expression must be a string.")
    return _compile(source, max_length)


@functools.lru_cache(maxsize=1024)  # the same sources recur (claims.sub, aws_tag(claims.actor)…); values are immutable
def _compile(source: str, max_length: int) -> CompiledExpression:
    if not isinstance(source, str):
        raise RuleSyntaxError("The expression must be a string.")
    if not source.strip():
        raise RuleSyntaxError("The expression is empty.")
    if len(source) > max_length:
        raise RuleSyntaxError(f"The expression is {len(source)} characters long; the limit is {max_length}.")
    try:
        tokens: list[Token] | None = expression_tokenize(source)
    except CelSyntaxError:
        tokens = None  # the engine says what is wrong, in its words
    too_deep = _bracket_depth(tokens) if tokens is not None else None
    if too_deep is not None:
        raise RuleSyntaxError(
            f"The expression nests parentheses or brackets deeper than {MAX_NESTING_DEPTH} levels.",
            line=too_deep[0],
            column=too_deep[1],
        )
    program = _engine_compile(source)
    try:
        tree = expression_parse(tokens if tokens is not None else source)
    except CelSyntaxError as exc:  # our reading disagrees with the engine's: never run what cannot be costed
        problem = Problem(
            f"jwtex cannot analyse this expression ({exc.message}); please report it.", exc.line, exc.column
        )
        return CompiledExpression(source, program, None, (problem,), (UNBOUNDED,) * len(PROFILE_STEPS))
    problems = _shape_problems(tree)
    if problems:
        return CompiledExpression(source, program, tree, tuple(problems), (UNBOUNDED,) * len(PROFILE_STEPS))
    costs = tuple(expression_cost(tree, profile) for profile in PROFILE_STEPS)
    return CompiledExpression(source, program, tree, tuple(name_problems(tree)), costs)


def check_expression(source: str, *, max_length: int = CEL_MAX_EXPRESSION_LENGTH) -> CompiledExpression:
    """Raise ``RuleSyntaxError`` unless ``source`` is a CEL expression a rule may be saved with
    (its cost is judged with the rest of the rule: ``spec``)."""
    compiled = expression_compile(source, max_length=max_length)
    if compiled.problems:
        first = compiled.problems[0]
        raise RuleSyntaxError(first.message, line=first.line, column=first.column)
    return compiled


def claims_step(claims: Mapping[str, Any]) -> tuple[int, str]:
    """The first ``PROFILE_STEPS`` step the claims fit and, beyond the step a rule must fit when
    saved, what makes them large (for a denial's reason). Claims must be at most 16 KiB of JSON
    (``PROFILE_MAX``), which is all a token or the simulator lets in: past the saved rules' bound
    the walk stops and the largest step is assumed."""
    if type(claims) is dict and _FLAT.issuperset(map(type, claims.values())):  # the usual token: quick
        try:
            text = "".join(claims) + "".join([value for value in claims.values() if type(value) is str])
        except TypeError:  # a key that is not a string (never from JSON): the walk below
            pass
        else:
            return _first_step(
                1 + 2 * len(claims), len(claims), len(text) if text.isascii() else len(text.encode())
            ), ""
    total = longest = size = 0
    values = 1  # the values cel_cost counts: the claims, every element, every map key and value
    stack: list[Any] = [claims]
    while stack:  # iterative: claims nest as deep as JSON allows
        value = stack.pop()
        if isinstance(value, str):
            size += len(value) if value.isascii() else len(value.encode())
            continue
        if isinstance(value, Mapping):
            items = list(value.values())
            size += sum(len(k) if k.isascii() else len(k.encode()) for k in value if isinstance(k, str))
            values += 2 * len(items)
        elif isinstance(value, (list, tuple)):
            items = list(value)
            values += len(items)
        else:
            continue
        total += len(items)
        longest = max(longest, len(items))
        if longest > CEL_MAX_ITERABLE_ITEMS:  # past the bound rules are saved for: the largest step
            return len(PROFILE_STEPS) - 1, (
                f"a list or map in the claims has {longest} items (limit {CEL_MAX_ITERABLE_ITEMS} for costly rules)"
            )
        if total > CEL_MAX_CLAIM_ITEMS:
            return len(
                PROFILE_STEPS
            ) - 1, f"the claims hold more than {CEL_MAX_CLAIM_ITEMS} list and map items (limit for costly rules)"
        stack.extend(items)
    # Within the saved rules' bound (total ≤ 512, so values ≤ 1 + 2 × 512): the first step that fits.
    return _first_step(values, longest, size), ""


_FLAT = frozenset({str, int, float, bool, type(None)})


_BOUNDS = tuple((profile.items, profile.length, profile.bytes) for profile in PROFILE_STEPS)


def _first_step(values: int, longest: int, size: int) -> int:
    for step, (items, length, text) in enumerate(_BOUNDS):
        if values <= items and longest <= length and size <= text:
            return step
    return len(_BOUNDS) - 1
