"""A rule's shape (``RuleSpec``) and every problem it can have before it is saved
(docs/rules.md#rule-fields, docs/rules.md#checked-when-a-rule-is-saved).

``rule_findings`` is the one check of a rule, which the admin and ``jwtex_apply`` both run
(through ``Rule.clean``): its errors refuse the rule, each with the field it concerns (CEL
errors with their line and column), and its warnings are shown beside a rule that saves (a
token that *may* be too long for AWS, a number compared with a claim sent as a string).
``rule_spec_validate`` is its errors. ``rule_spec_check`` is the part the runtime needs too: what
keeps a rule from compiling at all. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..aws import (
    AWS_SOURCE_IDENTITY_CLAIM,
    AWS_TAGS_CLAIM,
    MAX_SESSION_TAGS,
    MAX_SUBJECT_LENGTH,
    MAX_TRANSITIVE_TAG_KEYS,
    is_aws_claim,
    session_tag_key_validate,
)
from ..minting import RESERVED_CLAIMS
from .budget import cost_problem, token_length_findings
from .cel_checks import type_warnings
from .cel_guard import CompiledExpression, RuleSyntaxError, expression_compile

__all__ = [
    "MAX_SUBJECT_LENGTH",
    "MIN_LIFETIME",
    "RuleFindings",
    "RuleSpec",
    "RuleSyntaxError",
    "rule_spec_check",
    "rule_spec_of",
    "session_tag_entries",
    "session_tag_entry_problem",
    "tags_well_formed",
    "findings_of",
    "rule_findings",
    "rule_spec_validate",
]

# Shortest lifetime a rule may ask for: checked here only (the ``Rule.lifetime`` column has no bound of its own).
MIN_LIFETIME = 60
# docs/mapper.md#when-a-mapper-is-called: a mapper's deadline, 1500 ms unless the rule says otherwise, at most 5000.
MAPPER_DEFAULT_TIMEOUT_MS = 1500
MAPPER_MAX_TIMEOUT_MS = 5000
MAPPER_MIN_TIMEOUT_MS = 50


@dataclass(frozen=True)
class RuleSpec:
    name: str
    issuers: frozenset[str]
    when: str
    effect: str  # "allow" | "deny" | "mapper"
    rule_id: int | None = None
    subject: str = ""  # CEL; "" means claims.sub
    audience: str = ""  # literal; "" means the tenant default
    audiences: tuple[str, ...] = ()  # other audiences a caller may request
    lifetime: int | None = None  # seconds; None → conf.DEFAULT_LIFETIME
    session_tags: tuple[tuple[str, str], ...] = ()  # (tag key, CEL expr), in order
    transitive_tag_keys: tuple[str, ...] = ()
    claims: tuple[tuple[str, str], ...] = ()  # (claim name, CEL expr)
    # Tags left out (instead of denying) when their claim is missing or their value empty.
    optional_tags: frozenset[str] = frozenset()
    # The rule allows tokens of every customer of a shared CI issuer, knowingly (exchange/console/presets.py).
    any_owner: bool = False
    # effect "mapper" (docs/mapper.md#when-a-mapper-is-called): the webhook that decides and shapes the
    # token, and its deadline.
    mapper_url: str = ""
    mapper_timeout_ms: int = MAPPER_DEFAULT_TIMEOUT_MS
    # CEL for the session's SourceIdentity (docs/rules.md#source-identity); "" means none.
    source_identity: str = ""


def session_tag_entry_problem(entry: object) -> str | None:
    """Why one stored ``session_tags`` value is neither a CEL string nor
    ``{"value": CEL, "optional": true|false}``; None when it is one of them."""
    if isinstance(entry, str):
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("value"), str):
        return 'A session tag is a CEL expression, or {"value": "CEL", "optional": true}.'
    if set(entry) - {"value", "optional"}:
        unknown = ", ".join(map(repr, sorted(set(entry) - {"value", "optional"})))
        return f"A session tag has value and optional only, not {unknown}."
    if not isinstance(entry.get("optional", False), bool):
        return "A session tag's optional is true or false."
    return None


def session_tag_entries(mapping: dict) -> tuple[tuple[tuple[str, str], ...], frozenset[str]]:
    """Stored ``session_tags`` (well-formed, see ``session_tag_entry_problem``) as the spec's
    ``(key, CEL)`` pairs, in order, and the keys marked optional."""
    pairs, optional = [], set()
    for key, entry in mapping.items():
        if isinstance(entry, dict):
            pairs.append((key, entry["value"]))
            if entry.get("optional"):
                optional.add(key)
        else:
            pairs.append((key, entry))
    return tuple(pairs), frozenset(optional)


def tags_well_formed(value: object) -> bool:
    """Whether stored ``session_tags`` is a mapping of string keys to well-formed entries."""
    return isinstance(value, dict) and all(
        isinstance(key, str) and session_tag_entry_problem(entry) is None for key, entry in value.items()
    )


def rule_spec_of(
    fields: Mapping[str, Any], *, issuers: frozenset[str] = frozenset(), rule_id: int | None = None
) -> RuleSpec:
    """A rule's stored values (model field → value: a ``Rule`` row's, or a file's with defaults filled
    in) as the engine reads them; ``issuers``: the ids of the issuers it applies to. Session tags
    that are not well formed are left out (``rule_problems`` refuses them)."""
    stored = fields["session_tags"]
    tags, optional = session_tag_entries(stored) if tags_well_formed(stored) else ((), frozenset())
    return RuleSpec(
        rule_id=rule_id,
        name=fields["name"],
        issuers=issuers,
        when=fields["when"],
        effect=fields["effect"],
        subject=fields["subject"] or "",
        audience=fields["audience"] or "",
        audiences=tuple(fields["audiences"] or ()),
        lifetime=fields["lifetime"],
        session_tags=tags,
        transitive_tag_keys=tuple(fields["transitive_tag_keys"] or ()),
        claims=tuple((fields["claims"] or {}).items()),
        optional_tags=optional,
        any_owner=fields["any_owner"],
        mapper_url=fields["mapper_url"] if fields["effect"] == "mapper" else "",
        mapper_timeout_ms=fields["mapper_timeout_ms"],
        source_identity=fields.get("source_identity") or "",
    )


_DEFAULT_SUBJECT = "claims.sub"
_EFFECTS = ("allow", "deny", "mapper")


Problems = list[tuple[str, "RuleSyntaxError | str"]]


class _Checker:
    """Collects every problem of one spec, and the expressions that did compile (by field path)."""

    def __init__(self) -> None:
        self.problems: Problems = []
        self.expressions: dict[str, CompiledExpression] = {}
        # Every problem in the order found, those that only refuse a save (unknown names…) too.
        self.all_problems: Problems = []

    def add(self, path: str, problem: RuleSyntaxError | str) -> None:
        self.problems.append((path, problem))
        self.all_problems.append((path, problem))

    def expression(self, path: str, source: str) -> None:
        try:
            compiled = self.expressions[path] = expression_compile(source)
        except RuleSyntaxError as exc:
            self.add(path, exc)
            return
        for problem in compiled.problems:
            self.all_problems.append((path, RuleSyntaxError(problem.message, line=problem.line, column=problem.column)))

    def basics(self, spec: RuleSpec) -> None:
        if not isinstance(spec.name, str) or not spec.name.strip():
            self.add("name", "A rule needs a name.")
        if spec.effect not in _EFFECTS:
            self.add("effect", f"The effect must be 'allow', 'deny' or 'mapper', not {spec.effect!r}.")
        if spec.effect == "mapper":
            self.mapper(spec)
        self.expression("when", spec.when)
        self.expression("subject", spec.subject or _DEFAULT_SUBJECT)
        if not isinstance(spec.audience, str):
            self.add("audience", "The audience must be a string.")
        for index, audience in enumerate(spec.audiences):
            if not isinstance(audience, str) or not audience:
                self.add(f"audiences[{index}]", "An audience must be a non-empty string.")
        lifetime = spec.lifetime
        if lifetime is not None and (
            not isinstance(lifetime, int) or isinstance(lifetime, bool) or lifetime < MIN_LIFETIME
        ):
            self.add("lifetime", f"The lifetime must be a whole number of seconds, at least {MIN_LIFETIME}.")

    def mapper(self, spec: RuleSpec) -> None:
        """The URL itself (https, not a private address) is judged by ``validators.rule_problems``,
        which knows the settings; here: that there is one, and the deadline."""
        if not isinstance(spec.mapper_url, str) or not spec.mapper_url:
            self.add("mapper_url", "A mapper rule needs the mapper's URL.")
        timeout = spec.mapper_timeout_ms
        if (
            not isinstance(timeout, int)
            or isinstance(timeout, bool)
            or not MAPPER_MIN_TIMEOUT_MS <= timeout <= MAPPER_MAX_TIMEOUT_MS
        ):
            self.add(
                "mapper_timeout_ms",
                f"The mapper's timeout is {MAPPER_MIN_TIMEOUT_MS} to {MAPPER_MAX_TIMEOUT_MS} milliseconds.",
            )

    def session_tags(self, spec: RuleSpec) -> None:
        # IAM User Guide, "Pass session tags in AWS STS": at most 50 tags; keys are
        # case-insensitive ("you cannot have separate Department and department tag keys").
        if len(spec.session_tags) > MAX_SESSION_TAGS:
            count = len(spec.session_tags)
            self.add(
                "session_tags", f"A rule may set at most {MAX_SESSION_TAGS} session tags (AWS limit); it sets {count}."
            )
        seen: dict[str, str] = {}
        for key, source in spec.session_tags:
            path = f"session_tags.{key}" if isinstance(key, str) and key else "session_tags"
            try:
                session_tag_key_validate(key)
            except ValueError as exc:
                self.add(path, str(exc))
            else:
                folded = key.casefold()
                if folded in seen:
                    self.add(path, f"Session tag key {key!r} repeats {seen[folded]!r}; AWS tag keys ignore case.")
                else:
                    seen[folded] = key
            self.expression(path, source)

    def transitive_tag_keys(self, spec: RuleSpec) -> None:
        # Transitive keys must name tags that are set (AssumeRoleWithWebIdentity rejects others).
        # Matched exactly (not case-folded) so the token names each key one way only.
        tag_keys = {key for key, _ in spec.session_tags}
        if len(spec.transitive_tag_keys) > MAX_TRANSITIVE_TAG_KEYS:
            self.add("transitive_tag_keys", f"At most {MAX_TRANSITIVE_TAG_KEYS} transitive tag keys (AWS limit).")
        for key in sorted(spec.optional_tags - tag_keys):
            self.add(f"session_tags.{key}", f"Optional tag {key!r} is not one of this rule's session tags.")
        seen: set[str] = set()
        for index, key in enumerate(spec.transitive_tag_keys):
            path = f"transitive_tag_keys[{index}]"
            if key not in tag_keys:
                self.add(path, f"Transitive tag key {key!r} is not one of this rule's session tags.")
            elif key in seen:
                self.add(path, f"Transitive tag key {key!r} is listed twice.")
            else:
                seen.add(key)

    def claims(self, spec: RuleSpec) -> None:
        names: set[str] = set()
        for name, source in spec.claims:
            path = f"claims.{name}" if isinstance(name, str) and name else "claims"
            if not isinstance(name, str) or not name:
                self.add(path, "A claim name must be a non-empty string.")
            elif name in RESERVED_CLAIMS or is_aws_claim(name):
                self.add(path, _reserved_claim_message(name))
            elif name in names:
                self.add(path, f"The claim {name!r} is set twice.")
            else:
                names.add(name)
            self.expression(path, source)


def _reserved_claim_message(name: str) -> str:
    if name == AWS_TAGS_CLAIM:
        return f"The claim {name!r} is emitted only from session_tags, which checks it against AWS's limits."
    if name == AWS_SOURCE_IDENTITY_CLAIM:
        return f"The claim {name!r} is emitted only from source_identity, which checks it against AWS's rules."
    if is_aws_claim(name):
        return (
            f"The claim {name!r} is in AWS's namespace (https://aws.amazon.com/…), which jwtex does not "
            "check: only session_tags and source_identity emit AWS claims."
        )
    return f"The claim {name!r} is set by jwtex itself (use subject/audience/session_tags where they apply)."


def _check(spec: RuleSpec) -> _Checker:
    checker = _Checker()
    checker.basics(spec)
    if spec.source_identity:
        if not isinstance(spec.source_identity, str):
            checker.add("source_identity", "The source identity is a CEL expression.")
        else:
            checker.expression("source_identity", spec.source_identity)
    checker.session_tags(spec)
    checker.transitive_tag_keys(spec)
    checker.claims(spec)
    return checker


def rule_spec_check(spec: RuleSpec) -> tuple[Problems, dict[str, CompiledExpression]]:
    """What keeps ``spec`` from compiling, and the expressions that did compile, by field path."""
    checker = _check(spec)
    return checker.problems, checker.expressions


@dataclass(frozen=True)
class RuleFindings:
    errors: tuple[tuple[str, str], ...]  # (field path, message): the rule may not be saved
    warnings: tuple[tuple[str, str], ...]  # (field path, message): shown beside a rule that saves


def rule_findings(spec: RuleSpec, *, claim_types: Mapping[str, tuple[str, str]] | None = None) -> RuleFindings:
    """Every problem of ``spec`` as ``(field path, message)``, and its warnings. ``claim_types``
    (claim → ``string``/``number`` and the platform that says so, from the issuers' presets)
    enables the warning about comparisons that can never be true. Beyond what ``rule_spec_check`` finds,
    a rule is refused for names and functions the engine does not have, for a cost over its budget
    and for tokens certain to be longer than AWS accepts — save-time checks only: a rule saved
    before them still runs, held to its cost budget at run time (``engine``)."""
    checker = _check(spec)
    if checker.problems:  # every problem found, in order; the rest needs every expression
        return RuleFindings(tuple((path, str(problem)) for path, problem in checker.all_problems), ())
    return findings_of(spec, checker.expressions, claim_types=claim_types)


def findings_of(
    spec: RuleSpec,
    expressions: Mapping[str, CompiledExpression],
    *,
    claim_types: Mapping[str, tuple[str, str]] | None = None,
) -> RuleFindings:
    """``rule_findings`` of a spec whose expressions all compiled (``rule_spec_check`` found nothing)."""
    errors: list[tuple[str, str]] = []
    warnings: list[tuple[str, str]] = []
    for path, expression in expressions.items():
        for problem in expression.problems:
            errors.append((path, str(RuleSyntaxError(problem.message, line=problem.line, column=problem.column))))
        if claim_types and expression.tree is not None:
            for warning in type_warnings(expression.tree, claim_types):
                warnings.append((path, str(RuleSyntaxError(warning.message, line=warning.line, column=warning.column))))
    if errors:
        return RuleFindings(tuple(errors), tuple(warnings))
    over = cost_problem(expressions)
    if over is not None:
        path, message, line, column = over
        errors.append((path, str(RuleSyntaxError(message, line=line, column=column))))
    if spec.effect == "allow" and spec.session_tags:
        error, warning = token_length_findings(
            tags=[(key, expressions[f"session_tags.{key}"]) for key, _ in spec.session_tags],
            optional=spec.optional_tags,
            transitive=spec.transitive_tag_keys,
            subject=expressions["subject"],
            claim_names=[name for name, _ in spec.claims],
            audiences=[spec.audience, *spec.audiences],
            source_identity=bool(spec.source_identity),
        )
        if error:
            errors.append(("session_tags", error))
        if warning:
            warnings.append(("session_tags", warning))
    return RuleFindings(tuple(errors), tuple(warnings))


def rule_spec_validate(spec: RuleSpec, **context) -> list[tuple[str, str]]:
    """Every problem of ``spec`` as ``(field path, message)``; empty when it may be saved (the
    errors of ``rule_findings``)."""
    return list(rule_findings(spec, **context).errors)
