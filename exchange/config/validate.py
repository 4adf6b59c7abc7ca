"""Validate a whole configuration document before anything is written: *every* problem is
reported at once, each with its path, by the same checks the admin uses: the models' field
validators, an issuer's one check (``Issuer.problems``) and a rule's (``Rule.findings``), which
their ``clean()`` raise (docs/configuration-file.md#validation). Nothing here judges a value itself
beyond its type."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models

from tenants.models import Tenant

from ..core.rules.spec import RuleSpec, rule_spec_of
from ..core.validators import Problem
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
    dot,
    field_default,
    keys_check,
    stored_value,
    type_name,
    value_check,
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
    clean: bool = False,
) -> None:
    """The model's field validators (lengths, choices, ranges) and, with ``clean``, its ``clean()``
    (a tenant's; an issuer's and a rule's checks are reported by ``_report``), under the document's
    key names. ``exclude``: fields whose value was unusable (reported already; a default stood in)."""
    yaml_key = {spec.model_field: key for key, spec in table.items()}
    try:
        if clean:
            instance.full_clean(exclude=sorted(exclude | {"tenant"}), validate_unique=False, validate_constraints=False)
        else:
            instance.clean_fields(exclude=sorted(exclude | {"tenant"}))
    except ValidationError as exc:
        for model_field, messages in exc.message_dict.items():
            if model_field in exclude:
                continue
            where = path if model_field == "__all__" else dot(path, yaml_key.get(model_field, model_field))
            for message in messages:
                errors.add(where, message)


def _report(
    problems: list[Problem], bad: set[str], where: Callable[[str, str], str], report: Callable[[str, str], None]
) -> None:
    """A model's one check (``problems()``), each problem at its path; a field whose value was
    unusable was reported already (its default stood in)."""
    for model_field, within, message in problems:
        if model_field not in bad:
            report(where(model_field, within), message)


def _validate_issuer(obj: Any, index: int, tenant_path: str, errors: Collector) -> DesiredIssuer | None:
    raw_id = obj.get("id") if isinstance(obj, dict) else None
    path = at(f"{tenant_path}.issuers", raw_id if isinstance(raw_id, str) and raw_id else index)
    if not isinstance(obj, dict):
        errors.add(path, f"expected a mapping, got {type_name(obj)}")
        return None
    keys_check(obj, list(ISSUER_KEYS), [k for k, s in ISSUER_KEYS.items() if s.required], path, errors)
    values, bad = _read_fields(obj, ISSUER_KEYS, Issuer, path, errors)
    issuer = Issuer(**values)
    yaml_key = {spec.model_field: key for key, spec in ISSUER_KEYS.items()}
    _report(issuer.problems(), bad, lambda field, within: dot(path, yaml_key[field]) + within, errors.add)
    _model_errors(issuer, ISSUER_KEYS, path, errors, exclude=bad)
    if not isinstance(raw_id, str) or not raw_id:
        return None
    return DesiredIssuer(path=path, issuer_id=raw_id, fields=values)


def _rule_field_path(path: str, field: str, within: str) -> str:
    """Where a rule problem (model field, where within it: ``.repo``, ``[0]``) is in the file."""
    if field in ("mapper_url", "mapper_timeout_ms"):
        return dot(dot(path, "mapper"), "url" if field == "mapper_url" else "timeout_ms")
    if within.startswith(".") and field in ("session_tags", "claims"):
        return dot(dot(path, field), within[1:])
    return dot(path, field) + within


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


def desired_rule_spec(fields: Mapping[str, Any], issuer_ids: frozenset[str]) -> RuleSpec:
    """The rule of a file (its model fields, defaults filled in) as the engine reads it."""
    return rule_spec_of(fields, issuers=issuer_ids)


def _validate_rule(
    obj: Any,
    index: int,
    tenant_path: str,
    issuers: Mapping[str, tuple[str, bool]],
    errors: Collector,
    *,
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
    rule = Rule(**values)
    rule.jwtex_issuers = tuple(issuers[i] for i in sorted(referenced) if i in issuers)
    problems, warnings = rule.findings()  # the admin's check (Rule.clean raises it)
    _report(problems, bad, lambda field, within: _rule_field_path(path, field, within), errors.add)
    _report(warnings, bad, lambda field, within: _rule_field_path(path, field, within), errors.warn)
    _model_errors(rule, RULE_KEYS, path, errors, exclude=bad)
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

    def strip(found):
        return [(path.removeprefix("."), message) for path, message in found]

    return desired, strip(errors.errors), strip(errors.warnings)


def _validate_list(obj: Mapping, key: str, path: str, errors: Collector) -> list:
    value = obj.get(key, [])
    if value is None:
        return []
    if not isinstance(value, list):
        errors.add(dot(path, key), f"expected a list, got {type_name(value)}")
        return []
    return value


def _duplicates(
    items: Sequence[Any], ident: Callable[[Any], str], path_of: Callable[[Any], str], what: str, errors: Collector
) -> None:
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
    _model_errors(Tenant(**values), TENANT_KEYS, path, errors, exclude=bad, clean=True)

    issuers = [
        _validate_issuer(item, i, path, errors) for i, item in enumerate(_validate_list(obj, "issuers", path, errors))
    ]
    _duplicates(issuers, lambda d: d.issuer_id, lambda d: d.path, "issuer id", errors)
    known = {
        d.issuer_id: (str(d.fields.get("issuer", "")), d.fields.get("static_jwks") is not None)
        for d in issuers
        if d is not None
    }
    warned = len(errors.warnings)
    rules = [
        _validate_rule(item, i, path, known, errors)
        for i, item in enumerate(_validate_list(obj, "rules", path, errors))
    ]
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
