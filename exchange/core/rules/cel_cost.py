"""The worst-case cost of evaluating a CEL expression, from its syntax tree alone. Pure.

Like the Kubernetes API server's CEL cost estimator, but for an engine without a cost hook: the
bound must hold by construction. ``expression_cost`` walks the tree once and returns a number of
*cost units* that no evaluation over claims within a ``Profile`` can exceed, and the shape of the
result. The constants are nanoseconds of what each step was measured to take, with room to spare:
a unit is worth at most about 0.3 ns of CPU on the reference machine (``bench/rule_cost.py``,
part of ``make bench``, measures it over the rules a tenant would write to make it slow).

What the engine spends, measured (common-expression-language 0.10, ``bench/``): every node is a
dispatch and a value (~100–300 ns); a list or map taken out of the claims is *copied* element by
element (~55 ns an element, ~110 an entry); ``map``/``filter`` copy their whole result so far at
every step (``n²`` element copies); text is copied, compared or scanned byte by byte (a few
hundredths of a ns a byte, more for parsing and searching); ``matches`` compiles its pattern at
every call (``cel_regex``); a call into Python (``aws_tag``, ``aws_source_identity``) costs microseconds. The constants
below are those figures with room to spare.

How the bound holds: a value's ``Shape`` bounds its elements (``items``: every value in it, map
keys included), its text (``bytes``) and its ``length`` (how often a comprehension over it
runs); the claims are bounded by the ``Profile`` (16 KiB of JSON, or the smaller bound checked
at run time for costly rules). Every formula is a sum or product of these with non-negative
coefficients — a ternary costs both branches, never the larger — so a comprehension's body,
costed once with the whole range as its variable and once with the smallest element, bounds all
its iterations together: for such formulas ``f(a) + f(b) ≤ f(a + b) + f(smallest)``, and the
elements of a range together are no larger than the range.
"""

from __future__ import annotations

from dataclasses import dataclass

from .cel_checks import children, namespaced
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

__all__ = ["PROFILE_ITERATING", "PROFILE_MAX", "Profile", "Shape", "UNBOUNDED", "costliest_part", "expression_cost"]

C_NODE = 400.0  # a node evaluated: dispatch, a small value
C_ITEM = 250.0  # a value (element, map key or value) copied, compared, hashed or converted
C_BYTE = 0.25  # a byte of text copied, compared or counted
C_PARSE = 4.0  # a byte parsed by int(), double(), timestamp(), duration(), string()
C_SEARCH = 6.0  # a byte searched by contains()
C_PYTHON = 20_000.0  # a call into Python (aws_tag): the call, its conversions, a failure's log record
C_PYTHON_CHAR = 300.0  # a character aws_tag looks at (at most 256 of them, see aws.aws_tag)
ISSUER_BYTES = 256  # the issuer id: 64 characters of at most 4 bytes
UNBOUNDED = float("inf")


@dataclass(frozen=True)
class Profile:
    """Bounds on the claims an evaluation sees."""

    items: int  # values in the claims: containers, elements, map keys and values
    length: int  # elements of the largest list or map
    bytes: int  # bytes of all the text (UTF-8), map keys included


# Any token jwtex accepts: 16 KiB of token is at most 16 KiB of JSON claims, every value of which
# takes at least two bytes of it. Claims typed into the simulator are held to the same 16 KiB.
PROFILE_MAX = Profile(items=8192, length=8192, bytes=16384)
# The bound checked per exchange before running a rule whose cost needs it (limits.CEL_MAX_*):
# lists and maps of at most 128 elements, 512 in all (so at most 1 + 2 × 512 values).
PROFILE_ITERATING = Profile(items=1025, length=128, bytes=16384)


@dataclass(frozen=True)
class Shape:
    items: float
    bytes: float
    length: float
    claims: bool = False  # a part of the claims: no list or map in it is longer than the profile's length


SCALAR = Shape(1, 0, 0)
_SMALL_TEXT = Shape(1, 32, 0)


def expression_cost(tree: Expr, profile: Profile) -> float:
    """Cost units an evaluation of ``tree`` can take at most over claims within ``profile``,
    converting its result to Python included; ``UNBOUNDED`` when the tree holds something whose
    cost cannot be bounded (a pattern that is not a literal)."""
    cost, shape = CostEstimator(profile).of(tree, {})
    total = cost + _copy(shape)
    return total if total < UNBOUNDED else UNBOUNDED  # NaN (infinity times nothing) is unbounded too


def costliest_part(tree: Expr, profile: Profile) -> Expr:
    """Where most of ``tree``'s cost is: from the root, into whichever part holds at least half of
    it, as far as one does (a comprehension, a long concatenation, a pattern)."""
    estimator = CostEstimator(profile)
    estimator.of(tree, {})
    node = tree
    while True:
        parts = [child for child in children(node) if id(child) in estimator.spent]
        if not parts:
            return node
        heaviest = max(parts, key=lambda child: estimator.spent[id(child)])
        if not estimator.spent[id(heaviest)] * 2 >= estimator.spent[id(node)]:
            return node
        node = heaviest


def _copy(shape: Shape) -> float:
    return C_ITEM * shape.items + C_BYTE * shape.bytes


def _sum(*shapes: Shape) -> Shape:
    return Shape(sum(s.items for s in shapes), sum(s.bytes for s in shapes), sum(s.length for s in shapes))


class CostEstimator:
    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.spent: dict[int, float] = {}  # the most each node cost in one evaluation (costliest_part)

    def sub(self, shape: Shape) -> Shape:
        """A part of a value (a field, an element): no bigger, and as long as its lists can be."""
        return Shape(shape.items, shape.bytes, self.profile.length if shape.claims else shape.items, shape.claims)

    def of(self, node: Expr, env: dict[str, Shape]) -> tuple[float, Shape]:
        cost, shape = getattr(self, "_" + type(node).__name__.lower())(node, env)
        if cost > self.spent.get(id(node), -1.0):
            self.spent[id(node)] = cost
        return cost, shape

    def _literal(self, node: Literal, env) -> tuple[float, Shape]:
        size = len(node.value.encode()) if node.kind == "string" else len(node.value) if node.kind == "bytes" else 0
        shape = Shape(1, size, size)
        return C_NODE + _copy(shape), shape

    def _ident(self, node: Ident, env) -> tuple[float, Shape]:
        if node.name in env:
            return C_NODE, env[node.name]
        if node.name == "claims":
            p = self.profile
            return C_NODE, Shape(p.items, p.bytes, p.length, claims=True)
        if node.name == "issuer":
            return C_NODE, Shape(1, ISSUER_BYTES, 0)
        return C_NODE, _SMALL_TEXT  # a type name (int, string, …); anything else fails at once

    def _select(self, node: Select, env) -> tuple[float, Shape]:
        cost, operand = self.of(node.operand, env)
        if node.test:
            return cost + C_NODE + C_BYTE * len(node.field), SCALAR
        result = self.sub(operand)
        return cost + C_NODE + _copy(result), result

    def _index(self, node: Index, env) -> tuple[float, Shape]:
        cost, operand = self.of(node.operand, env)
        index_cost, index = self.of(node.index, env)
        result = self.sub(operand)
        return cost + index_cost + C_NODE + _copy(index) + _copy(result), result

    def _unary(self, node: Unary, env) -> tuple[float, Shape]:
        cost, _ = self.of(node.operand, env)
        return cost + C_NODE, SCALAR

    def _binary(self, node: Binary, env) -> tuple[float, Shape]:
        left_cost, left = self.of(node.left, env)
        right_cost, right = self.of(node.right, env)
        cost = left_cost + right_cost + C_NODE
        if node.op == "+":  # text, bytes or lists joined (numbers are smaller)
            result = Shape(left.items + right.items, left.bytes + right.bytes, left.length + right.length)
            return cost + _copy(result), result
        if node.op in ("-", "*", "/", "%"):
            return cost, SCALAR
        # == != < <= > >= in: both sides walked at most once (a list scanned, a map hashed)
        return cost + _copy(left) + _copy(right), SCALAR

    def _logic(self, node: Logic, env) -> tuple[float, Shape]:
        return sum(self.of(term, env)[0] for term in node.terms) + C_NODE * len(node.terms), SCALAR

    def _conditional(self, node: Conditional, env) -> tuple[float, Shape]:
        condition_cost, _ = self.of(node.condition, env)
        then_cost, then = self.of(node.then, env)
        else_cost, otherwise = self.of(node.otherwise, env)
        return condition_cost + then_cost + else_cost + C_NODE, _sum(then, otherwise)

    def _listlit(self, node: ListLit, env) -> tuple[float, Shape]:
        parts = [self.of(element, env) for element in node.elements]
        shape = _sum(Shape(1, 0, len(parts)), *(s for _, s in parts))
        return sum(c for c, _ in parts) + C_NODE + C_ITEM * len(parts), shape

    def _maplit(self, node: MapLit, env) -> tuple[float, Shape]:
        parts = [self.of(part, env) for entry in node.entries for part in entry]
        shape = _sum(Shape(1, 0, len(node.entries)), *(s for _, s in parts))
        keys = sum(_copy(s) for s in [s for _, s in parts][::2])
        return sum(c for c, _ in parts) + C_NODE + C_ITEM * len(parts) + keys, shape

    def _struct(self, node: Struct, env) -> tuple[float, Shape]:
        parts = [self.of(value, env) for _, value in node.fields]
        return sum(c for c, _ in parts) + C_NODE, _sum(SCALAR, *(s for _, s in parts))

    def _call(self, node: Call, env) -> tuple[float, Shape]:
        name = namespaced(node) or node.function
        operands = ([] if node.target is None or namespaced(node) else [node.target]) + list(node.args)
        parts = [self.of(operand, env) for operand in operands]
        cost = sum(c for c, _ in parts) + C_NODE
        shapes = [s for _, s in parts]
        first = shapes[0] if shapes else SCALAR
        text = sum(s.bytes for s in shapes)
        if name == "matches" and len(node.args) == 1:
            pattern = node.args[0]
            if not (isinstance(pattern, Literal) and pattern.kind == "string"):
                return UNBOUNDED, SCALAR
            estimate = pattern_cost(pattern.value)
            if estimate.problem:
                return UNBOUNDED, SCALAR
            return cost + estimate.compile + estimate.per_byte * (first.bytes + 1), SCALAR
        if name == "aws_tag":
            return cost + C_PYTHON + 256 * C_PYTHON_CHAR + 2 * _copy(first), Shape(1, first.bytes, 0)
        if name == "aws_source_identity":  # looks at 64 characters at most (aws.aws_source_identity), pads to 2;
            # its result is counted as its argument's size (+2), like aws_tag's: additive over a comprehension's parts
            return cost + C_PYTHON + 64 * C_PYTHON_CHAR + 2 * _copy(first), Shape(1, first.bytes + 2, 0)
        if name in ("contains",):
            return cost + C_SEARCH * text, SCALAR
        if name in ("size", "startsWith", "endsWith", "type", "hasValue") or name.startswith("get"):
            return cost + C_BYTE * text, SCALAR if name != "type" else _SMALL_TEXT
        if name in ("int", "uint", "double", "timestamp", "duration"):
            return cost + C_PARSE * text, SCALAR
        if name in ("string", "bytes"):
            result = Shape(1, first.bytes + 32, 0)
            return cost + C_PARSE * text + _copy(result), result
        if name in ("dyn", "value", "optional.of", "optional.ofNonZeroValue"):
            return cost + _copy(first), first
        if name in ("or", "orValue"):
            result = _sum(*shapes)
            return cost + _copy(result), result
        return cost, SCALAR  # optional.none(), or a function the engine does not have (it fails at once)

    def _comprehension(self, node: Comprehension, env) -> tuple[float, Shape]:
        range_cost, scope = self.of(node.target, env)
        n = scope.length
        whole = Shape(scope.items, scope.bytes, scope.items)  # every element together, as one
        smallest = SCALAR
        body_cost = 0.0
        results: list[tuple[Shape, Shape]] = []
        for arg in node.args:
            full_cost, full = self.of(arg, {**env, node.variable: whole})
            min_cost, least = self.of(arg, {**env, node.variable: smallest})
            body_cost += full_cost + n * min_cost
            results.append((full, least))
        binding = _copy(whole) + n * (_copy(smallest) + 3 * C_NODE)
        cost = range_cost + binding + body_cost + C_NODE
        if node.macro not in ("map", "filter"):
            return cost, SCALAR
        if node.macro == "map":
            full, least = results[-1]
        else:
            full, least = whole, smallest
        final = Shape(1 + full.items + n * least.items, full.bytes + n * least.bytes, n)
        # Each step copies the result built so far: at most the final result, n times.
        return cost + (n + 1) * _copy(final), final
