"""CEL's tokens and syntax tree, as the engine jwtex runs reads them. Pure.

The engine (``common-expression-language`` 0.10, the Rust ``cel`` crate 0.14) parses with the
ANTLR grammar of the CEL specification (``CEL.g4``). This module is its lexer, rule for rule:
the longest match wins and a tie goes to the rule listed first (so ``in``, ``true``, ``false``
and ``null`` are keywords, ``1u`` is one unsigned literal and ``.5`` one double); whitespace is
space, tab, CR, LF and form feed; ``//`` starts a comment; a string is single, double, or
triple quoted, optionally raw (``r``/``R``) and optionally bytes (``b``/``B`` first). Literal
values are decoded as the engine decodes them (CEL's escapes; a bytes literal takes no ``\\u``;
triple-quoted strings turn CR LF and lone CR into LF), so a literal's value here is the value the
engine computes. ``cel_parser`` builds the tree from these tokens.

Positions are 1-based lines and columns in characters, the way the engine reports its errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Binary",
    "Call",
    "CelSyntaxError",
    "Comprehension",
    "Conditional",
    "Expr",
    "Ident",
    "Index",
    "ListLit",
    "Literal",
    "Logic",
    "MapLit",
    "Select",
    "Struct",
    "Token",
    "Unary",
    "expression_tokenize",
]


class CelSyntaxError(ValueError):
    """Source the engine refuses to compile; ``line``/``column`` 1-based, in characters."""

    def __init__(self, message: str, line: int, column: int) -> None:
        self.message, self.line, self.column = message, line, column
        super().__init__(f"line {line}, column {column}: {message}")


# --- the tree -------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Expr:
    line: int
    column: int


@dataclass(frozen=True, eq=False)
class Literal(Expr):
    kind: str  # int, uint, double, string, bytes, bool, null
    value: Any


@dataclass(frozen=True, eq=False)
class Ident(Expr):
    name: str  # with its leading dot, if written (".claims" names no variable)


@dataclass(frozen=True, eq=False)
class Select(Expr):
    operand: Expr
    field: str
    test: bool = False  # has(operand.field)


@dataclass(frozen=True, eq=False)
class Call(Expr):
    function: str
    args: tuple[Expr, ...]
    target: Expr | None = None  # receiver style: target.function(args)


@dataclass(frozen=True, eq=False)
class Unary(Expr):
    op: str  # "!" or "-" (an even run of them is no node at all: !!x is x)
    operand: Expr


@dataclass(frozen=True, eq=False)
class Binary(Expr):
    op: str  # * / % + - < <= > >= == != in
    left: Expr
    right: Expr


@dataclass(frozen=True, eq=False)
class Logic(Expr):
    op: str  # && or ||
    terms: tuple[Expr, ...]


@dataclass(frozen=True, eq=False)
class Conditional(Expr):
    condition: Expr
    then: Expr
    otherwise: Expr


@dataclass(frozen=True, eq=False)
class Index(Expr):
    operand: Expr
    index: Expr


@dataclass(frozen=True, eq=False)
class ListLit(Expr):
    elements: tuple[Expr, ...]


@dataclass(frozen=True, eq=False)
class MapLit(Expr):
    entries: tuple[tuple[Expr, Expr], ...]


@dataclass(frozen=True, eq=False)
class Struct(Expr):
    type_name: str
    fields: tuple[tuple[str, Expr], ...]


@dataclass(frozen=True, eq=False)
class Comprehension(Expr):
    """A macro over a list or a map (the map's keys): all, exists, exists_one (existsOne),
    map (two or three arguments: with three, a filter then the transform) and filter."""

    macro: str
    target: Expr
    variable: str
    args: tuple[Expr, ...]  # the predicate or transform; for map with three: filter, transform


# --- tokens ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    kind: str  # an operator's own text, or INT UINT FLOAT STRING BYTES IDENT ESC_IDENT EOF
    text: str
    line: int
    column: int
    value: Any = None  # a literal's decoded value


_KEYWORDS = {"true": "true", "false": "false", "null": "null", "in": "in"}
_OPERATORS = (
    "==",
    "!=",
    "<=",
    ">=",
    "&&",
    "||",
    "<",
    ">",
    "[",
    "]",
    "{",
    "}",
    "(",
    ")",
    ".",
    ",",
    "-",
    "!",
    "?",
    ":",
    "+",
    "*",
    "/",
    "%",
)
_ESC = r"""\\(?:[abfnrtv"'\\?`]|[0-3][0-7]{2}|[xX][0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8})"""
# STRING's eight alternatives; BYTES is a b or B before any of them. Triple quotes end at the
# first closing triple (the grammar's loops there are non-greedy); the engine's raw triple
# quotes (ANTLR's ``.``) take any character but NUL.
_STRING = re.compile(
    rf'''[rR]"""[^\x00]*?"""|[rR]\'\'\'[^\x00]*?\'\'\'|"""(?:{_ESC}|[^\\])*?"""|\'\'\'(?:{_ESC}|[^\\])*?\'\'\''''
    rf"""|[rR]"[^"\n\r]*"|[rR]'[^'\n\r]*'|"(?:{_ESC}|[^\\"\n\r])*"|'(?:{_ESC}|[^\\'\n\r])*\'"""
)
# NUM_FLOAT, NUM_INT and NUM_UINT are separate rules: each matches on its own, the longest wins.
_NUMBERS = (
    ("FLOAT", re.compile(r"[0-9]+\.[0-9]+(?:[eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+|\.[0-9]+(?:[eE][+-]?[0-9]+)?")),
    ("INT", re.compile(r"0x[0-9a-fA-F]+|[0-9]+")),
    ("UINT", re.compile(r"(?:0x[0-9a-fA-F]+|[0-9]+)[uU]")),
)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESC_IDENT = re.compile(r"`[A-Za-z0-9_./ -]+`")
_SKIP = re.compile(r"(?:[\t\n\r\f ]+|//[^\n]*)+")


def _candidates(source: str, i: int) -> list[tuple[int, str]]:
    """Every lexer rule that matches at ``i``: (end, kind), in the grammar's rule order."""
    found: list[tuple[int, str]] = []
    for op in _OPERATORS:
        if source.startswith(op, i):
            found.append((i + len(op), op))
            break
    ident = _IDENT.match(source, i)
    if ident and ident.group() in _KEYWORDS:
        found.append((ident.end(), _KEYWORDS[ident.group()]))
    if source[i : i + 1] in "0123456789.":
        for kind, pattern in _NUMBERS:
            match = pattern.match(source, i)
            if match:
                found.append((match.end(), kind))
    string = _STRING.match(source, i)
    if string:
        found.append((string.end(), "STRING"))
    if source[i : i + 1] in ("b", "B"):
        data = _STRING.match(source, i + 1)
        if data:
            found.append((data.end(), "BYTES"))
    if ident:
        found.append((ident.end(), "IDENT"))
    escaped = _ESC_IDENT.match(source, i)
    if escaped:
        found.append((escaped.end(), "ESC_IDENT"))
    return found


_SINGLE = frozenset("[]{}(),-?:+*/%")


def _fast(source: str, i: int) -> tuple[int, str]:
    """The token at ``i`` where only one rule can match (a name, a one-character operator);
    ``(0, "")`` where several might (a string prefix, a number, ``.``, ``<=``…)."""
    ch = source[i]
    if ch in _SINGLE:
        return i + 1, ch
    prefix = ch in "rRbB" and source[i + 1 : i + 2] in ("'", '"', "r", "R")  # perhaps a string's prefix
    if ch.isascii() and (ch.isalpha() or ch == "_") and not prefix:
        match = _IDENT.match(source, i)
        text = match.group()
        return match.end(), _KEYWORDS.get(text, "IDENT")
    return 0, ""


def expression_tokenize(source: str) -> list[Token]:
    """The tokens of ``source`` ending with EOF; ``CelSyntaxError`` where no rule matches or a
    literal's value is one the engine refuses."""
    tokens: list[Token] = []
    line, line_start, i, n = 1, 0, 0, len(source)
    while True:
        skipped = _SKIP.match(source, i)
        if skipped:
            chunk = skipped.group()
            if "\n" in chunk:
                line += chunk.count("\n")
                line_start = i + chunk.rindex("\n") + 1
            i = skipped.end()
        column = i - line_start + 1
        if i >= n:
            tokens.append(Token("EOF", "", line, column))
            return tokens
        end, kind = _fast(source, i)
        if not end:
            candidates = _candidates(source, i)
            if not candidates:
                raise CelSyntaxError(f"unexpected character {source[i]!r}", line, column)
            end = max(e for e, _ in candidates)
            kind = next(k for e, k in candidates if e == end)  # the first rule among the longest
        text = source[i:end]
        value = _literal_value(kind, text, line, column)
        tokens.append(Token(kind, text, line, column, value))
        if "\n" in text:
            line += text.count("\n")
            line_start = i + text.rindex("\n") + 1
        i = end


# --- literal values -------------------------------------------------------------------------------

_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    '"': '"',
    "'": "'",
    "\\": "\\",
    "?": "?",
    "`": "`",
}
_ESCAPE_RE = re.compile(_ESC)


def _literal_value(kind: str, text: str, line: int, column: int) -> Any:
    if kind == "STRING":
        return _string_value(text, line, column, as_bytes=False)
    if kind == "BYTES":
        return _string_value(text[1:], line, column, as_bytes=True)
    return None


def _string_value(text: str, line: int, column: int, *, as_bytes: bool) -> str | bytes:
    raw = text[0] in "rR"
    body = text[1:] if raw else text
    quote = 3 if body[:3] in ('"""', "'''") else 1
    content = body[quote:-quote]
    if quote == 3:
        content = content.replace("\r\n", "\n").replace("\r", "\n")
    if raw:
        return content.encode() if as_bytes else content
    out: list[bytes] | list[str] = []
    pos = 0
    for match in _ESCAPE_RE.finditer(content):
        out.append(content[pos : match.start()].encode() if as_bytes else content[pos : match.start()])
        out.append(_escape(match.group(), line, column, as_bytes=as_bytes))
        pos = match.end()
    out.append(content[pos:].encode() if as_bytes else content[pos:])
    return b"".join(out) if as_bytes else "".join(out)  # type: ignore[arg-type]


def _escape(escape: str, line: int, column: int, *, as_bytes: bool) -> str | bytes:
    what = "bytes" if as_bytes else "string"
    letter = escape[1]
    if letter in _SIMPLE_ESCAPES:
        char = _SIMPLE_ESCAPES[letter]
        return char.encode() if as_bytes else char
    if letter in "xX":
        code = int(escape[2:], 16)
    elif letter in "uU":
        if as_bytes:
            raise CelSyntaxError(f"invalid {what} literal: {escape[:2]} is not an escape of bytes", line, column)
        code = int(escape[2:], 16)
        if 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
            raise CelSyntaxError(f"invalid {what} literal: {escape} is not a Unicode character", line, column)
    else:  # octal, three digits, the first 0-3
        code = int(escape[1:], 8)
    return bytes([code]) if as_bytes else chr(code)
