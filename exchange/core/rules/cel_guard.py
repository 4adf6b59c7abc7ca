"""CEL expressions a rule may use, and what keeps one from hanging a web process. Pure.

The CEL engine holds the GIL while it runs, and its ``map``/``filter`` copy their result at
every step, so a comprehension costs up to items² × result size. ``compile_expression``
refuses what could cost without bound (over-long or deeply nested source, nested
comprehensions, comprehensions over computed values, more than a few per expression) and
names outside ``claims``/``issuer``; ``claims_too_large`` bounds the claims a rule that
iterates may run over (limits in ``exchange.core.limits``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import cel

from ..limits import CEL_MAX_CLAIM_ITEMS, CEL_MAX_COMPREHENSIONS, CEL_MAX_EXPRESSION_LENGTH, CEL_MAX_ITERABLE_ITEMS

__all__ = ["MAX_NESTING_DEPTH", "PASSTHROUGH", "RuleSyntaxError", "blank_literals", "check_expression",
           "claims_too_large", "compile_expression", "iterates"]

# Parentheses/brackets/braces nesting a CEL expression may use; the Rust parser has its
# own (higher) recursion guard, this keeps hostile input cheap and messages clear.
MAX_NESTING_DEPTH = 32
# Names an expression may reference at top level.
_VARIABLES = frozenset({"claims", "issuer"})
# CEL type identifiers (``type(x) == int``) and the ``optional`` namespace are reported
# by ``Program.variables()`` as identifiers although they are not variables.
_BUILTIN_IDENTIFIERS = frozenset(
    {"int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type", "dyn", "optional"}
)
# Comprehension macros bind their first argument (two-variable forms also the second);
# ``Program.variables()`` lists those names too, so we find them in the source.
_MACRO_BINDING_RE = re.compile(
    r"\.\s*(?P<macro>all|exists_one|existsOne|exists|map|filter|transformList|transformMapEntry|transformMap|sortBy)"
    r"\s*\(\s*(?P<first>[A-Za-z_][A-Za-z0-9_]*)\s*,(?:\s*(?P<second>[A-Za-z_][A-Za-z0-9_]*)\s*,)?"
)
_TWO_VARIABLE_MACROS = frozenset({"all", "exists", "exists_one", "existsOne", "transformList", "transformMap", "transformMapEntry"})
_CEL_ERROR_RE = re.compile(r"<input>:(\d+):(\d+): ([^\n]*)")
# A comprehension macro call (CEL spec "Macros"; the two-variable and transform forms of the
# extensions too), found in code whose string literals and comments are blanked.
_COMPREHENSION_RE = re.compile(
    r"\.\s*(?P<macro>all|exists_one|existsOne|exists|map|filter|transformList|transformMapEntry|transformMap|sortBy)\s*\("
)
# What a comprehension may range over: a claim, reached by field names and indexes only.
_CLAIM_PATH_RE = re.compile(r"claims(?:\s*\.\s*[A-Za-z_][A-Za-z0-9_]*|\s*\[[^\[\]()]*\])*")
_COMPREHENSION_NAMES = "all, exists, exists_one, map, filter"

# Only the interpreter's own exits pass through; anything else the engine raises (pyo3's
# PanicException is a BaseException; so is a GeneratorExit, which has no business coming out
# of a plain call) is an evaluation failure, which denies.
PASSTHROUGH = (KeyboardInterrupt, SystemExit)


class RuleSyntaxError(ValueError):
    """A CEL expression (or another part of a rule) that cannot be compiled.

    ``line``/``column`` are 1-based and point into the expression, when known; ``field``
    names the rule field (``when``, ``session_tags.repository`` …) when raised by
    ``compile_rule``.
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


def blank_literals(source: str) -> str:
    """``source`` with its string literals and comments blanked (same length, same lines)."""
    return _scan(source)[0]


def _scan(source: str) -> tuple[str, tuple[int, int] | None]:
    """One pass over ``source``: the code with string literals and comments blanked out,
    and the (line, column) of the first bracket nested deeper than ``MAX_NESTING_DEPTH``.

    Blanking lets the nesting count and the macro-binding search ignore brackets and
    words inside strings. An unterminated literal simply runs to the end; the CEL parser
    reports it properly.
    """
    out: list[str] = []
    depth = 0
    too_deep: tuple[int, int] | None = None
    line, line_start = 1, 0
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        if ch == "\n":
            line, line_start = line + 1, i + 1
            out.append(ch)
            i += 1
        elif ch == "/" and source.startswith("//", i):
            end = source.find("\n", i)
            end = n if end < 0 else end
            out.append(" " * (end - i))
            i = end
        elif ch in "'\"":
            # A literal's prefix (r, b, rb, br in any case) sits right before the quote.
            j = i
            while j > 0 and source[j - 1] in "rRbB" and i - j < 2:
                j -= 1
            prefix = source[j:i]
            raw = "r" in prefix.lower() and (j == 0 or not (source[j - 1].isalnum() or source[j - 1] == "_"))
            quote = source[i : i + 3] if source.startswith(ch * 3, i) else ch
            k = i + len(quote)
            while k < n:
                if not raw and source[k] == "\\":
                    k += 2
                    continue
                if source.startswith(quote, k):
                    k += len(quote)
                    break
                if source[k] == "\n":
                    if len(quote) == 1:
                        break
                    line, line_start = line + 1, k + 1
                k += 1
            k = min(k, n)
            out.append("".join(c if c == "\n" else " " for c in source[i:k]))
            i = k
        else:
            if ch in "([{":
                depth += 1
                if depth > MAX_NESTING_DEPTH and too_deep is None:
                    too_deep = (line, i - line_start + 1)
            elif ch in ")]}":
                depth = max(depth - 1, 0)
            out.append(ch)
            i += 1
    return "".join(out), too_deep


def compile_expression(source: str, *, max_length: int = CEL_MAX_EXPRESSION_LENGTH) -> cel.Program:
    if not isinstance(source, str):
        raise RuleSyntaxError("The expression must be a string.")
    if not source.strip():
        raise RuleSyntaxError("The expression is empty.")
    if len(source) > max_length:
        raise RuleSyntaxError(f"The expression is {len(source)} characters long; the limit is {max_length}.")
    code, too_deep = _scan(source)
    if too_deep is not None:
        raise RuleSyntaxError(
            f"The expression nests parentheses or brackets deeper than {MAX_NESTING_DEPTH} levels.",
            line=too_deep[0],
            column=too_deep[1],
        )
    try:
        program = cel.compile(source)
    except PASSTHROUGH:
        raise
    except BaseException as exc:  # ValueError normally; a Rust panic must not escape either
        raise _syntax_error_from(exc) from None
    # Reject names the expression could never resolve (a typo such as ``claim.sub`` would
    # otherwise only surface as a deny at exchange time). Names bound by a comprehension
    # macro are legitimate; if a bound name is also used free elsewhere, evaluation fails
    # and denies, which is safe.
    try:
        names = set(program.variables())
    except PASSTHROUGH:
        raise
    except BaseException:
        names = set()
    unknown = names - _VARIABLES - _BUILTIN_IDENTIFIERS
    if unknown:
        unknown -= _macro_bound_names(code)
    if unknown:
        listed = ", ".join(repr(name) for name in sorted(unknown))
        raise RuleSyntaxError(f"Unknown name {listed}: an expression may use only 'claims' and 'issuer'.")
    _check_comprehensions(code)
    return program


def iterates(source: str) -> bool:
    return bool(_COMPREHENSION_RE.search(_scan(source)[0]))


def _position(code: str, index: int) -> tuple[int, int]:
    line_start = code.rfind("\n", 0, index) + 1
    return code.count("\n", 0, index) + 1, index - line_start + 1


def _closing(code: str, open_index: int) -> int:
    """Index of the bracket closing the one at ``open_index`` (len(code) if unbalanced)."""
    depth = 0
    for index in range(open_index, len(code)):
        if code[index] in "([{":
            depth += 1
        elif code[index] in ")]}":
            depth -= 1
            if depth == 0:
                return index
    return len(code)


def _receiver(code: str, dot: int) -> str:
    """The expression a macro is called on: walk back from its dot over names, dots and
    balanced ``[...]`` indexes; anything else (a call, parentheses, an operator) ends it."""
    j = dot - 1
    while True:
        while j >= 0 and code[j].isspace():
            j -= 1
        if j >= 0 and code[j] == "]":
            depth = 0
            while j >= 0:
                depth += code[j] == "]"
                depth -= code[j] == "["
                j -= 1
                if depth == 0:
                    break
            continue
        if j >= 0 and (code[j].isalnum() or code[j] == "_"):
            while j >= 0 and (code[j].isalnum() or code[j] == "_"):
                j -= 1
            k = j
            while k >= 0 and code[k].isspace():
                k -= 1
            if k >= 0 and code[k] == ".":
                j = k - 1
                continue
        break
    return code[j + 1 : dot].strip()


def _check_comprehensions(code: str) -> bool:
    """Bound what a comprehension can cost (see CEL_MAX_COMPREHENSIONS): no nesting, a
    claim as the range, a few per expression. True when the expression has any."""
    calls = [(m.start(), m.end() - 1, m["macro"]) for m in _COMPREHENSION_RE.finditer(code)]
    if len(calls) > CEL_MAX_COMPREHENSIONS:
        line, column = _position(code, calls[CEL_MAX_COMPREHENSIONS][0] + 1)
        raise RuleSyntaxError(
            f"An expression may use at most {CEL_MAX_COMPREHENSIONS} comprehensions ({_COMPREHENSION_NAMES}, …).",
            line=line,
            column=column,
        )
    spans = [(open_index, _closing(code, open_index)) for _, open_index, _ in calls]
    for dot, open_index, macro in calls:
        line, column = _position(code, dot + 1)
        if any(start < open_index < end for start, end in spans):
            # items^depth iterations, each copying a growing result: a handful of items hangs a worker.
            raise RuleSyntaxError(
                f"'{macro}' is inside another comprehension; comprehensions cannot be nested.", line=line, column=column
            )
        if not _CLAIM_PATH_RE.fullmatch(_receiver(code, dot)):
            raise RuleSyntaxError(
                f"'{macro}' may only range over a claim (such as claims.groups), not over a computed value.",
                line=line,
                column=column,
            )
    return bool(calls)


def claims_too_large(claims: Mapping[str, Any]) -> str | None:
    """Why ``claims`` are too big for a rule that iterates (CEL_MAX_ITERABLE_ITEMS,
    CEL_MAX_CLAIM_ITEMS), or None. Iterative: claims may nest as deep as JSON allows."""
    total = 0
    stack: list[Any] = [claims]
    while stack:
        value = stack.pop()
        items = list(value.values()) if isinstance(value, Mapping) else value
        if len(items) > CEL_MAX_ITERABLE_ITEMS:
            kind = "map" if isinstance(value, Mapping) else "list"
            return f"a {kind} in the claims has {len(items)} items (limit {CEL_MAX_ITERABLE_ITEMS} for rules that iterate)"
        total += len(items)
        if total > CEL_MAX_CLAIM_ITEMS:
            return f"the claims hold more than {CEL_MAX_CLAIM_ITEMS} list and map items (limit for rules that iterate)"
        stack.extend(item for item in items if isinstance(item, (list, tuple, Mapping)))
    return None


def _macro_bound_names(code: str) -> set[str]:
    bound: set[str] = set()
    for match in _MACRO_BINDING_RE.finditer(code):
        bound.add(match["first"])
        if match["second"] and match["macro"] in _TWO_VARIABLE_MACROS:
            bound.add(match["second"])
    return bound


def _syntax_error_from(exc: BaseException) -> RuleSyntaxError:
    text = str(exc)
    match = _CEL_ERROR_RE.search(text)
    if match:
        return RuleSyntaxError(match[3].strip(), line=int(match[1]), column=int(match[2]))
    # Unknown shape: keep the engine's words without the echoed source.
    _, _, tail = text.partition("ERROR: ")
    return RuleSyntaxError((tail or text or type(exc).__name__).strip().splitlines()[0])


def check_expression(source: str, *, max_length: int = CEL_MAX_EXPRESSION_LENGTH) -> None:
    """Raise ``RuleSyntaxError`` unless ``source`` is a CEL expression a rule may use."""
    compile_expression(source, max_length=max_length)


