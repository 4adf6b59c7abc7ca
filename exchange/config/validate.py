"""Validate a whole configuration document before anything is written: *every* problem is
reported at once, each with its path, by the same checks the admin uses (model validators and
``clean()``, the shared URL rule, the rule engine's ``rule_spec_validate``)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from django.core.exceptions import ValidationError
from django.db import models

from tenants.models import Tenant

from ..conf import jwtex_settings
from ..console.presets import preset_claim_types
from ..core.limits import SUPPORTED_UPSTREAM_ALGORITHMS
from ..core.shared_issuers import owner_pinning_problem
from ..core.rules.spec import RuleSpec, rule_findings, session_tag_entries
from ..core.validators import url_problem
from ..models import Issuer, Rule
from .schema import (
    ISSUER_KEYS,
    RULE_KEYS,
    TENANT_KEYS,
    TENANT_LISTS,
    Collector,
    ConfigError,
    Key,
    at,
    keys_check,
    value_check,
    dot,
    field_default,
    stored_value,
    type_name,
)


@dataclass
class DesiredIssuer:
    path: str
    issuer_id: str
    fields: dict[str, Any]  # model field → value, defaults filled in


@dataclass
class DesiredRule:
    path: str
    name: str
    position: int
    issuer_ids: frozenset[str]
    fields: dict[str, Any]


@dataclass
class DesiredTenant:
    path: str
    slug: str
    fields: dict[str, Any]
    issuers: list[DesiredIssuer]
    rules: list[DesiredRule]
    shadow_rules: list[DesiredRule] = field(default_factory=list)  # the candidate set (docs/operations.md#shadow-rules)
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (path, message): saved, with a caveat



def _read_fields(
    obj: Mapping, table: Mapping[str, Key], model: type[models.Model], path: str, errors: Collector
) -> tuple[dict[str, Any], set[str]]:
    """Model field → value (defaults for omitted keys) and the model fields whose value is bad."""
    values: dict[str, Any] = {}
    bad: set[str] = set()
    for key, spec in table.items():
        if spec.kind == "issuer_ids":
            continue
        if key in obj:
            if value_check(spec.kind, obj[key], dot(path, key), errors):
                if spec.kind == "mapper":  # one document key, two model fields
                    values["mapper_url"] = obj[key]["url"]
                    values["mapper_timeout_ms"] = obj[key].get("timeout_ms", field_default(model, "mapper_timeout_ms"))
                    continue
                values[spec.model_field] = stored_value(spec.kind, obj[key])
                continue
            bad.add(spec.model_field)
        elif spec.required:
            bad.add(spec.model_field)  # reported by _check_keys; no second message
        values[spec.model_field] = field_default(model, spec.model_field)
        if spec.kind == "mapper":
            values["mapper_timeout_ms"] = field_default(model, "mapper_timeout_ms")
    return values, bad


def _model_errors(
    instance: models.Model,
    table: Mapping[str, Key],
    path: str,
    errors: Collector,
    *,
    exclude: set[str],
    reported: set[str],
) -> None:
    """Run the model's own validators (field validators and ``clean()``), reporting under the
    document's key names. ``exclude``: fields whose value was unusable (a default stood in);
    ``reported``: fields that already have a (more precise) message from the checks here —
    ``clean()`` runs over every field, so its word on those would only repeat ours."""
    yaml_key = {spec.model_field: key for key, spec in table.items()}
    own_messages = [message for where, message in errors.errors if where.startswith(path)]
    try:
        instance.full_clean(exclude=sorted(exclude | {"tenant"}), validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        for model_field, messages in exc.message_dict.items():
            if model_field in exclude or model_field in reported:
                continue
            where = path if model_field == "__all__" else dot(path, yaml_key.get(model_field, model_field))
            for message in messages:
                if model_field == "__all__" and any(message.endswith(own) for own in own_messages):
                    continue
                errors.add(where, message)


def _check_url(value: str, path: str, errors: Collector, *, what: str) -> None:
    # The same rule and message as the admin's forms (Issuer.clean).
    problem = url_problem(value, what=what, allow_insecure=jwtex_settings.allow_insecure_issuers, is_issuer=what == "The issuer")
    if problem:
        errors.add(path, problem)


def _validate_issuer(obj: Any, index: int, tenant_path: str, errors: Collector) -> DesiredIssuer | None:
    raw_id = obj.get("id") if isinstance(obj, dict) else None
    path = at(f"{tenant_path}.issuers", raw_id if isinstance(raw_id, str) and raw_id else index)
    if not isinstance(obj, dict):
        errors.add(path, f"expected a mapping, got {type_name(obj)}")
        return None
    keys_check(obj, list(ISSUER_KEYS), [k for k, s in ISSUER_KEYS.items() if s.required], path, errors)
    values, bad = _read_fields(obj, ISSUER_KEYS, Issuer, path, errors)
    before = len(errors.errors)
    reported: set[str] = set()

    def flag(model_field: str) -> None:
        nonlocal before
        if len(errors.errors) > before:
            reported.add(model_field)
        before = len(errors.errors)

    if "issuer" not in bad and values["issuer"]:
        _check_url(values["issuer"], dot(path, "issuer"), errors, what="The issuer")
    flag("issuer")
    if "jwks_uri" not in bad and values["jwks_uri"]:
        _check_url(values["jwks_uri"], dot(path, "jwks_uri"), errors, what="The JWKS URI")
    flag("jwks_uri")
    if "algorithms" not in bad:
        algorithms = values["algorithms"]
        if not algorithms:
            errors.add(dot(path, "algorithms"), "list at least one algorithm")
        for position, alg in enumerate(algorithms):
            if alg not in SUPPORTED_UPSTREAM_ALGORITHMS:
                errors.add(
                    f"{dot(path, 'algorithms')}[{position}]",
                    f"unsupported algorithm {alg!r} (supported: {', '.join(SUPPORTED_UPSTREAM_ALGORITHMS)})",
                )
        if len(set(algorithms)) != len(algorithms):
            errors.add(dot(path, "algorithms"), "an algorithm is listed twice")
    flag("algorithms")
    if "audiences" not in bad:
        for position, audience in enumerate(values["audiences"]):
            if not audience:
                errors.add(f"{dot(path, 'audiences')}[{position}]", "an audience must not be empty")
    flag("audiences")
    _model_errors(Issuer(**values), ISSUER_KEYS, path, errors, exclude=bad, reported=reported)
    if not isinstance(raw_id, str) or not raw_id:
        return None
    return DesiredIssuer(path=path, issuer_id=raw_id, fields=values)


def _rule_field_path(path: str, field_path: str) -> str:
    """Map a ``rule_spec_validate`` field (``session_tags.repo``, ``audiences[0]``) onto ``path``."""
    head, sep, rest = field_path.partition(".")
    if sep and head in ("session_tags", "claims"):
        return dot(dot(path, head), rest)
    if field_path in ("mapper_url", "mapper_timeout_ms"):
        return dot(dot(path, "mapper"), "url" if field_path == "mapper_url" else "timeout_ms")
    return f"{path}.{field_path}"


def _rule_issuers(obj: dict, path: str, issuer_urls: Mapping[str, object], errors: Collector) -> set[str]:
    """The issuer ids a rule names, each reported unless the tenant's file defines it."""
    referenced: set[str] = set()
    if "issuers" in obj and value_check("issuer_ids", obj["issuers"], dot(path, "issuers"), errors):
        if not obj["issuers"]:
            errors.add(dot(path, "issuers"), "a rule must name at least one issuer")
        for position, issuer_id in enumerate(obj["issuers"]):
            if issuer_id not in issuer_urls:
                known = ", ".join(sorted(issuer_urls)) or "none"
                errors.add(
                    f"{dot(path, 'issuers')}[{position}]",
                    f"unknown issuer {issuer_id!r}: this tenant's issuers in the file are: {known}",
                )
            referenced.add(issuer_id)
    return referenced


def desired_rule_spec(fields: Mapping[str, Any], issuer_ids: frozenset[str], *, tags_ok: bool = True) -> RuleSpec:
    """The rule of a file (its model fields, defaults filled in) as the engine reads it."""
    tags, optional = session_tag_entries(fields["session_tags"]) if tags_ok else ((), frozenset())
    return RuleSpec(
        name=fields["name"],
        issuers=issuer_ids,
        when=fields["when"],
        effect=fields["effect"],
        subject=fields["subject"],
        audience=fields["audience"],
        audiences=tuple(fields["audiences"]),
        lifetime=fields["lifetime"],
        session_tags=tags,
        transitive_tag_keys=tuple(fields["transitive_tag_keys"]),
        claims=tuple(fields["claims"].items()),
        optional_tags=optional,
        any_owner=fields["any_owner"],
        mapper_url=fields["mapper_url"] if fields["effect"] == "mapper" else "",
        mapper_timeout_ms=fields["mapper_timeout_ms"],
    )


def _check_rule_spec(
    values: dict, bad: set[str], referenced: set[str], path: str, errors: Collector,
    issuers: Mapping[str, tuple[str, bool]],
) -> set[str]:
    """The rule checked as the admin checks it (``rule_findings``, the issuers' platforms known);
    returns the top-level fields it faulted. Its warnings go to ``errors.warnings``."""
    spec = desired_rule_spec(values, frozenset(referenced), tags_ok="session_tags" not in bad)
    spec_bad: set[str] = set()
    platforms = preset_claim_types([issuers[i] for i in sorted(referenced) if i in issuers])
    findings = rule_findings(spec, claim_types=platforms)
    for field_path, message in findings.warnings:
        errors.warn(_rule_field_path(path, field_path), message)
    for field_path, message in findings.errors:
        top = re.split(r"[.\[]", field_path, maxsplit=1)[0]
        if top in bad:
            continue  # already reported as a type error; the default stood in for it
        spec_bad.add(top)
        errors.add(_rule_field_path(path, field_path), message)
    return spec_bad


def _validate_rule(
    obj: Any, index: int, tenant_path: str, issuers: Mapping[str, tuple[str, bool]], errors: Collector, *,
    key: str = "rules",
) -> DesiredRule | None:
    raw_name = obj.get("name") if isinstance(obj, dict) else None
    path = at(f"{tenant_path}.{key}", raw_name if isinstance(raw_name, str) and raw_name else index, quote=True)
    if not isinstance(obj, dict):
        errors.add(path, f"expected a mapping, got {type_name(obj)}")
        return None
    keys_check(obj, list(RULE_KEYS), [k for k, s in RULE_KEYS.items() if s.required], path, errors)
    values, bad = _read_fields(obj, RULE_KEYS, Rule, path, errors)

    referenced = _rule_issuers(obj, path, issuers, errors)
    spec_bad = _check_rule_spec(values, bad, referenced, path, errors, issuers)
    owner_problem = owner_pinning_problem(
        effect=values["effect"], when=values["when"], any_owner=values["any_owner"],
        issuer_urls=[issuers[i][0] for i in sorted(referenced) if i in issuers],
    )
    if owner_problem and "when" not in bad:
        errors.add(dot(path, "when"), owner_problem)
    _model_errors(Rule(**values), RULE_KEYS, path, errors, exclude=bad, reported=spec_bad)
    if not isinstance(raw_name, str) or not raw_name:
        return None
    return DesiredRule(
        path=path, name=raw_name, position=(index + 1) * 10, issuer_ids=frozenset(referenced), fields=values
    )


def rule_document_check(
    obj: Any, *, issuers: Mapping[str, tuple[str, bool]]
) -> tuple[DesiredRule | None, list[tuple[str, str]], list[tuple[str, str]]]:
    """One rule written as in a configuration file (the simulator's "try a rule"), checked exactly
    as ``jwtex_apply`` checks the rules of a file: the rule (None if it has no name), its errors
    and its warnings. ``issuers``: the tenant's, id → (URL, has a static JWKS)."""
    errors = Collector()
    desired = _validate_rule(obj, 0, "", issuers, errors)
    strip = lambda found: [(path.removeprefix("."), message) for path, message in found]  # noqa: E731
    return desired, strip(errors.errors), strip(errors.warnings)


def _validate_list(obj: Mapping, key: str, path: str, errors: Collector) -> list:
    value = obj.get(key, [])
    if value is None:
        return []
    if not isinstance(value, list):
        errors.add(dot(path, key), f"expected a list, got {type_name(value)}")
        return []
    return value


def _duplicates(items: Sequence[Any], ident: Callable[[Any], str], path_of: Callable[[Any], str], what: str, errors: Collector) -> None:
    seen: set[str] = set()
    for item in items:
        if item is None:
            continue
        key = ident(item)
        if key in seen:
            errors.add(path_of(item), f"{what} {key!r} appears more than once")
        seen.add(key)


def _validate_tenant(obj: Any, index: int, errors: Collector) -> DesiredTenant | None:
    raw_slug = obj.get("slug") if isinstance(obj, dict) else None
    path = at("tenants", raw_slug if isinstance(raw_slug, str) and raw_slug else index)
    if not isinstance(obj, dict):
        errors.add(path, f"expected a mapping, got {type_name(obj)}")
        return None
    keys_check(obj, [*TENANT_KEYS, *TENANT_LISTS], [k for k, s in TENANT_KEYS.items() if s.required], path, errors)
    values, bad = _read_fields(obj, TENANT_KEYS, Tenant, path, errors)
    _model_errors(Tenant(**values), TENANT_KEYS, path, errors, exclude=bad, reported=set())

    issuers = [_validate_issuer(item, i, path, errors) for i, item in enumerate(_validate_list(obj, "issuers", path, errors))]
    _duplicates(issuers, lambda d: d.issuer_id, lambda d: d.path, "issuer id", errors)
    known = {d.issuer_id: (str(d.fields.get("issuer", "")), d.fields.get("static_jwks") is not None)
             for d in issuers if d is not None}
    warned = len(errors.warnings)
    rules = [_validate_rule(item, i, path, known, errors)
             for i, item in enumerate(_validate_list(obj, "rules", path, errors))]
    _duplicates(rules, lambda d: d.name, lambda d: d.path, "rule name", errors)
    shadow = [
        _validate_rule(item, i, path, known, errors, key="shadow_rules")
        for i, item in enumerate(_validate_list(obj, "shadow_rules", path, errors))
    ]
    _duplicates(shadow, lambda d: d.name, lambda d: d.path, "shadow rule name", errors)
    if not isinstance(raw_slug, str) or not raw_slug:
        return None
    return DesiredTenant(
        path=path,
        slug=raw_slug,
        fields=values,
        issuers=[d for d in issuers if d is not None],
        rules=[d for d in rules if d is not None],
        shadow_rules=[d for d in shadow if d is not None],
        warnings=errors.warnings[warned:],
    )


def config_validate(document: Any) -> list[DesiredTenant]:
    """Check the whole document without touching the database; raise ``ConfigError`` with
    every problem found."""
    errors = Collector()
    if not isinstance(document, Mapping):
        raise ConfigError([("(document)", f"expected a mapping with a 'tenants' list, got {type_name(document)}")])
    keys_check(document, ["tenants"], ["tenants"], "(document)", errors)
    tenants_raw = document.get("tenants", [])
    if not isinstance(tenants_raw, list):
        errors.add("tenants", f"expected a list, got {type_name(tenants_raw)}")
        tenants_raw = []
    tenants = [_validate_tenant(item, i, errors) for i, item in enumerate(tenants_raw)]
    _duplicates(tenants, lambda d: d.slug, lambda d: d.path, "tenant slug", errors)
    if errors.errors:
        raise ConfigError(errors.errors)
    return [t for t in tenants if t is not None]


