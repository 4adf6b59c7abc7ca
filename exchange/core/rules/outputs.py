"""Running one compiled CEL program, and turning its result into what a token holds; what a
matching ``allow`` rule emits (``rule_allow``), or the refusal it gives (``rule_denial``). Pure.

An engine failure of any kind (pyo3's ``PanicException`` is a ``BaseException``) becomes an
``EvaluationError``, which denies; a result becomes a tag value (a string, number or bool) or
plain JSON (an extra claim), or fails the same way. A rule whose outputs cannot be produced, or
break the AWS limits, denies as well.
"""

from __future__ import annotations

import math
from typing import Any

import cel

from ..aws import TagValueError, session_tag_value_validate, source_identity_problem
from ..errors import AccessDenied, AudienceNotAllowed
from ..limits import DEFAULT_LIFETIME
from ..values import Decision
from .cel_guard import PASSTHROUGH
from .compiled import CompiledRule
from .spec import MAX_SUBJECT_LENGTH

__all__ = [
    "EvaluationError",
    "json_value",
    "program_execute",
    "rule_allow",
    "rule_audience",
    "rule_denial",
    "source_identity_reason",
    "tag_problem",
    "tag_value",
]


class EvaluationError(Exception):
    def __init__(self, cause: BaseException | str) -> None:
        self.cause = cause
        if isinstance(cause, str):
            text = cause
        else:
            detail = str(cause)
            text = f"{type(cause).__name__}: {detail}" if detail else type(cause).__name__
        super().__init__(text)


def program_execute(program: cel.Program, context: Any) -> Any:
    if isinstance(context, EvaluationError):  # the claims could not be given to CEL at all
        raise context
    try:
        return program.execute(context)
    except PASSTHROUGH:
        raise
    except BaseException as exc:  # noqa: BLE001 - KeyError, TypeError, … and pyo3 PanicException alike
        raise EvaluationError(exc) from None


def tag_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):  # before int: bool is an int in Python
        return "true" if value else "false"
    if isinstance(value, int):  # CEL int and uint both arrive as int
        return str(value)
    kind = "null" if value is None else type(value).__name__
    raise EvaluationError(f"a session tag value must be a string, number or bool, not {kind}")


def json_value(value: Any, path: str) -> Any:
    """Convert a CEL result to plain JSON-serialisable Python, or fail."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        raise EvaluationError(f"{path} is {value!r}, which JSON cannot represent")
    if isinstance(value, (list, tuple)):
        return [json_value(item, f"{path}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise EvaluationError(f"{path} has a {type(key).__name__} map key; JSON object keys are strings")
            result[key] = json_value(item, f"{path}.{key}")
        return result
    raise EvaluationError(f"{path} is a {type(value).__name__}, which is not JSON")


def tag_problem(exc: Exception, value: Any, source: str) -> str:
    """What is wrong with a tag value, and what to write instead (for the audit and the
    simulator; never the client's description)."""
    if not isinstance(exc, TagValueError) or not isinstance(value, str):
        return str(exc)
    shown = repr(value if len(value) <= 64 else value[:61] + "...")
    fix = f"use aws_tag({source.strip()})"
    if exc.kind == "character" and exc.character is not None:
        return f"{shown} contains {exc.character!r}, which AWS refuses in tags — {fix}"
    if exc.kind == "length":
        return f"the value is {len(value)} characters, over AWS's 256 — {fix} (it cuts to 256)"
    if exc.kind == "reserved":
        return f"{shown} starts with 'aws:', which AWS reserves — {fix}"
    return str(exc)


def source_identity_reason(value: Any, problem: str, source: str) -> str:
    """What is wrong with a source identity, and what to write instead (the audit and the simulator)."""
    shown = repr(value[:61] + "..." if len(value) > 64 else value) + ": " if isinstance(value, str) else ""
    return f"{shown}{problem} — use aws_source_identity({source.strip()})"


# --------------------------------------------------------------------------- what an allow rule emits


def _by(rule: CompiledRule) -> dict[str, Any]:
    """The deciding rule, as an ExchangeError names it for the audit record (docs/operations.md#what-a-record-holds)."""
    return {"rule_id": rule.rule_id, "rule_name": rule.name}


def _rule_label(rule: CompiledRule) -> str:
    return f"rule {rule.name!r}" + (f" (id {rule.rule_id})" if rule.rule_id is not None else "")


def rule_denial(
    rule: CompiledRule,
    description: str,
    reason: str,
    cls: type[AccessDenied] = AccessDenied,
) -> AccessDenied:
    """The refusal ``rule`` gives: the client reads ``description``, the audit ``reason`` (the
    mapper's answer is refused the same way, core/rules/mapper_answer.py)."""
    return cls(f"Rule '{rule.name}'{description}", reason=f"{_rule_label(rule)}{reason}", **_by(rule))


def rule_audience(rule: CompiledRule, *, requested: str | None, default: str) -> str:
    """The emitted ``aud``: the rule's (or the tenant's default), or a requested one it allows."""
    spec = rule.spec
    audience = spec.audience or default
    if not requested:  # an empty audience parameter means "not given"
        return audience
    if requested != audience and requested not in spec.audiences:
        raise rule_denial(
            rule,
            " does not allow the requested audience.",
            f" does not allow audience {requested!r} (allowed: {[audience, *spec.audiences]!r})",
            AudienceNotAllowed,
        )
    return requested


def _subject(rule: CompiledRule, context: Any) -> str:
    try:
        subject = program_execute(rule.subject, context)
    except EvaluationError as exc:
        raise rule_denial(rule, " could not compute the subject.", f": subject: {exc}") from None
    if not isinstance(subject, str) or not subject or len(subject) > MAX_SUBJECT_LENGTH:
        what = (
            f"a {type(subject).__name__}" if not isinstance(subject, str) else f"a string of {len(subject)} characters"
        )
        raise rule_denial(
            rule,
            " could not compute the subject.",
            f": subject must be a string of 1 to {MAX_SUBJECT_LENGTH} characters, got {what}",
        )
    return subject


def _session_tags(rule: CompiledRule, context: Any) -> tuple[tuple[str, str], ...]:
    tags: list[tuple[str, str]] = []
    sources = dict(rule.spec.session_tags)
    for key, program in rule.session_tags:
        optional = key in rule.spec.optional_tags
        try:
            value = program_execute(program, context)
        except EvaluationError as exc:
            if optional and isinstance(exc.cause, KeyError):  # the claim is missing: no tag
                continue
            raise rule_denial(
                rule, f": session tag '{key}' has no valid value.", f": session tag {key!r}: {exc}"
            ) from None
        if optional and value in ("", None):
            continue
        try:
            value = tag_value(value)
            session_tag_value_validate(key, value)
        except (EvaluationError, ValueError) as exc:
            raise rule_denial(
                rule,
                f": session tag '{key}' has no valid value.",
                f": session tag {key!r}: {tag_problem(exc, value, sources[key])}",
            ) from None
        tags.append((key, value))
    return tuple(tags)


def _source_identity(rule: CompiledRule, context: Any) -> str | None:
    """The session's SourceIdentity, checked against AWS's rules (docs/rules.md#source-identity)."""
    if rule.source_identity is None:
        return None
    try:
        value = program_execute(rule.source_identity, context)
    except EvaluationError as exc:
        raise rule_denial(rule, ": the source identity could not be computed.", f": source_identity: {exc}") from None
    problem = source_identity_problem(value)
    if problem is not None:
        raise rule_denial(
            rule,
            ": the source identity is not one AWS accepts.",
            f": source_identity: {source_identity_reason(value, problem, rule.spec.source_identity)}",
        )
    return value


def _extra_claims(rule: CompiledRule, context: Any) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    for name, program in rule.claims:
        try:
            extra[name] = json_value(program_execute(program, context), name)
        except (EvaluationError, RecursionError) as exc:
            raise rule_denial(rule, f": claim '{name}' could not be computed.", f": claim {name!r}: {exc}") from None
    return extra


def rule_allow(
    rule: CompiledRule, context: Any, *, requested_audience: str | None, default_audience: str, max_lifetime: int
) -> Decision:
    """What an allow rule emits; audience first, since refusing a request needs no evaluation."""
    spec = rule.spec
    audience = rule_audience(rule, requested=requested_audience, default=default_audience)
    subject = _subject(rule, context)
    tags = _session_tags(rule, context)
    emitted = {key for key, _ in tags}
    extra = _extra_claims(rule, context)
    lifetime = spec.lifetime if spec.lifetime is not None else DEFAULT_LIFETIME
    return Decision(
        rule_id=spec.rule_id,
        rule_name=spec.name,
        subject=subject,
        audience=audience,
        lifetime=min(lifetime, max_lifetime),
        session_tags=tags,
        transitive_tag_keys=tuple(key for key in spec.transitive_tag_keys if key in emitted),  # optional ones left out
        extra_claims=extra,
        source_identity=_source_identity(rule, context),
    )
