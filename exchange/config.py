"""Configuration as code (SPEC §6): tenants, issuers and rules from one document.

``config_apply`` makes the database match a document; ``config_export`` writes the
database back in the same format, so export → apply → export is identical.

How a document is applied:

* Everything is validated first, and *every* problem is reported, each with a path such as
  ``tenants[acme].rules["octo-org main"].session_tags.repository`` and a message (CEL
  problems carry the line and column inside the expression). Unknown keys are errors: a
  typo must not be silently ignored.
* Then, in one transaction, tenants are created or updated (by slug), issuers (by tenant and
  id) and rules (by tenant and name; ``position`` follows the order in the file). For every
  tenant the document names, the document is the whole truth: issuers and rules it does not
  list are deleted, keys it omits take their defaults. Tenants it does not name are not
  touched, and tenants are never deleted.
* A row is saved only when one of its fields differs, so applying the same document twice
  writes nothing the second time (every save bumps the tenant's ``config_version`` and
  makes every process rebuild its runtime).
* Signing keys are never read from or written to a document. A new tenant gets its first
  key from ``tenant_create``; apply never rotates keys. Nothing here touches the network.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

import yaml
from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction

from tenants.models import Tenant

from . import conf
from .models import Issuer, Rule
from .rules import RuleSpec, validate_rule_spec
from .upstream import issuer_keys_forget_if_source_changed
from .validators import url_problem
from .verification import KeySet

__all__ = [
    "ApplyReport",
    "ConfigError",
    "config_apply",
    "config_dump",
    "config_export",
    "config_load",
    "config_validate",
]

ErrorList = list[tuple[str, str]]


class ConfigError(Exception):
    """The document cannot be applied; nothing was changed. ``errors`` is ``[(path, message)]``."""

    def __init__(self, errors: ErrorList) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(f"{path}: {message}" for path, message in self.errors))


# --------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class _Key:
    """One document key: the model field behind it and the shape its value must have."""

    model_field: str
    kind: str  # str | int | bool | str_list | str_map | optional_int | jwks | issuer_ids
    required: bool = False
    exported_always: bool = False


TENANT_KEYS: dict[str, _Key] = {
    "slug": _Key("slug", "str", required=True, exported_always=True),
    "name": _Key("name", "str", required=True, exported_always=True),
    "enabled": _Key("enabled", "bool"),
    "default_audience": _Key("default_audience", "str"),
    "max_token_lifetime": _Key("max_token_lifetime", "int"),
    "signing_algorithm": _Key("signing_algorithm", "str"),
    "rate_limit_per_minute": _Key("rate_limit_per_minute", "int"),
    "key_rotation_interval": _Key("key_rotation_interval", "int"),
    "key_prepublish_window": _Key("key_prepublish_window", "int"),
    "audit_retention_days": _Key("audit_retention_days", "int"),
}
TENANT_LISTS = ("issuers", "rules")

ISSUER_KEYS: dict[str, _Key] = {
    "id": _Key("issuer_id", "str", required=True, exported_always=True),
    "issuer": _Key("issuer", "str", required=True, exported_always=True),
    "audiences": _Key("audiences", "str_list", required=True, exported_always=True),
    "algorithms": _Key("algorithms", "str_list"),
    "leeway": _Key("leeway", "int"),
    "max_token_age": _Key("max_token_age", "int"),
    "jwks_uri": _Key("jwks_uri", "str"),
    "jwks": _Key("static_jwks", "jwks"),
    "enabled": _Key("enabled", "bool"),
    "jwks_refresh_interval": _Key("jwks_refresh_interval", "int"),
    "replay_protection": _Key("replay_protection", "bool"),
}

# ``when`` and ``effect`` are always written out even at their defaults: a rule read without
# its effect is a trap ("true" + "deny" is the model default, and a catch-all deny).
RULE_KEYS: dict[str, _Key] = {
    "name": _Key("name", "str", required=True, exported_always=True),
    "issuers": _Key("issuers", "issuer_ids", required=True, exported_always=True),
    "when": _Key("when", "str", exported_always=True),
    "effect": _Key("effect", "str", exported_always=True),
    "subject": _Key("subject", "str"),
    "audience": _Key("audience", "str"),
    "audiences": _Key("audiences", "str_list"),
    "lifetime": _Key("lifetime", "optional_int"),
    "session_tags": _Key("session_tags", "str_map"),
    "transitive_tag_keys": _Key("transitive_tag_keys", "str_list"),
    "claims": _Key("claims", "str_map"),
    "enabled": _Key("enabled", "bool"),
}

_SIMPLE_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_SIMPLE_INDEX = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*")


def _field_default(model: type[models.Model], name: str) -> Any:
    return model._meta.get_field(name).get_default()


def _at(path: str, ident: Any, *, quote: bool = False) -> str:
    """``path[ident]``: bare when the identifier is plain (and not a number), JSON-quoted otherwise."""
    if isinstance(ident, int):
        return f"{path}[{ident}]"
    text = str(ident)
    if not quote and _SIMPLE_INDEX.fullmatch(text) and not text.isdigit():
        return f"{path}[{text}]"
    return f"{path}[{json.dumps(text, ensure_ascii=False)}]"


def _dot(path: str, key: Any) -> str:
    """``path.key`` for a plain key, ``path["odd key"]`` otherwise."""
    if isinstance(key, str) and _SIMPLE_SEGMENT.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key if isinstance(key, str) else repr(key), ensure_ascii=False)}]"


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a mapping"}.get(
        type(value), type(value).__name__
    )


# --------------------------------------------------------------------------- desired state


@dataclass
class _DesiredIssuer:
    path: str
    issuer_id: str
    fields: dict[str, Any]  # model field → value, defaults filled in


@dataclass
class _DesiredRule:
    path: str
    name: str
    position: int
    issuer_ids: frozenset[str]
    fields: dict[str, Any]


@dataclass
class _DesiredTenant:
    path: str
    slug: str
    fields: dict[str, Any]
    issuers: list[_DesiredIssuer]
    rules: list[_DesiredRule]


class _Collector:
    def __init__(self) -> None:
        self.errors: ErrorList = []

    def add(self, path: str, message: str) -> None:
        if (path, message) not in self.errors:
            self.errors.append((path, message))


def _check_keys(obj: Mapping, allowed: Sequence[str], required: Sequence[str], path: str, errors: _Collector) -> None:
    for key in obj:
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), list(allowed), n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else f" (allowed: {', '.join(allowed)})"
            errors.add(path, f"unknown key {key!r}{suggestion}")
    for key in required:
        if key not in obj:
            errors.add(path, f"missing required key {key!r}")


def _check_value(kind: str, value: Any, path: str, errors: _Collector) -> bool:
    """True when ``value`` has the shape ``kind`` asks for; reports the problem otherwise."""
    if kind == "str":
        ok = isinstance(value, str)
        expected = "a string"
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
        expected = "a whole number"
    elif kind == "optional_int":
        ok = value is None or (isinstance(value, int) and not isinstance(value, bool))
        expected = "a whole number or null"
    elif kind == "bool":
        ok = isinstance(value, bool)
        expected = "true or false"
    elif kind in ("str_list", "issuer_ids"):
        if not isinstance(value, list):
            errors.add(path, f"expected a list of strings, got {_type_name(value)}")
            return False
        ok = True
        for index, item in enumerate(value):
            if not isinstance(item, str):
                errors.add(f"{path}[{index}]", f"expected a string, got {_type_name(item)}")
                ok = False
        return ok
    elif kind == "str_map":
        if not isinstance(value, dict):
            errors.add(path, f"expected a mapping of names to CEL expressions, got {_type_name(value)}")
            return False
        ok = True
        for key, item in value.items():
            if not isinstance(key, str):
                errors.add(_dot(path, key), f"a key must be a string, got {_type_name(key)} (quote it in YAML)")
                ok = False
            elif not isinstance(item, str):
                errors.add(_dot(path, key), f"expected a CEL expression (a string), got {_type_name(item)}")
                ok = False
        return ok
    elif kind == "jwks":
        if value is None:
            return True
        try:
            keys = KeySet.from_jwks(value)
        except ValueError:
            errors.add(path, 'expected a JWKS: a mapping with a "keys" list')
            return False
        if not all(isinstance(k, dict) for k in value["keys"]):
            errors.add(path, 'every entry of "keys" must be a JWK (a mapping)')
            return False
        if not keys.keys:
            errors.add(path, "the JWKS has no usable public key (RSA, EC or OKP)")
            return False
        return True
    else:  # pragma: no cover - the tables above name only the kinds handled here
        raise AssertionError(kind)
    if not ok:
        errors.add(path, f"expected {expected}, got {_type_name(value)}")
    return ok


def _read_fields(
    obj: Mapping, table: Mapping[str, _Key], model: type[models.Model], path: str, errors: _Collector
) -> tuple[dict[str, Any], set[str]]:
    """Model field → value (defaults for omitted keys) and the model fields whose value is bad."""
    values: dict[str, Any] = {}
    bad: set[str] = set()
    for key, spec in table.items():
        if spec.kind == "issuer_ids":
            continue
        if key in obj:
            if _check_value(spec.kind, obj[key], _dot(path, key), errors):
                values[spec.model_field] = copy.deepcopy(obj[key])
                continue
            bad.add(spec.model_field)
        elif spec.required:
            bad.add(spec.model_field)  # reported by _check_keys; no second message
        values[spec.model_field] = _field_default(model, spec.model_field)
    return values, bad


def _model_errors(
    instance: models.Model,
    table: Mapping[str, _Key],
    path: str,
    errors: _Collector,
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
            where = path if model_field == "__all__" else _dot(path, yaml_key.get(model_field, model_field))
            for message in messages:
                if model_field == "__all__" and any(message.endswith(own) for own in own_messages):
                    continue
                errors.add(where, message)


def _check_url(value: str, path: str, errors: _Collector, *, what: str) -> None:
    # The same rule and message as the admin's forms (Issuer.clean).
    problem = url_problem(value, what=what, allow_insecure=conf.allow_insecure_issuers(), is_issuer=what == "The issuer")
    if problem:
        errors.add(path, problem)


def _validate_issuer(obj: Any, index: int, tenant_path: str, errors: _Collector) -> _DesiredIssuer | None:
    raw_id = obj.get("id") if isinstance(obj, dict) else None
    path = _at(f"{tenant_path}.issuers", raw_id if isinstance(raw_id, str) and raw_id else index)
    if not isinstance(obj, dict):
        errors.add(path, f"expected a mapping, got {_type_name(obj)}")
        return None
    _check_keys(obj, list(ISSUER_KEYS), [k for k, s in ISSUER_KEYS.items() if s.required], path, errors)
    values, bad = _read_fields(obj, ISSUER_KEYS, Issuer, path, errors)
    before = len(errors.errors)
    reported: set[str] = set()

    def flag(model_field: str) -> None:
        nonlocal before
        if len(errors.errors) > before:
            reported.add(model_field)
        before = len(errors.errors)

    if "issuer" not in bad and values["issuer"]:
        _check_url(values["issuer"], _dot(path, "issuer"), errors, what="The issuer")
    flag("issuer")
    if "jwks_uri" not in bad and values["jwks_uri"]:
        _check_url(values["jwks_uri"], _dot(path, "jwks_uri"), errors, what="The JWKS URI")
    flag("jwks_uri")
    if "algorithms" not in bad:
        algorithms = values["algorithms"]
        if not algorithms:
            errors.add(_dot(path, "algorithms"), "list at least one algorithm")
        for position, alg in enumerate(algorithms):
            if alg not in conf.SUPPORTED_UPSTREAM_ALGORITHMS:
                errors.add(
                    f"{_dot(path, 'algorithms')}[{position}]",
                    f"unsupported algorithm {alg!r} (supported: {', '.join(conf.SUPPORTED_UPSTREAM_ALGORITHMS)})",
                )
        if len(set(algorithms)) != len(algorithms):
            errors.add(_dot(path, "algorithms"), "an algorithm is listed twice")
    flag("algorithms")
    if "audiences" not in bad:
        for position, audience in enumerate(values["audiences"]):
            if not audience:
                errors.add(f"{_dot(path, 'audiences')}[{position}]", "an audience must not be empty")
    flag("audiences")
    _model_errors(Issuer(**values), ISSUER_KEYS, path, errors, exclude=bad, reported=reported)
    if not isinstance(raw_id, str) or not raw_id:
        return None
    return _DesiredIssuer(path=path, issuer_id=raw_id, fields=values)


def _rule_field_path(path: str, field_path: str) -> str:
    """Map a ``validate_rule_spec`` field (``session_tags.repo``, ``audiences[0]``) onto ``path``."""
    head, sep, rest = field_path.partition(".")
    if sep and head in ("session_tags", "claims"):
        return _dot(_dot(path, head), rest)
    return f"{path}.{field_path}"


def _validate_rule(
    obj: Any, index: int, tenant_path: str, issuer_ids: set[str], errors: _Collector
) -> _DesiredRule | None:
    raw_name = obj.get("name") if isinstance(obj, dict) else None
    path = _at(f"{tenant_path}.rules", raw_name if isinstance(raw_name, str) and raw_name else index, quote=True)
    if not isinstance(obj, dict):
        errors.add(path, f"expected a mapping, got {_type_name(obj)}")
        return None
    _check_keys(obj, list(RULE_KEYS), [k for k, s in RULE_KEYS.items() if s.required], path, errors)
    values, bad = _read_fields(obj, RULE_KEYS, Rule, path, errors)

    referenced: set[str] = set()
    if "issuers" in obj and _check_value("issuer_ids", obj["issuers"], _dot(path, "issuers"), errors):
        if not obj["issuers"]:
            errors.add(_dot(path, "issuers"), "a rule must name at least one issuer")
        for position, issuer_id in enumerate(obj["issuers"]):
            if issuer_id not in issuer_ids:
                known = ", ".join(sorted(issuer_ids)) or "none"
                errors.add(
                    f"{_dot(path, 'issuers')}[{position}]",
                    f"unknown issuer {issuer_id!r}: this tenant's issuers in the file are: {known}",
                )
            referenced.add(issuer_id)

    spec = RuleSpec(
        name=values["name"],
        issuers=frozenset(referenced),
        when=values["when"],
        effect=values["effect"],
        subject=values["subject"],
        audience=values["audience"],
        audiences=tuple(values["audiences"]),
        lifetime=values["lifetime"],
        session_tags=tuple(values["session_tags"].items()),
        transitive_tag_keys=tuple(values["transitive_tag_keys"]),
        claims=tuple(values["claims"].items()),
    )
    spec_bad: set[str] = set()
    for field_path, message in validate_rule_spec(spec):
        top = re.split(r"[.\[]", field_path, maxsplit=1)[0]
        if top in bad:
            continue  # already reported as a type error; the default stood in for it
        spec_bad.add(top)
        errors.add(_rule_field_path(path, field_path), message)
    _model_errors(Rule(**values), RULE_KEYS, path, errors, exclude=bad, reported=spec_bad)
    if not isinstance(raw_name, str) or not raw_name:
        return None
    return _DesiredRule(
        path=path, name=raw_name, position=(index + 1) * 10, issuer_ids=frozenset(referenced), fields=values
    )


def _validate_list(obj: Mapping, key: str, path: str, errors: _Collector) -> list:
    value = obj.get(key, [])
    if value is None:
        return []
    if not isinstance(value, list):
        errors.add(_dot(path, key), f"expected a list, got {_type_name(value)}")
        return []
    return value


def _duplicates(items: Sequence[Any], ident: Callable[[Any], str], path_of: Callable[[Any], str], what: str, errors: _Collector) -> None:
    seen: set[str] = set()
    for item in items:
        if item is None:
            continue
        key = ident(item)
        if key in seen:
            errors.add(path_of(item), f"{what} {key!r} appears more than once")
        seen.add(key)


def _validate_tenant(obj: Any, index: int, errors: _Collector) -> _DesiredTenant | None:
    raw_slug = obj.get("slug") if isinstance(obj, dict) else None
    path = _at("tenants", raw_slug if isinstance(raw_slug, str) and raw_slug else index)
    if not isinstance(obj, dict):
        errors.add(path, f"expected a mapping, got {_type_name(obj)}")
        return None
    _check_keys(obj, [*TENANT_KEYS, *TENANT_LISTS], [k for k, s in TENANT_KEYS.items() if s.required], path, errors)
    values, bad = _read_fields(obj, TENANT_KEYS, Tenant, path, errors)
    _model_errors(Tenant(**values), TENANT_KEYS, path, errors, exclude=bad, reported=set())

    issuers = [_validate_issuer(item, i, path, errors) for i, item in enumerate(_validate_list(obj, "issuers", path, errors))]
    _duplicates(issuers, lambda d: d.issuer_id, lambda d: d.path, "issuer id", errors)
    issuer_ids = {d.issuer_id for d in issuers if d is not None}
    rules = [
        _validate_rule(item, i, path, issuer_ids, errors) for i, item in enumerate(_validate_list(obj, "rules", path, errors))
    ]
    _duplicates(rules, lambda d: d.name, lambda d: d.path, "rule name", errors)
    if not isinstance(raw_slug, str) or not raw_slug:
        return None
    return _DesiredTenant(
        path=path,
        slug=raw_slug,
        fields=values,
        issuers=[d for d in issuers if d is not None],
        rules=[d for d in rules if d is not None],
    )


def config_validate(document: Any) -> list[_DesiredTenant]:
    """Check the whole document without touching the database; raise ``ConfigError`` with
    every problem found."""
    errors = _Collector()
    if not isinstance(document, Mapping):
        raise ConfigError([("(document)", f"expected a mapping with a 'tenants' list, got {_type_name(document)}")])
    _check_keys(document, ["tenants"], ["tenants"], "(document)", errors)
    tenants_raw = document.get("tenants", [])
    if not isinstance(tenants_raw, list):
        errors.add("tenants", f"expected a list, got {_type_name(tenants_raw)}")
        tenants_raw = []
    tenants = [_validate_tenant(item, i, errors) for i, item in enumerate(tenants_raw)]
    _duplicates(tenants, lambda d: d.slug, lambda d: d.path, "tenant slug", errors)
    if errors.errors:
        raise ConfigError(errors.errors)
    return [t for t in tenants if t is not None]


# --------------------------------------------------------------------------- apply

KINDS = ("tenant", "issuer", "rule")
ACTIONS = ("created", "updated", "deleted", "unchanged")


@dataclass
class ApplyReport:
    """What an apply did (or, for a dry run, would do)."""

    applied_at: datetime
    dry_run: bool = False
    counts: dict[str, dict[str, int]] = field(
        default_factory=lambda: {kind: dict.fromkeys(ACTIONS, 0) for kind in KINDS}
    )
    changes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def note(self, kind: str, action: str, label: str, detail: str = "") -> None:
        self.counts[kind][action] += 1
        if action != "unchanged":
            verb = f"would {action[:-1]}" if self.dry_run else action  # created → would create
            self.changes.append(f"{verb} {kind} {label}" + (f" ({detail})" if detail else ""))

    def summary(self) -> str:
        lines = list(self.changes)
        for kind in KINDS:
            counts = self.counts[kind]
            lines.append(f"{kind}s: " + ", ".join(f"{counts[action]} {action}" for action in ACTIONS))
        if self.dry_run:
            lines.append("dry run: nothing was written")
        elif not self.changed:
            lines.append("no changes")
        return "\n".join(lines)


def _differences(row: models.Model, wanted: Mapping[str, Any]) -> list[str]:
    return [name for name, value in wanted.items() if getattr(row, name) != value]


def _update(row: models.Model, wanted: Mapping[str, Any], changed: list[str], *, extra: Sequence[str] = ()) -> None:
    for name in changed:
        setattr(row, name, copy.deepcopy(wanted[name]))
    row.save(update_fields=[*changed, *extra, "updated_at"])


def _sync_issuers(
    tenant: Tenant | None, desired: _DesiredTenant, existing: dict[str, Issuer], report: ApplyReport, *, write: bool
) -> dict[str, Issuer]:
    rows: dict[str, Issuer] = {}
    for item in desired.issuers:
        label = f"{desired.slug}/{item.issuer_id}"
        row = existing.get(item.issuer_id)
        if row is None:
            report.note("issuer", "created", label)
            if write:
                row = Issuer.objects.create(tenant=tenant, **copy.deepcopy(item.fields))
        else:
            changed = _differences(row, item.fields)
            if changed:
                report.note("issuer", "updated", label, ", ".join(changed))
                extra = issuer_keys_forget_if_source_changed(issuer=row, changed=changed)
                if write:
                    _update(row, item.fields, changed, extra=extra)
            else:
                report.note("issuer", "unchanged", label)
        if row is not None:
            rows[item.issuer_id] = row
    listed = {item.issuer_id for item in desired.issuers}
    for issuer_id in sorted(set(existing) - listed):
        report.note("issuer", "deleted", f"{desired.slug}/{issuer_id}")
        if write:
            existing[issuer_id].delete()
    return rows


def _sync_rules(
    tenant: Tenant | None,
    desired: _DesiredTenant,
    existing: dict[str, Rule],
    issuer_rows: dict[str, Issuer],
    report: ApplyReport,
    *,
    write: bool,
) -> None:
    for item in desired.rules:
        label = f"{desired.slug}/{json.dumps(item.name, ensure_ascii=False)}"
        wanted = {**item.fields, "position": item.position}
        row = existing.get(item.name)
        if row is None:
            report.note("rule", "created", label)
            if write:
                row = Rule.objects.create(tenant=tenant, **copy.deepcopy(wanted))
                row.issuers.set([issuer_rows[i] for i in sorted(item.issuer_ids)])
            continue
        changed = _differences(row, wanted)
        current_issuers = {issuer.issuer_id for issuer in row.issuers.all()}
        issuers_changed = current_issuers != item.issuer_ids
        if not changed and not issuers_changed:
            report.note("rule", "unchanged", label)
            continue
        report.note("rule", "updated", label, ", ".join([*changed, *(["issuers"] if issuers_changed else [])]))
        if write:
            if changed:
                _update(row, wanted, changed)
            if issuers_changed:
                row.issuers.set([issuer_rows[i] for i in sorted(item.issuer_ids)])


def _sync_tenant(desired: _DesiredTenant, report: ApplyReport, *, write: bool) -> None:
    queryset = Tenant.objects.select_for_update() if write else Tenant.objects.all()
    tenant = queryset.filter(slug=desired.slug).first()
    existing_issuers: dict[str, Issuer] = {}
    existing_rules: dict[str, Rule] = {}
    if tenant is None:
        report.note("tenant", "created", desired.slug)
        if write:
            from .services import tenant_create  # services imports the whole pipeline; keep it lazy

            fields = {k: v for k, v in desired.fields.items() if k not in ("slug", "name")}
            tenant = tenant_create(slug=desired.slug, name=desired.fields["name"], **fields)
    else:
        changed = _differences(tenant, desired.fields)
        if changed:
            report.note("tenant", "updated", desired.slug, ", ".join(changed))
            if write:
                _update(tenant, desired.fields, changed)
        else:
            report.note("tenant", "unchanged", desired.slug)
        existing_issuers = {i.issuer_id: i for i in Issuer.objects.filter(tenant=tenant)}
        existing_rules = {r.name: r for r in Rule.objects.filter(tenant=tenant).prefetch_related("issuers")}

    # Rules the file no longer lists go first, so nothing below can collide with them.
    listed = {item.name for item in desired.rules}
    gone = [rule for name, rule in existing_rules.items() if name not in listed]
    for rule in sorted(gone, key=lambda r: (r.position, r.pk)):
        report.note("rule", "deleted", f"{desired.slug}/{json.dumps(rule.name, ensure_ascii=False)}")
        if write:
            rule.delete()
    issuer_rows = _sync_issuers(tenant, desired, existing_issuers, report, write=write)
    _sync_rules(tenant, desired, existing_rules, issuer_rows, report, write=write)


def config_apply(*, document: Mapping, now: datetime, dry_run: bool = False) -> ApplyReport:
    """Make the tenants ``document`` names match it, in one transaction; see the module doc.

    Raises ``ConfigError`` (and changes nothing) when the document has any problem. With
    ``dry_run`` nothing is written and the report says what would change.
    """
    desired = config_validate(document)
    report = ApplyReport(applied_at=now, dry_run=dry_run)
    if dry_run:
        for tenant in desired:
            _sync_tenant(tenant, report, write=False)
        return report
    with transaction.atomic():
        for tenant in desired:
            try:
                with transaction.atomic():
                    _sync_tenant(tenant, report, write=True)
            except IntegrityError as exc:
                # A concurrent writer got there first; the outer transaction rolls back too.
                raise ConfigError([(tenant.path, f"the database refused the change ({exc}); nothing was applied")]) from exc
            except ValidationError as exc:
                messages = "; ".join(exc.messages)
                raise ConfigError([(tenant.path, f"{messages}; nothing was applied")]) from exc
    return report


# --------------------------------------------------------------------------- export


def _export_fields(row: models.Model, table: Mapping[str, _Key], model: type[models.Model]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, spec in table.items():
        if spec.kind == "issuer_ids":
            continue
        value = getattr(row, spec.model_field)
        if spec.exported_always or value != _field_default(model, spec.model_field):
            out[key] = copy.deepcopy(value)
    return out


def _export_rule(rule: Rule) -> dict[str, Any]:
    fields = _export_fields(rule, RULE_KEYS, Rule)
    out = {"name": fields.pop("name"), "issuers": sorted(i.issuer_id for i in rule.issuers.all())}
    out.update(fields)
    return out


def _export_tenant(tenant: Tenant) -> dict[str, Any]:
    out = _export_fields(tenant, TENANT_KEYS, Tenant)
    out["issuers"] = [
        _export_fields(issuer, ISSUER_KEYS, Issuer)
        for issuer in Issuer.objects.filter(tenant=tenant).order_by("issuer_id")
    ]
    out["rules"] = [
        _export_rule(rule)
        for rule in Rule.objects.filter(tenant=tenant).order_by("position", "id").prefetch_related("issuers")
    ]
    return out


def config_export(*, tenant_slugs: Sequence[str] | None = None) -> dict[str, Any]:
    """The document ``config_apply`` would turn into the current state (all tenants, or
    those named). Keys at their default value are left out; never signing keys, cached
    upstream keys or health fields."""
    tenants = Tenant.objects.order_by("slug")
    if tenant_slugs is not None:
        wanted = list(dict.fromkeys(tenant_slugs))
        tenants = list(tenants.filter(slug__in=wanted))
        found = {tenant.slug for tenant in tenants}
        missing = [slug for slug in wanted if slug not in found]
        if missing:
            raise ConfigError([(_at("tenants", slug), "no such tenant") for slug in missing])
    return {"tenants": [_export_tenant(tenant) for tenant in tenants]}


# --------------------------------------------------------------------------- files


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key repeated in one mapping (the last one would
    silently win). Keys brought in by a ``<<`` merge may still be overridden."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Mark] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    continue  # the base class reports unhashable keys
                if key in seen:
                    first = seen[key]
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {key!r} (first at line {first.line + 1}, column {first.column + 1})",
                        key_node.start_mark,
                    )
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_constructor("tag:yaml.org,2002:map", _StrictLoader.construct_yaml_map)


class _DuplicateJsonKey(ValueError):
    pass


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateJsonKey(key)
        result[key] = value
    return result


def _load_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ConfigError([(source, f"{where}{exc.problem or exc.context}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([(source, f"not valid YAML: {exc}")]) from None


def _load_json(text: str, source: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_json_object)
    except _DuplicateJsonKey as exc:
        raise ConfigError([(source, f"duplicate key {exc.args[0]!r} in a JSON object")]) from None
    except json.JSONDecodeError as exc:
        raise ConfigError([(source, f"line {exc.lineno}, column {exc.colno}: {exc.msg}")]) from None


def config_load(text: str, *, source: str = "<stdin>", fmt: str | None = None) -> Any:
    """Parse a document. ``fmt`` is ``"json"``, ``"yaml"`` or ``None`` (guess: JSON when it
    starts with ``{``, else YAML — YAML also reads most JSON). Raises ``ConfigError``."""
    if fmt == "json" or (fmt is None and text.lstrip().startswith("{")):
        try:
            return _load_json(text, source)
        except ConfigError:
            if fmt == "json":
                raise
            # A YAML flow mapping also starts with "{": let YAML have a go (and explain).
    return _load_yaml(text, source)


class _Dumper(yaml.SafeDumper):
    pass


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Multi-line CEL reads best as a literal block; PyYAML falls back to quoting if it can't.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def config_dump(document: Mapping[str, Any], *, fmt: str = "yaml") -> str:
    if fmt == "json":
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    # A wide line so CEL expressions are never folded over several lines.
    return yaml.dump(
        document,
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=1 << 16,
    )
