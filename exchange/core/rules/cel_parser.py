"""A CEL expression → its syntax tree, accepting exactly what the engine compiles. Pure.

The grammar is the CEL specification's (``CEL.g4``), as the engine's ANTLR parser reads it:

    expr     = or ["?" or ":" expr]             or  = and {"||" and}      and = rel {"&&" rel}
    rel      = calc {("<"|"<="|">="|">"|"=="|"!="|"in") calc}    (one level, left to right)
    calc     = mul {("+"|"-") mul}              mul = unary {("*"|"/"|"%") unary}
    unary    = member | "!"{"!"} member | "-"{"-"} member
    member   = primary {"." IDENT ["(" [args] ")"] | "[" expr "]"}
    primary  = ["."] IDENT ["(" [args] ")"] | ["."] IDENT {"." IDENT} "{" [fields] [","] "}"
             | "(" expr ")" | "[" [elems] [","] "]" | "{" [entries] [","] "}" | literal

and with the engine's own refusals: the optional syntax (``.?``, ``[?``, ``{?k: v}``) and
backquoted names; the reserved words (``if``, ``let``, …) as names; a literal out of range; a
``has()`` whose argument is not a field selection; a comprehension whose variable is not a
simple name; and more than ``MAX_EXPR_DEPTH`` nested expressions (parentheses, arguments,
elements, indexes, the ``else`` of a ternary each nest one). Where the grammar is ambiguous the
engine's choice is kept: a single ``-`` before a number is part of the literal (``-1``,
``-9223372036854775808``), several are negations of an unsigned literal; the middle of a ternary
is not itself a ternary; the type name of ``a.b{…}`` is not an expression.

Macros (CEL's ``has``, ``all``, ``exists``, ``exists_one``/``existsOne``, ``map``, ``filter``)
become their own nodes, as the engine expands them; everything else is a call by name.
"""

from __future__ import annotations

from .cel_syntax import (
    Binary,
    Call,
    CelSyntaxError,
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
    Token,
    Unary,
    expression_tokenize,
)

__all__ = ["MAX_EXPR_DEPTH", "RESERVED_WORDS", "expression_parse"]

# The engine's parser refuses an expression nested in 96 others (its recursion limit).
MAX_EXPR_DEPTH = 96
RESERVED_WORDS = frozenset(
    {
        "as",
        "break",
        "const",
        "continue",
        "else",
        "for",
        "function",
        "if",
        "import",
        "let",
        "loop",
        "package",
        "namespace",
        "return",
        "var",
        "void",
        "while",
    }
)
_MACROS = {"all": (2,), "exists": (2,), "exists_one": (2,), "existsOne": (2,), "map": (2, 3), "filter": (2,)}
_PRECEDENCE = {
    "||": 1,
    "&&": 2,
    "<": 3,
    "<=": 3,
    ">=": 3,
    ">": 3,
    "==": 3,
    "!=": 3,
    "in": 3,
    "+": 4,
    "-": 4,
    "*": 5,
    "/": 5,
    "%": 5,
}
_LITERAL_TOKENS = frozenset({"INT", "UINT", "FLOAT", "STRING", "BYTES", "true", "false", "null"})
_INT_MIN, _INT_MAX, _UINT_MAX = -(2**63), 2**63 - 1, 2**64 - 1


def expression_parse(source: str | list[Token]) -> Expr:
    """The tree of ``source`` (or of its ``expression_tokenize``d tokens); ``CelSyntaxError`` (with line and
    column) wherever the engine would refuse to compile it."""
    return _Parser(expression_tokenize(source) if isinstance(source, str) else source).start()


class _Run:
    """A run of ``&&`` or ``||`` being grouped (becomes one ``Logic`` node)."""

    def __init__(self, op: str, first: Expr, terms: list[Expr]) -> None:
        self.op, self.first, self.terms = op, first, terms

    def logic(self) -> Logic:
        return Logic(self.first.line, self.first.column, self.op, tuple(self.terms))


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.depth = 0

    # -- tokens
    @property
    def token(self) -> Token:
        return self.tokens[self.pos]

    def peek(self, ahead: int = 1) -> Token:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def take(self) -> Token:
        token = self.tokens[self.pos]
        if token.kind != "EOF":
            self.pos += 1
        return token

    def expect(self, kind: str) -> Token:
        if self.token.kind != kind:
            raise self.unexpected(f"expected {kind!r}")
        return self.take()

    def unexpected(self, wanted: str = "") -> CelSyntaxError:
        token = self.token
        shown = "the end of the expression" if token.kind == "EOF" else repr(token.text)
        return CelSyntaxError(f"unexpected {shown}" + (f", {wanted}" if wanted else ""), token.line, token.column)

    # -- rules
    def start(self) -> Expr:
        tree = self.expr()
        if self.token.kind != "EOF":
            raise self.unexpected("expected the end of the expression")
        return tree

    def expr(self) -> Expr:
        """A ternary chain, right to left (``a ? b : c ? d : e``); each ``else`` nests one level.
        Only brackets recurse (a few frames a level), so the engine's 96 levels fit Python's stack."""
        entered = self.depth
        heads: list[tuple[Token, Expr, Expr]] = []
        while True:
            self.depth += 1
            if self.depth > MAX_EXPR_DEPTH:
                token = self.token
                raise CelSyntaxError(
                    f"the expression nests deeper than {MAX_EXPR_DEPTH} levels", token.line, token.column
                )
            condition = self.operators()
            if self.token.kind != "?":
                break
            question = self.take()
            then = self.operators()
            self.expect(":")
            heads.append((question, condition, then))
        self.depth = entered
        result = condition
        for question, head, then in reversed(heads):
            result = Conditional(question.line, question.column, head, then, result)
        return result

    def operators(self) -> Expr:
        """Operands joined by binary operators, grouped by precedence, each level left to right;
        a run of ``&&`` (or ``||``) is one node, as the engine makes it."""
        operands: list[Expr] = [self.unary()]
        ops: list[Token] = []
        while self.token.kind in _PRECEDENCE:
            ops.append(self.take())
            operands.append(self.unary())
        for level in (5, 4, 3, 2, 1):
            if not any(_PRECEDENCE[op.kind] == level for op in ops):
                continue
            merged_operands, merged_ops = [operands[0]], []
            for op, right in zip(ops, operands[1:], strict=True):
                if _PRECEDENCE[op.kind] != level:
                    merged_ops.append(op)
                    merged_operands.append(right)
                    continue
                left = merged_operands.pop()
                if op.kind in ("&&", "||"):
                    if isinstance(left, _Run) and left.op == op.kind:
                        left.terms.append(right)
                        merged_operands.append(left)
                    else:
                        merged_operands.append(_Run(op.kind, left, [left, right]))
                else:
                    merged_operands.append(Binary(op.line, op.column, op.kind, left, right))
            operands, ops = [run.logic() if isinstance(run, _Run) else run for run in merged_operands], merged_ops
        return operands[0]

    def unary(self) -> Expr:
        """Prefix operators, a primary, then selections, calls and indexes (one frame: only
        brackets recurse)."""
        first = self.token
        count = 0
        if first.kind in ("!", "-") and not (first.kind == "-" and self.peek().kind in ("INT", "FLOAT")):
            while self.token.kind == first.kind:
                self.take()
                count += 1
            # !-x and -!x: a negation applies to a member, not to another negation (but !-1 is a literal)
            if self.token.kind == "!" or (
                self.token.kind == "-" and not (first.kind == "!" and self.peek().kind in ("INT", "FLOAT"))
            ):
                raise self.unexpected()
        node = self.primary()
        while True:
            token = self.token
            if token.kind == ".":
                self.take()
                name = self.token
                if name.kind == "?":
                    raise CelSyntaxError("unsupported syntax '.?'", token.line, token.column)
                if name.kind == "ESC_IDENT":
                    raise CelSyntaxError("unsupported syntax: '`'", name.line, name.column)
                if name.kind != "IDENT":
                    raise self.unexpected("expected a field or function name")
                self.take()
                if self.token.kind == "(":
                    self.take()
                    node = self.call(name, self.items(")", "argument"), target=node)
                else:
                    node = Select(name.line, name.column, node, name.text)
            elif token.kind == "[":
                self.take()
                if self.token.kind == "?":
                    raise CelSyntaxError("unsupported syntax '[?'", token.line, token.column)
                index = self.expr()
                self.expect("]")
                node = Index(token.line, token.column, node, index)
            else:
                break
        # The engine keeps one operator of an odd run and none of an even one: !!x is x itself.
        return Unary(first.line, first.column, first.kind, node) if count % 2 else node

    def primary(self) -> Expr:
        token = self.token
        if token.kind == "-" or token.kind in _LITERAL_TOKENS:
            return self.literal()
        if token.kind == "(":
            self.take()
            inner = self.expr()
            self.expect(")")
            return inner
        if token.kind == "[":
            self.take()
            return ListLit(token.line, token.column, tuple(self.items("]", "element")))
        if token.kind == "{":
            self.take()
            return MapLit(token.line, token.column, tuple(self.items("}", "entry")))
        dot = self.take() if token.kind == "." else None
        name = self.token
        if name.kind != "IDENT":
            raise self.unexpected()
        self.take()
        prefix = "." if dot else ""
        if self.token.kind == "(":
            if name.text in RESERVED_WORDS:
                raise CelSyntaxError(f"reserved identifier: {name.text}", name.line, name.column)
            self.take()
            return self.call(name, self.items(")", "argument"), target=None, prefix=prefix)
        if self.is_message():
            type_name = prefix + name.text
            while self.token.kind == ".":
                self.take()
                type_name += "." + self.take().text
            brace = self.expect("{")
            return Struct(brace.line, brace.column, type_name, tuple(self.items("}", "field")))
        if name.text in RESERVED_WORDS:
            raise CelSyntaxError(f"reserved identifier: {prefix}{name.text}", name.line, name.column)
        return Ident(name.line, name.column, prefix + name.text)

    def is_message(self) -> bool:
        """Whether ``{"." IDENT} "{"`` follows: a message (struct) literal, not a selection."""
        ahead = 0
        while self.peek(ahead).kind == "." and self.peek(ahead + 1).kind == "IDENT":
            ahead += 2
        return self.peek(ahead).kind == "{"

    def items(self, close: str, kind: str) -> list:
        """Comma-separated items up to ``close``. Arguments take no trailing comma; elements,
        entries and fields take one, even alone (``[,]``), and refuse the optional ``?``."""
        items: list = []
        if kind == "argument":
            while self.token.kind != ")":
                if items:
                    self.expect(",")
                items.append(self.expr())
            self.take()
            return items
        while True:
            if self.token.kind == ",":
                self.take()
                if items or self.token.kind == close:  # a trailing comma
                    self.expect(close)
                    return items
                raise self.unexpected()
            if self.token.kind == close:
                self.take()
                return items
            if items:
                raise self.unexpected(f"expected ',' or {close!r}")
            while True:  # the items themselves, separated by commas
                token = self.token
                if token.kind == "?":
                    raise CelSyntaxError("unsupported syntax '?'", token.line, token.column)
                if kind == "element":
                    items.append(self.expr())
                elif kind == "entry":
                    key = self.expr()
                    self.expect(":")
                    items.append((key, self.expr()))
                else:
                    if token.kind == "ESC_IDENT":
                        raise CelSyntaxError("unsupported syntax: '`'", token.line, token.column)
                    if token.kind != "IDENT":
                        raise self.unexpected("expected a field name")
                    self.take()
                    self.expect(":")
                    items.append((token.text, self.expr()))
                if not (self.token.kind == "," and self.peek().kind != close):
                    break
                self.take()

    def call(self, name: Token, args: list[Expr], *, target: Expr | None, prefix: str = "") -> Expr:
        function = prefix + name.text
        if target is None and function == "has" and len(args) == 1:
            field = args[0]
            if not isinstance(field, Select):
                raise CelSyntaxError("invalid argument to has() macro", field.line, field.column)
            return Select(name.line, name.column, field.operand, field.field, test=True)
        if target is not None and len(args) in _MACROS.get(function, ()):
            variable = args[0]
            if not isinstance(variable, Ident):
                raise CelSyntaxError("argument must be a simple name", variable.line, variable.column)
            return Comprehension(name.line, name.column, function, target, variable.name, tuple(args[1:]))
        return Call(name.line, name.column, function, tuple(args), target)

    def literal(self) -> Literal:
        token = start = self.take()
        sign = token.kind == "-"
        if sign:
            token = self.take()  # the caller saw a number next
        kind, text = token.kind, token.text
        if kind == "INT":
            value = int(text[2:], 16) if text.startswith("0x") else int(text)
            value = -value if sign else value
            if not _INT_MIN <= value <= _INT_MAX:
                raise CelSyntaxError("invalid int literal", start.line, start.column)
            return Literal(start.line, start.column, "int", value)
        if kind == "UINT":
            value = int(text[2:-1], 16) if text.startswith("0x") else int(text[:-1])
            if value > _UINT_MAX:
                raise CelSyntaxError("invalid uint literal", token.line, token.column)
            return Literal(token.line, token.column, "uint", value)
        if kind == "FLOAT":
            number = -float(text) if sign else float(text)
            if number in (float("inf"), float("-inf")):
                raise CelSyntaxError("invalid double literal", token.line, token.column)
            return Literal(start.line, start.column, "double", number)
        if kind in ("STRING", "BYTES"):
            return Literal(token.line, token.column, "string" if kind == "STRING" else "bytes", token.value)
        if kind in ("true", "false"):
            return Literal(token.line, token.column, "bool", kind == "true")
        if kind == "null":
            return Literal(token.line, token.column, "null", None)
        self.pos -= 1
        raise self.unexpected()
