"""What a ``matches()`` pattern costs the engine, read from the pattern itself. Pure.

The engine compiles the pattern with Rust's ``regex`` crate at *every* call (no cache), and
compiling is what costs: measured here, ``'a'`` takes 3 µs, ``'[a-z]'`` 9 µs, ``'.'`` 24 µs,
``'\\d'`` 39 µs, ``'\\w'`` 229 µs (the Unicode word class), ``'\\w{10}'`` 2.8 ms and ``'\\w{100}'``
30 ms; a pattern over the crate's size limit fails only after 70 ms. Matching is linear in the
text for a given pattern (the crate never backtracks), about ``text × states``: ``'a{1000}'``
over 10 KB of ``a`` takes 5 ms.

``pattern_cost`` scans the pattern (Rust's syntax: classes, escapes, groups, flags, counted
repetition) and weighs each piece by its measured compile time, generously, multiplied by the
repetition around it; the states it adds give the matching cost per byte of text. A pattern
this scan cannot weigh (the verbose ``x`` flag, unbalanced brackets) is refused, as is one over
``MAX_COMPILE`` or ``MAX_STATES``. Weights are cost units (``cel_cost``):
about eight times the nanoseconds measured, a wide margin because compile times vary the most.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAX_COMPILE", "MAX_STATES", "PatternCost", "pattern_cost"]

CALL = 20_000  # the engine's call into the regex crate, and an empty compile
MAX_COMPILE = 16_000_000
MAX_STATES = 4_000
_LITERAL, _LITERAL_FOLDED = 400, 80_000  # a character; under (?i), its case-folded class
_ASCII_CLASS, _ASCII_CLASS_FOLDED = 60_000, 160_000
_WIDE = 200_000  # ., a negated class, a class with non-ASCII ranges
_ANCHOR = 120_000  # ^ $ \A \z \b \B
_DIGIT, _SPACE, _UNICODE = 400_000, 240_000, 2_000_000  # \d \D; \s \S; \w \W \p \P and (?i) classes
_STATES = {"literal": 4, "ascii": 4, "wide": 16, "digit": 32, "space": 32, "unicode": 128, "anchor": 2}


@dataclass(frozen=True)
class PatternCost:
    compile: int  # cost units to compile, once per call
    per_byte: int  # cost units per byte of the text matched
    problem: str | None = None


class _Refused(ValueError):
    pass


def pattern_cost(pattern: str) -> PatternCost:
    try:
        compile_weight, states = _Scanner(pattern).sequence(depth=0)
    except _Refused as exc:
        return PatternCost(0, 0, str(exc))
    compile_weight += CALL
    if compile_weight > MAX_COMPILE or states > MAX_STATES:
        return PatternCost(
            compile_weight,
            states,
            f"the pattern {pattern!r} is too costly to compile at every call "
            "(counted repetition of classes, or Unicode classes); simplify it",
        )
    return PatternCost(compile_weight, states + 1)


class _Scanner:
    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0
        self.folded = False  # (?i) seen: kept to the end, which can only overestimate

    def sequence(self, *, depth: int) -> tuple[int, int]:
        """Alternatives up to a closing parenthesis (or the end): the sum of every branch."""
        if depth > 32:
            raise _Refused("the pattern nests its groups too deeply")
        weight = states = 0
        while self.i < len(self.p) and self.p[self.i] != ")":
            if self.p[self.i] == "|":
                self.i += 1
                continue
            atom_weight, atom_states = self.atom(depth)
            times = self.repetition()
            weight += atom_weight * times
            states += atom_states * times
        return weight, states

    def atom(self, depth: int) -> tuple[int, int]:
        ch = self.p[self.i]
        if ch == "(":
            self.i += 1
            self.group_flags()
            weight, states = self.sequence(depth=depth + 1)
            if self.i >= len(self.p):
                raise _Refused("the pattern has an unclosed group")
            self.i += 1
            return weight, states
        if ch == "[":
            return self.char_class()
        self.i += 1
        if ch == "\\":
            return self.escape()
        if ch == ".":
            return _WIDE, _STATES["wide"]
        if ch in "^$":
            return _ANCHOR, _STATES["anchor"]
        if ch in "*+?{":
            raise _Refused(f"the pattern has {ch!r} with nothing to repeat (write \\{ch} for the character)")
        return self.literal(ch)

    def literal(self, ch: str) -> tuple[int, int]:
        if self.folded and ch.lower() != ch.upper():
            return _LITERAL_FOLDED, _STATES["ascii"]
        return _LITERAL, _STATES["literal"]

    def group_flags(self) -> None:
        if not self.p.startswith("?", self.i):
            return
        end = self.i + 1
        if self.p.startswith(("P<", "<"), end):
            close = self.p.find(">", end)
            if close < 0:
                raise _Refused("the pattern has an unclosed group name")
            self.i = close + 1
            return
        while end < len(self.p) and self.p[end] not in ":)":
            end += 1
        flags = self.p[self.i + 1 : end]
        if "x" in flags.split("-")[0]:
            raise _Refused("verbose patterns (the x flag) are not supported")
        if "i" in flags.split("-")[0]:
            self.folded = True
        self.i = end + 1 if end < len(self.p) and self.p[end] == ":" else end

    def escape(self) -> tuple[int, int]:
        if self.i >= len(self.p):
            raise _Refused("the pattern ends with a backslash")
        ch = self.p[self.i]
        self.i += 1
        if ch in "pP":
            if self.p.startswith("{", self.i):
                close = self.p.find("}", self.i)
                if close < 0:
                    raise _Refused("the pattern has an unclosed \\p{…}")
                self.i = close + 1
            else:
                self.i += 1
            return _UNICODE, _STATES["unicode"]
        if ch in "wW" or (self.folded and ch in "dDsS"):
            return _UNICODE, _STATES["unicode"]
        if ch in "dD":
            return _DIGIT, _STATES["digit"]
        if ch in "sS":
            return _SPACE, _STATES["space"]
        if ch in "bBAz":
            return _ANCHOR, _STATES["anchor"]
        if ch in "xu" and self.p.startswith("{", self.i):
            close = self.p.find("}", self.i)
            self.i = close + 1 if close >= 0 else len(self.p)
        elif ch == "x":
            self.i += 2
        return self.literal("x")

    def char_class(self) -> tuple[int, int]:
        """``[...]``, nested classes and POSIX ``[:name:]`` included, to its closing bracket."""
        start = self.i
        depth = 0
        unicode_escapes = digit = space = 0
        while self.i < len(self.p):
            ch = self.p[self.i]
            if ch == "\\" and self.i + 1 < len(self.p):
                kind = self.p[self.i + 1]
                unicode_escapes += kind in "wWpP"
                digit += kind in "dD"
                space += kind in "sS"
                self.i += 2
                continue
            if ch == "[" and self.p.startswith("[:", self.i):
                close = self.p.find(":]", self.i + 2)
                self.i = close + 2 if close >= 0 else len(self.p)
                continue
            if ch == "[":
                depth += 1
            elif ch == "]" and self.i > start + 1 + (self.p[start + 1 : start + 2] == "^"):
                depth -= 1
                if depth == 0:
                    self.i += 1
                    break
            self.i += 1
        else:
            raise _Refused("the pattern has an unclosed character class")
        body = self.p[start : self.i]
        if unicode_escapes or (self.folded and (digit or space)):
            return _UNICODE * max(1, unicode_escapes + digit + space), _STATES["unicode"]
        weight = _DIGIT * digit + _SPACE * space
        if body.startswith("[^") or not body.isascii():
            return weight + _WIDE, _STATES["wide"]
        return weight + (_ASCII_CLASS_FOLDED if self.folded else _ASCII_CLASS), _STATES["ascii"]

    def repetition(self) -> int:
        """How many copies of the previous piece the compiled pattern holds: ``{n}`` and ``{n,m}``
        their bound, ``*`` ``+`` ``?`` one (a loop)."""
        times = 1
        while self.i < len(self.p):
            ch = self.p[self.i]
            if ch in "*+?":
                self.i += 1
            elif ch == "{":
                close = self.p.find("}", self.i)
                bounds = self.p[self.i + 1 : close].split(",") if close > 0 else []
                if (
                    not bounds
                    or len(bounds) > 2
                    or not all(b.strip().isdigit() or (k and not b.strip()) for k, b in enumerate(bounds))
                ):
                    return times  # not a repetition: the engine reads "{" literally or refuses it
                numbers = [int(b) for b in bounds if b.strip()]
                times *= max(numbers) + (1 if len(bounds) == 2 and not bounds[1].strip() else 0)
                times = max(times, 1)
                self.i = close + 1
            else:
                break
            if self.i < len(self.p) and self.p[self.i] == "?":
                self.i += 1  # lazy
        return times
