"""Tenant rules: compile CEL once, evaluate per exchange → ``Decision`` (SPEC §5).

Pure: no ORM, no network. The service layer turns ``Rule`` rows into ``RuleSpec`` values,
compiles them with ``compile_rule`` (cached per tenant) and calls ``decide`` once per
exchange. ``validate_rule_spec`` is what the admin and ``jwtex_apply`` use to report
every problem of a rule before it is saved.

Security invariants:

* The first rule whose issuers include the token's issuer and whose ``when`` evaluates to
  exactly ``True`` decides. Anything else the engine may produce (``False``, a non-bool,
  an exception of any kind — the Rust engine can raise non-``Exception`` panics) never
  grants: ``False`` falls through to the next rule, everything else ends the evaluation
  with ``AccessDenied``.
* A matching ``allow`` rule whose outputs (subject, session tags, extra claims, audience)
  cannot be produced, or break the AWS limits, denies as well.
* Client-facing descriptions name at most a rule, a tag key or a claim name, never a
  claim value; the details go into ``reason`` (audit and log).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cel

from exchange import conf
from exchange.errors import AccessDenied, AudienceNotAllowed, ExchangeError

__all__ = [
    "AWS_TAGS_CLAIM",
    "CompiledRule",
    "Decision",
    "MAX_NESTING_DEPTH",
    "MAX_SESSION_TAGS",
    "MAX_SUBJECT_LENGTH",
    "MAX_TAG_KEY_LENGTH",
    "MAX_TAG_VALUE_LENGTH",
    "MIN_LIFETIME",
    "RESERVED_CLAIMS",
    "RuleSpec",
    "RuleSyntaxError",
    "RuleTrace",
    "check_expression",
    "compile_rule",
    "decide",
    "explain",
    "validate_rule_spec",
    "validate_session_tag_key",
    "validate_session_tag_value",
]

# --------------------------------------------------------------------------- limits

# AWS STS ``Tag`` type (STS API Reference, "Tag"; IAM User Guide, "Pass session tags in
# AWS STS" → "Things to know about session tags"): "You can pass up to 50 session tags.
# The plain text session tag keys can't exceed 128 characters, and the values can't
# exceed 256 characters." Key: length 1–128, pattern ``[\p{L}\p{Z}\p{N}_.:/=+\-@]+``;
# value: length 0–256, pattern ``[\p{L}\p{Z}\p{N}_.:/=+\-@]*``. Lengths are counted in
# Unicode code points here (Python ``len``).
MAX_SESSION_TAGS = 50
MAX_TAG_KEY_LENGTH = 128
MAX_TAG_VALUE_LENGTH = 256
# IAM User Guide, "Tagging IAM resources" → "Rules for tagging": the ``aws:`` prefix is
# reserved for AWS use; STS refuses session tag keys that start with it.
RESERVED_TAG_KEY_PREFIX = "aws:"
# The ASCII punctuation the AWS pattern allows besides \p{L}, \p{Z} and \p{N}.
_TAG_EXTRA_CHARACTERS = frozenset("_.:/=+-@")
_TAG_CATEGORY_CLASSES = frozenset("LZN")  # \p{L} letters, \p{Z} separators, \p{N} numbers
# Exact for ASCII: the only ASCII characters in L/Z/N are letters, digits and the space.
_ASCII_TAG_RE = re.compile(r"[A-Za-z0-9 _.:/=+\-@]*")

AWS_TAGS_CLAIM = "https://aws.amazon.com/tags"

# Claims the emitted token always carries and a rule cannot set (SPEC §5): iss/exp/iat/nbf/jti
# are ours (RFC 7519 §4.1); sub and aud come from the rule's ``subject``/``audience``; the
# AWS tags claim is rendered from ``session_tags``/``transitive_tag_keys``.
RESERVED_CLAIMS = frozenset({"iss", "sub", "aud", "exp", "nbf", "iat", "jti", AWS_TAGS_CLAIM})

# A bound on the emitted ``sub`` so a token stays small (jwtex's own limit, not an RFC one).
MAX_SUBJECT_LENGTH = 512
# Shortest lifetime a rule may ask for (the ``Rule.lifetime`` validator says the same).
MIN_LIFETIME = 60
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
_PASSTHROUGH = (KeyboardInterrupt, SystemExit)


# --------------------------------------------------------------------------- syntax


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


def _compile(source: str, *, max_length: int = conf.CEL_MAX_EXPRESSION_LENGTH) -> cel.Program:
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
    except _PASSTHROUGH:
        raise
    except BaseException as exc:  # ValueError normally; a Rust panic must not escape either
        raise _syntax_error_from(exc) from None
    # Reject names the expression could never resolve (a typo such as ``claim.sub`` would
    # otherwise only surface as a deny at exchange time). Names bound by a comprehension
    # macro are legitimate; if a bound name is also used free elsewhere, evaluation fails
    # and denies, which is safe.
    try:
        names = set(program.variables())
    except _PASSTHROUGH:
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


def _iterates(source: str) -> bool:
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
    """Bound what a comprehension can cost (see conf.CEL_MAX_COMPREHENSIONS): no nesting, a
    claim as the range, a few per expression. True when the expression has any."""
    calls = [(m.start(), m.end() - 1, m["macro"]) for m in _COMPREHENSION_RE.finditer(code)]
    if len(calls) > conf.CEL_MAX_COMPREHENSIONS:
        line, column = _position(code, calls[conf.CEL_MAX_COMPREHENSIONS][0] + 1)
        raise RuleSyntaxError(
            f"An expression may use at most {conf.CEL_MAX_COMPREHENSIONS} comprehensions ({_COMPREHENSION_NAMES}, …).",
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


def _claims_too_large(claims: Mapping[str, Any]) -> str | None:
    """Why ``claims`` are too big for a rule that iterates (conf.CEL_MAX_ITERABLE_ITEMS,
    conf.CEL_MAX_CLAIM_ITEMS), or None. Iterative: claims may nest as deep as JSON allows."""
    total = 0
    stack: list[Any] = [claims]
    while stack:
        value = stack.pop()
        items = list(value.values()) if isinstance(value, Mapping) else value
        if len(items) > conf.CEL_MAX_ITERABLE_ITEMS:
            kind = "map" if isinstance(value, Mapping) else "list"
            return f"a {kind} in the claims has {len(items)} items (limit {conf.CEL_MAX_ITERABLE_ITEMS} for rules that iterate)"
        total += len(items)
        if total > conf.CEL_MAX_CLAIM_ITEMS:
            return f"the claims hold more than {conf.CEL_MAX_CLAIM_ITEMS} list and map items (limit for rules that iterate)"
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


def check_expression(source: str, *, max_length: int = conf.CEL_MAX_EXPRESSION_LENGTH) -> None:
    """Raise ``RuleSyntaxError`` unless ``source`` is a CEL expression a rule may use."""
    _compile(source, max_length=max_length)


# --------------------------------------------------------------------------- session tags


def _bad_tag_character(text: str) -> str | None:
    if text.isascii():
        if _ASCII_TAG_RE.fullmatch(text):
            return None
        return next(ch for ch in text if not _ASCII_TAG_RE.fullmatch(ch))
    for ch in text:
        if ch not in _TAG_EXTRA_CHARACTERS and unicodedata.category(ch)[0] not in _TAG_CATEGORY_CLASSES:
            return ch
    return None


def _describe_character(ch: str) -> str:
    return f"U+{ord(ch):04X}" + (f" {ch!r}" if ch.isprintable() else "")


_ALLOWED_CHARACTERS_TEXT = "letters, numbers, spaces and _ . : / = + - @"


def validate_session_tag_key(key: str) -> None:
    """Raise ``ValueError`` unless ``key`` is a session tag key AWS STS accepts."""
    if not isinstance(key, str):
        raise ValueError("A session tag key must be a string.")
    if not 1 <= len(key) <= MAX_TAG_KEY_LENGTH:
        raise ValueError(
            f"Session tag key must be 1 to {MAX_TAG_KEY_LENGTH} characters long (AWS limit); it is {len(key)}."
        )
    bad = _bad_tag_character(key)
    if bad is not None:
        raise ValueError(
            f"Session tag key {key!r} contains {_describe_character(bad)}; AWS allows only {_ALLOWED_CHARACTERS_TEXT}."
        )
    if key[: len(RESERVED_TAG_KEY_PREFIX)].lower() == RESERVED_TAG_KEY_PREFIX:
        raise ValueError(f"Session tag key {key!r} starts with 'aws:', which AWS reserves.")


def validate_session_tag_value(key: str, value: str) -> None:
    """Raise ``ValueError`` unless ``value`` is a value AWS STS accepts for tag ``key``.

    The message names the key and the offending character, never the whole value.
    """
    if not isinstance(value, str):
        raise ValueError(f"Session tag {key!r}: the value must be a string, not {type(value).__name__}.")
    if len(value) > MAX_TAG_VALUE_LENGTH:
        raise ValueError(
            f"Session tag {key!r}: the value is {len(value)} characters long; AWS allows at most {MAX_TAG_VALUE_LENGTH}."
        )
    bad = _bad_tag_character(value)
    if bad is not None:
        raise ValueError(
            f"Session tag {key!r}: the value contains {_describe_character(bad)}; "
            f"AWS allows only {_ALLOWED_CHARACTERS_TEXT}."
        )


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class RuleSpec:
    name: str
    issuers: frozenset[str]
    when: str
    effect: str  # "allow" | "deny"
    rule_id: int | None = None
    subject: str = ""  # CEL; "" means claims.sub
    audience: str = ""  # literal; "" means the tenant default
    audiences: tuple[str, ...] = ()  # other audiences a caller may request
    lifetime: int | None = None  # seconds; None → conf.DEFAULT_LIFETIME
    session_tags: tuple[tuple[str, str], ...] = ()  # (tag key, CEL expr), in order
    transitive_tag_keys: tuple[str, ...] = ()
    claims: tuple[tuple[str, str], ...] = ()  # (claim name, CEL expr)


_DEFAULT_SUBJECT = "claims.sub"
_EFFECTS = ("allow", "deny")


def _check_spec(spec: RuleSpec) -> tuple[list[tuple[str, RuleSyntaxError | str]], dict[str, cel.Program]]:
    """Every problem of ``spec`` and the programs that did compile, keyed by field path."""
    problems: list[tuple[str, RuleSyntaxError | str]] = []
    programs: dict[str, cel.Program] = {}

    def expression(path: str, source: str) -> None:
        try:
            programs[path] = _compile(source)
        except RuleSyntaxError as exc:
            problems.append((path, exc))

    if not isinstance(spec.name, str) or not spec.name.strip():
        problems.append(("name", "A rule needs a name."))
    if spec.effect not in _EFFECTS:
        problems.append(("effect", f"The effect must be 'allow' or 'deny', not {spec.effect!r}."))
    expression("when", spec.when)
    expression("subject", spec.subject or _DEFAULT_SUBJECT)
    if not isinstance(spec.audience, str):
        problems.append(("audience", "The audience must be a string."))
    for index, audience in enumerate(spec.audiences):
        if not isinstance(audience, str) or not audience:
            problems.append((f"audiences[{index}]", "An audience must be a non-empty string."))
    if spec.lifetime is not None and (
        not isinstance(spec.lifetime, int) or isinstance(spec.lifetime, bool) or spec.lifetime < MIN_LIFETIME
    ):
        problems.append(("lifetime", f"The lifetime must be a whole number of seconds, at least {MIN_LIFETIME}."))

    # IAM User Guide, "Pass session tags in AWS STS": at most 50 tags; keys are
    # case-insensitive ("you cannot have separate Department and department tag keys").
    if len(spec.session_tags) > MAX_SESSION_TAGS:
        problems.append(
            ("session_tags", f"A rule may set at most {MAX_SESSION_TAGS} session tags (AWS limit); it sets {len(spec.session_tags)}.")
        )
    seen: dict[str, str] = {}
    for key, source in spec.session_tags:
        path = f"session_tags.{key}" if isinstance(key, str) and key else "session_tags"
        try:
            validate_session_tag_key(key)
        except ValueError as exc:
            problems.append((path, str(exc)))
        else:
            folded = key.casefold()
            if folded in seen:
                problems.append((path, f"Session tag key {key!r} repeats {seen[folded]!r}; AWS tag keys ignore case."))
            else:
                seen[folded] = key
        expression(path, source)
    # Transitive keys must name tags that are set (AssumeRoleWithWebIdentity rejects others).
    # Matched exactly (not case-folded) so the token names each key one way only.
    tag_keys = {key for key, _ in spec.session_tags}
    transitive_seen: set[str] = set()
    for index, key in enumerate(spec.transitive_tag_keys):
        path = f"transitive_tag_keys[{index}]"
        if key not in tag_keys:
            problems.append((path, f"Transitive tag key {key!r} is not one of this rule's session tags."))
        elif key in transitive_seen:
            problems.append((path, f"Transitive tag key {key!r} is listed twice."))
        else:
            transitive_seen.add(key)

    claim_names: set[str] = set()
    for name, source in spec.claims:
        path = f"claims.{name}" if isinstance(name, str) and name else "claims"
        if not isinstance(name, str) or not name:
            problems.append((path, "A claim name must be a non-empty string."))
        elif name in RESERVED_CLAIMS:
            problems.append(
                (path, f"The claim {name!r} is set by jwtex itself (use subject/audience/session_tags where they apply).")
            )
        elif name in claim_names:
            problems.append((path, f"The claim {name!r} is set twice."))
        else:
            claim_names.add(name)
        expression(path, source)
    return problems, programs


def validate_rule_spec(spec: RuleSpec) -> list[tuple[str, str]]:
    """Every problem of ``spec`` as ``(field path, message)``; empty when it compiles."""
    problems, _ = _check_spec(spec)
    return [(path, str(problem)) for path, problem in problems]


@dataclass(frozen=True, eq=False)
class CompiledRule:
    """A ``RuleSpec`` with its CEL programs; build it with ``compile_rule``."""

    spec: RuleSpec
    when: cel.Program = field(repr=False)
    subject: cel.Program = field(repr=False)
    session_tags: tuple[tuple[str, cel.Program], ...] = field(repr=False)
    claims: tuple[tuple[str, cel.Program], ...] = field(repr=False)
    # Some expression of the rule has a comprehension: it is evaluated only over claims of
    # bounded size (conf.CEL_MAX_ITERABLE_ITEMS, conf.CEL_MAX_CLAIM_ITEMS).
    iterates: bool = False

    @property
    def rule_id(self) -> int | None:
        return self.spec.rule_id

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def issuers(self) -> frozenset[str]:
        return self.spec.issuers

    @property
    def effect(self) -> str:
        return self.spec.effect


def compile_rule(spec: RuleSpec) -> CompiledRule:
    """Compile every expression of ``spec``; raise ``RuleSyntaxError`` (with ``field``) for
    the first problem ``validate_rule_spec`` would report."""
    problems, programs = _check_spec(spec)
    if problems:
        path, problem = problems[0]
        if isinstance(problem, RuleSyntaxError):
            raise problem.with_field(path)
        raise RuleSyntaxError(problem, field=path)
    return CompiledRule(
        spec=spec,
        when=programs["when"],
        subject=programs["subject"],
        session_tags=tuple((key, programs[f"session_tags.{key}"]) for key, _ in spec.session_tags),
        claims=tuple((name, programs[f"claims.{name}"]) for name, _ in spec.claims),
        iterates=any(
            _iterates(source)
            for source in (spec.when, spec.subject, *(s for _, s in spec.session_tags), *(s for _, s in spec.claims))
            if source
        ),
    )


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Decision:
    rule_id: int | None
    rule_name: str
    subject: str
    audience: str
    lifetime: int
    session_tags: tuple[tuple[str, str], ...]
    transitive_tag_keys: tuple[str, ...]
    extra_claims: Mapping[str, Any]


@dataclass(frozen=True)
class RuleTrace:
    rule_id: int | None
    rule_name: str
    applies: bool  # the token's issuer is one of the rule's issuers
    result: str  # "matched" | "not matched" | "error" | "skipped (other issuer)" | "not evaluated"
    error: str | None = None


class _EvaluationError(Exception):
    def __init__(self, cause: BaseException | str) -> None:
        self.cause = cause
        if isinstance(cause, str):
            text = cause
        else:
            detail = str(cause)
            text = f"{type(cause).__name__}: {detail}" if detail else type(cause).__name__
        super().__init__(text)


def _execute(program: cel.Program, context: Any) -> Any:
    if isinstance(context, _EvaluationError):  # the claims could not be given to CEL at all
        raise context
    try:
        return program.execute(context)
    except _PASSTHROUGH:
        raise
    except BaseException as exc:  # KeyError, TypeError, … and pyo3 PanicException alike
        raise _EvaluationError(exc) from None


def _make_context(*, claims: Mapping[str, Any], issuer_id: str) -> Any:
    try:
        return cel.Context(variables={"claims": claims if type(claims) is dict else dict(claims), "issuer": issuer_id})
    except _PASSTHROUGH:
        raise
    except BaseException as exc:
        return _EvaluationError(exc)


def _tag_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):  # before int: bool is an int in Python
        return "true" if value else "false"
    if isinstance(value, int):  # CEL int and uint both arrive as int
        return str(value)
    kind = "null" if value is None else type(value).__name__
    raise _EvaluationError(f"a session tag value must be a string, number or bool, not {kind}")


def _json_value(value: Any, path: str) -> Any:
    """Convert a CEL result to plain JSON-serialisable Python, or fail."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        raise _EvaluationError(f"{path} is {value!r}, which JSON cannot represent")
    if isinstance(value, (list, tuple)):
        return [_json_value(item, f"{path}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _EvaluationError(f"{path} has a {type(key).__name__} map key; JSON object keys are strings")
            result[key] = _json_value(item, f"{path}.{key}")
        return result
    raise _EvaluationError(f"{path} is a {type(value).__name__}, which is not JSON")


def _by(rule: CompiledRule) -> dict[str, Any]:
    """The deciding rule, as an ExchangeError names it for the audit record (SPEC §8)."""
    return {"rule_id": rule.rule_id, "rule_name": rule.name}


def _rule_label(rule: CompiledRule) -> str:
    return f"rule {rule.name!r}" + (f" (id {rule.rule_id})" if rule.rule_id is not None else "")


def _allow(
    rule: CompiledRule, context: Any, *, requested_audience: str | None, default_audience: str, max_lifetime: int
) -> Decision:
    spec = rule.spec
    label = _rule_label(rule)

    # Audience first: refusing a request needs no evaluation.
    audience = spec.audience or default_audience
    if requested_audience:  # an empty audience parameter means "not given"
        if requested_audience != audience and requested_audience not in spec.audiences:
            raise AudienceNotAllowed(
                f"Rule '{spec.name}' does not allow the requested audience.",
                reason=f"{label} does not allow audience {requested_audience!r} (allowed: {[audience, *spec.audiences]!r})",
                **_by(rule),
            )
        audience = requested_audience

    try:
        subject = _execute(rule.subject, context)
    except _EvaluationError as exc:
        raise AccessDenied(
            f"Rule '{spec.name}' could not compute the subject.", reason=f"{label}: subject: {exc}", **_by(rule)
        ) from None
    if not isinstance(subject, str) or not subject or len(subject) > MAX_SUBJECT_LENGTH:
        what = (
            f"a {type(subject).__name__}" if not isinstance(subject, str) else f"a string of {len(subject)} characters"
        )
        raise AccessDenied(
            f"Rule '{spec.name}' could not compute the subject.",
            reason=f"{label}: subject must be a string of 1 to {MAX_SUBJECT_LENGTH} characters, got {what}",
            **_by(rule),
        )

    tags: list[tuple[str, str]] = []
    for key, program in rule.session_tags:
        try:
            value = _tag_value(_execute(program, context))
            validate_session_tag_value(key, value)
        except (_EvaluationError, ValueError) as exc:
            raise AccessDenied(
                f"Rule '{spec.name}': session tag '{key}' has no valid value.",
                reason=f"{label}: session tag {key!r}: {exc}",
                **_by(rule),
            ) from None
        tags.append((key, value))

    extra: dict[str, Any] = {}
    for name, program in rule.claims:
        try:
            extra[name] = _json_value(_execute(program, context), name)
        except (_EvaluationError, RecursionError) as exc:
            raise AccessDenied(
                f"Rule '{spec.name}': claim '{name}' could not be computed.",
                reason=f"{label}: claim {name!r}: {exc}",
                **_by(rule),
            ) from None

    lifetime = spec.lifetime if spec.lifetime is not None else conf.DEFAULT_LIFETIME
    return Decision(
        rule_id=spec.rule_id,
        rule_name=spec.name,
        subject=subject,
        audience=audience,
        lifetime=min(lifetime, max_lifetime),
        session_tags=tuple(tags),
        transitive_tag_keys=tuple(spec.transitive_tag_keys),
        extra_claims=extra,
    )


def _decide(
    rules: Sequence[CompiledRule],
    *,
    issuer_id: str,
    claims: Mapping[str, Any],
    requested_audience: str | None,
    default_audience: str,
    max_lifetime: int,
    trace: list[RuleTrace] | None,
) -> Decision:
    """The one implementation behind ``decide`` and ``explain``.

    With ``trace``, appends one entry per rule it looks at, up to and including the rule
    that decides; ``explain`` fills in the rest.
    """
    context: Any = None  # built once, on the first rule that applies, and reused
    too_large: str | None | bool = False  # measured once, on the first rule that iterates
    applicable = 0
    for rule in rules:
        if issuer_id not in rule.issuers:
            if trace is not None:
                trace.append(RuleTrace(rule.rule_id, rule.name, False, "skipped (other issuer)"))
            continue
        applicable += 1
        if rule.iterates:
            if too_large is False:
                too_large = _claims_too_large(claims)
            if too_large:
                # Its cost would grow with the claims (conf.CEL_MAX_ITERABLE_ITEMS): never run, never grant.
                if trace is not None:
                    trace.append(RuleTrace(rule.rule_id, rule.name, True, "error", too_large))
                raise AccessDenied(
                    f"Rule '{rule.name}' cannot be evaluated over claims this large.",
                    reason=f"{_rule_label(rule)}: {too_large}",
                    **_by(rule),
                )
        if context is None:
            context = _make_context(claims=claims, issuer_id=issuer_id)
        try:
            matched = _execute(rule.when, context)
            if not isinstance(matched, bool):
                raise _EvaluationError(f"the condition returned {type(matched).__name__}, not bool")
        except _EvaluationError as exc:
            # Not a match, but never a grant either: an error ends the evaluation (SPEC §5).
            if trace is not None:
                trace.append(RuleTrace(rule.rule_id, rule.name, True, "error", str(exc)))
            raise AccessDenied(
                f"Rule '{rule.name}' could not be evaluated.",
                reason=f"{_rule_label(rule)}: condition failed: {exc}",
                **_by(rule),
            ) from None
        if matched is not True:
            if trace is not None:
                trace.append(RuleTrace(rule.rule_id, rule.name, True, "not matched"))
            continue
        if rule.effect != "allow":  # "deny", and anything unexpected, denies
            if trace is not None:
                trace.append(RuleTrace(rule.rule_id, rule.name, True, "matched"))
            raise AccessDenied(
                f"Rule '{rule.name}' denies this exchange.", reason=f"{_rule_label(rule)} (deny) matched", **_by(rule)
            )
        try:
            decision = _allow(
                rule,
                context,
                requested_audience=requested_audience,
                default_audience=default_audience,
                max_lifetime=max_lifetime,
            )
        except ExchangeError as exc:
            if trace is not None:
                trace.append(RuleTrace(rule.rule_id, rule.name, True, "matched", exc.reason))
            raise
        if trace is not None:
            trace.append(RuleTrace(rule.rule_id, rule.name, True, "matched"))
        return decision
    raise AccessDenied(
        "No rule allows this exchange.",
        reason=f"no rule matched for issuer {issuer_id!r} ({applicable} of {len(rules)} rules apply to it)",
    )


def decide(
    rules: Sequence[CompiledRule],
    *,
    issuer_id: str,
    claims: Mapping[str, Any],
    requested_audience: str | None,
    default_audience: str,
    max_lifetime: int,
) -> Decision:
    """Run the tenant's rules over verified claims; raise ``AccessDenied`` (or its
    subclass ``AudienceNotAllowed``) unless an ``allow`` rule decides."""
    return _decide(
        rules,
        issuer_id=issuer_id,
        claims=claims,
        requested_audience=requested_audience,
        default_audience=default_audience,
        max_lifetime=max_lifetime,
        trace=None,
    )


def explain(
    rules: Sequence[CompiledRule],
    *,
    issuer_id: str,
    claims: Mapping[str, Any],
    requested_audience: str | None,
    default_audience: str,
    max_lifetime: int,
) -> tuple[list[RuleTrace], Decision | None, ExchangeError | None]:
    """``decide`` with a trace of every rule, for the admin simulator; never raises
    ``ExchangeError`` (it is returned instead)."""
    trace: list[RuleTrace] = []
    decision: Decision | None = None
    error: ExchangeError | None = None
    try:
        decision = _decide(
            rules,
            issuer_id=issuer_id,
            claims=claims,
            requested_audience=requested_audience,
            default_audience=default_audience,
            max_lifetime=max_lifetime,
            trace=trace,
        )
    except ExchangeError as exc:
        error = exc
    for rule in rules[len(trace) :]:
        applies = issuer_id in rule.issuers
        trace.append(RuleTrace(rule.rule_id, rule.name, applies, "not evaluated" if applies else "skipped (other issuer)"))
    return trace, decision, error
