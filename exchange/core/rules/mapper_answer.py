"""A mapper's answer → the token's ``Decision``, checked exactly like a rule's output
(docs/mapper.md#the-answer, docs/rules.md#aws-limits). Pure: the HTTP call is exchange.services.mapper's.

The answer is ``{"allow": true|false, "claims": {...}}``. ``allow: false`` denies. With
``allow: true`` the claims become the token's as the original mapper.js wrote them: ``sub`` and
``aud`` if present (an ``aud`` must be one the rule allows), ``https://aws.amazon.com/source_identity``
as the source identity (checked against AWS's rules), ``https://aws.amazon.com/tags`` as
the tags claim, exactly as written (``principal_tags`` of one-element lists, ``transitive_tag_keys``
if the mapper sends it, even empty; nothing else in it), the rest as
extra claims — but for any other claim of AWS's namespace (``https://aws.amazon.com/…``), which
jwtex cannot check and so refuses; ``iss``, ``iat``, ``nbf``, ``exp`` and ``jti`` are jwtex's and ignored. Anything
that is not so — or breaks AWS's limits — denies, naming what in the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..aws import (
    AWS_SOURCE_IDENTITY_CLAIM,
    AWS_TAGS_CLAIM,
    MAX_SESSION_TAGS,
    MAX_SUBJECT_LENGTH,
    MAX_TRANSITIVE_TAG_KEYS,
    is_aws_claim,
    session_tag_key_validate,
    session_tag_value_validate,
    source_identity_problem,
)
from ..errors import AudienceNotAllowed
from ..limits import DEFAULT_LIFETIME
from ..values import Decision
from .compiled import CompiledRule
from .outputs import EvaluationError, json_value, rule_audience, rule_denial

__all__ = ["mapper_decision"]

_IGNORED = frozenset({"iss", "iat", "nbf", "exp", "jti"})  # always jwtex's own (docs/mapper.md#the-answer)


class _Refused(Exception):
    """What is wrong with the answer (for the audit reason)."""


def mapper_decision(
    rule: CompiledRule,
    answer: Any,
    *,
    claims: Mapping[str, Any],
    requested_audience: str | None,
    default_audience: str,
    max_lifetime: int,
) -> Decision:
    """The token the mapper's ``answer`` describes, or ``AccessDenied`` (naming the rule) for a
    denial or anything malformed."""
    try:
        emitted = _allowed_claims(answer)
        if emitted is None:
            raise rule_denial(rule, ": the mapper denied this exchange.", ": mapper denied")
        audience = _answer_audience(rule, emitted, requested=requested_audience, default=default_audience)
        subject = _answer_subject(emitted, claims)
        tags, transitive, tags_claim = _answer_tags(emitted.get(AWS_TAGS_CLAIM))
        source_identity = _answer_source_identity(emitted)
        extra = {
            name: json_value(value, name)
            for name, value in emitted.items()
            if name not in _IGNORED | {"sub", "aud", AWS_TAGS_CLAIM, AWS_SOURCE_IDENTITY_CLAIM}
        }
    except (_Refused, EvaluationError, RecursionError) as exc:
        raise rule_denial(rule, ": the mapper's answer is not valid.", f": mapper answer: {exc}") from None
    lifetime = rule.spec.lifetime if rule.spec.lifetime is not None else DEFAULT_LIFETIME
    return Decision(
        rule_id=rule.rule_id,
        rule_name=rule.name,
        subject=subject,
        audience=audience,
        lifetime=min(lifetime, max_lifetime),
        session_tags=tags,
        transitive_tag_keys=transitive,
        extra_claims=extra,
        tags_claim=tags_claim,
        source_identity=source_identity,
    )


def _answer_source_identity(emitted: Mapping[str, Any]) -> str | None:
    """The answer's source identity, checked as a rule's is; any other AWS claim is refused."""
    unknown = sorted(
        name for name in emitted if is_aws_claim(name) and name not in (AWS_TAGS_CLAIM, AWS_SOURCE_IDENTITY_CLAIM)
    )
    if unknown:
        raise _Refused(
            f"{', '.join(map(repr, unknown))}: AWS's claims are emitted only as {AWS_TAGS_CLAIM!r} "
            f"and {AWS_SOURCE_IDENTITY_CLAIM!r}, which jwtex checks"
        )
    if AWS_SOURCE_IDENTITY_CLAIM not in emitted:
        return None
    problem = source_identity_problem(emitted[AWS_SOURCE_IDENTITY_CLAIM])
    if problem is not None:
        raise _Refused(problem)
    return emitted[AWS_SOURCE_IDENTITY_CLAIM]


def _allowed_claims(answer: Any) -> dict[str, Any] | None:
    """The claims of an ``allow: true`` answer; None for ``allow: false``."""
    if not isinstance(answer, dict) or not isinstance(answer.get("allow"), bool):
        raise _Refused('expected {"allow": true|false, "claims": {...}}')
    if answer["allow"] is False:
        return None
    emitted = answer.get("claims", {})
    if not isinstance(emitted, dict):
        raise _Refused("claims must be a JSON object")
    return emitted


def _answer_audience(rule: CompiledRule, emitted: Mapping[str, Any], *, requested: str | None, default: str) -> str:
    if "aud" not in emitted:
        return rule_audience(rule, requested=requested, default=default)
    audience = emitted["aud"]
    if not isinstance(audience, str) or not audience:
        raise _Refused("aud must be a non-empty string")
    allowed = [rule.spec.audience or default, *rule.spec.audiences]
    if audience not in allowed or (requested and requested != audience):
        raise rule_denial(
            rule,
            " does not allow the audience its mapper chose.",
            f": mapper chose audience {audience!r} (allowed: {allowed!r}, requested: {requested!r})",
            AudienceNotAllowed,
        )
    return audience


def _answer_subject(emitted: Mapping[str, Any], claims: Mapping[str, Any]) -> str:
    subject = emitted.get("sub", claims.get("sub"))
    if not isinstance(subject, str) or not 1 <= len(subject) <= MAX_SUBJECT_LENGTH:
        raise _Refused(f"sub must be a string of 1 to {MAX_SUBJECT_LENGTH} characters")
    return subject


_TAGS_SHAPE = f'{AWS_TAGS_CLAIM} must be {{"principal_tags": {{KEY: [VALUE]}}, "transitive_tag_keys": [KEY, ...]}}'


def _answer_tags(claim: Any) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...], dict[str, Any] | None]:
    """The session tags, the transitive keys, and the claim to emit: the mapper's own, member for
    member and in its order (an empty ``transitive_tag_keys`` list included), once every part of it
    is known to be what AWS STS reads (docs/mapper.md#the-answer)."""
    if claim is None:
        return (), (), None
    if not isinstance(claim, dict) or not isinstance(claim.get("principal_tags", {}), dict):
        raise _Refused(_TAGS_SHAPE)
    unknown = sorted(set(claim) - {"principal_tags", "transitive_tag_keys"})
    if unknown:
        raise _Refused(f"{_TAGS_SHAPE}; it has {', '.join(map(repr, unknown))} too")
    principal = claim.get("principal_tags", {})
    if len(principal) > MAX_SESSION_TAGS:
        raise _Refused(f"{len(principal)} session tags; AWS allows at most {MAX_SESSION_TAGS}")
    tags, seen = [], set()
    for key, values in principal.items():
        try:
            session_tag_key_validate(key)
        except ValueError as exc:
            raise _Refused(str(exc)) from None
        if key.casefold() in seen:
            raise _Refused(f"session tag key {key!r} repeats another; AWS tag keys ignore case")
        seen.add(key.casefold())
        if not (isinstance(values, list) and len(values) == 1):
            raise _Refused(f"session tag {key!r}: a tag's value is a list of one string, as AWS reads it")
        try:
            session_tag_value_validate(key, values[0])
        except ValueError as exc:
            raise _Refused(f"{exc} (a tag's value is a list of one string)") from None
        tags.append((key, values[0]))
    transitive = _transitive(claim.get("transitive_tag_keys", []), {key for key, _ in tags})
    exact = {
        member: {key: [value] for key, value in tags} if member == "principal_tags" else list(transitive)
        for member in claim
    }
    return tuple(tags), transitive, exact


def _transitive(keys: Any, tag_keys: set[str]) -> tuple[str, ...]:
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise _Refused("transitive_tag_keys must be a list of strings")
    if len(keys) > MAX_TRANSITIVE_TAG_KEYS or len(set(keys)) != len(keys) or not set(keys) <= tag_keys:
        raise _Refused(f"transitive_tag_keys must be distinct session tag keys, at most {MAX_TRANSITIVE_TAG_KEYS}")
    return tuple(keys)
