"""The configuration document's shape (docs/configuration-file.md#tenant-keys): its keys, the model
field behind each, and the path helpers every error message uses (``tenants[acme].rules["main"].when``)."""

from __future__ import annotations

import copy
import difflib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import models

from ..core.jwks import static_jwks_clean
from ..core.rules.spec import MAPPER_DEFAULT_TIMEOUT_MS, session_tag_entry_problem
from ..core.validators import static_jwks_problem

ErrorList = list[tuple[str, str]]


class ConfigError(Exception):
    """The document cannot be applied; nothing was changed. ``errors`` is ``[(path, message)]``."""

    def __init__(self, errors: ErrorList) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(f"{path}: {message}" for path, message in self.errors))


# --------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class Key:
    """One document key: the model field behind it and the shape its value must have."""

    model_field: str
    kind: str  # str | int | bool | str_list | str_map | optional_int | jwks | issuer_ids
    required: bool = False
    exported_always: bool = False


TENANT_KEYS: dict[str, Key] = {
    "slug": Key("slug", "str", required=True, exported_always=True),
    "name": Key("name", "str", required=True, exported_always=True),
    "enabled": Key("enabled", "bool"),
    "default_audience": Key("default_audience", "str"),
    "max_token_lifetime": Key("max_token_lifetime", "int"),
    "signing_algorithm": Key("signing_algorithm", "str"),
    "rate_limit_per_minute": Key("rate_limit_per_minute", "int"),
    "key_rotation_interval": Key("key_rotation_interval", "int"),
    "key_prepublish_window": Key("key_prepublish_window", "int"),
    "audit_retention_days": Key("audit_retention_days", "int"),
    # Keep each exchange's verified upstream claims in its audit record, for replay (docs/operations.md#replay).
    "keep_upstream_claims": Key("keep_upstream_claims", "bool"),
    # Only for the overview's AWS snippets (tenants/models.py validates them).
    "aws_account_ids": Key("aws_account_ids", "str_list"),
    "aws_region": Key("aws_region", "str"),
    "aws_role_name": Key("aws_role_name", "str"),
    # Where new signing keys are made: local or aws-kms, and KMS's region and (optional) account.
    # Never a key, its ARN or its material: those are state, not configuration
    # (docs/configuration-file.md#what-is-never-in-a-file).
    "key_backend": Key("key_backend", "str"),
    "kms_region": Key("kms_region", "str"),
    "kms_account_id": Key("kms_account_id", "str"),
    # Static hosting of the tenant's issuer documents (docs/endpoints.md#published-issuer-url).
    "published_issuer_url": Key("published_issuer_url", "str"),
}
TENANT_LISTS = ("issuers", "rules", "shadow_rules")  # shadow_rules: the candidate set (docs/operations.md#shadow-rules)

ISSUER_KEYS: dict[str, Key] = {
    "id": Key("issuer_id", "str", required=True, exported_always=True),
    "issuer": Key("issuer", "str", required=True, exported_always=True),
    "audiences": Key("audiences", "str_list", required=True, exported_always=True),
    "algorithms": Key("algorithms", "str_list"),
    "leeway": Key("leeway", "int"),
    "max_token_age": Key("max_token_age", "int"),
    "jwks_uri": Key("jwks_uri", "str"),
    "jwks": Key("static_jwks", "jwks"),
    "enabled": Key("enabled", "bool"),
    "jwks_refresh_interval": Key("jwks_refresh_interval", "int"),
    "replay_protection": Key("replay_protection", "bool"),
}

# ``when`` and ``effect`` are always written out even at their defaults: a rule read without
# its effect is a trap ("true" + "deny" is the model default, and a catch-all deny).
RULE_KEYS: dict[str, Key] = {
    "name": Key("name", "str", required=True, exported_always=True),
    "issuers": Key("issuers", "issuer_ids", required=True, exported_always=True),
    "when": Key("when", "str", exported_always=True),
    "effect": Key("effect", "str", exported_always=True),
    "subject": Key("subject", "str"),
    "audience": Key("audience", "str"),
    "audiences": Key("audiences", "str_list"),
    "lifetime": Key("lifetime", "optional_int"),
    "session_tags": Key("session_tags", "tag_map"),
    "transitive_tag_keys": Key("transitive_tag_keys", "str_list"),
    "claims": Key("claims", "str_map"),
    "source_identity": Key("source_identity", "str"),  # docs/rules.md#source-identity
    "enabled": Key("enabled", "bool"),
    "any_owner": Key("any_owner", "bool"),
    # docs/mapper.md#when-a-mapper-is-called: effect mapper's webhook, {url, timeout_ms} → mapper_url, mapper_timeout_ms
    "mapper": Key("mapper_url", "mapper"),
}

_SIMPLE_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_SIMPLE_INDEX = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*")


def field_default(model: type[models.Model], name: str) -> Any:
    return model._meta.get_field(name).get_default()


def at(path: str, ident: Any, *, quote: bool = False) -> str:
    """``path[ident]``: bare when the identifier is plain (and not a number), JSON-quoted otherwise."""
    if isinstance(ident, int):
        return f"{path}[{ident}]"
    text = str(ident)
    if not quote and _SIMPLE_INDEX.fullmatch(text) and not text.isdigit():
        return f"{path}[{text}]"
    return f"{path}[{json.dumps(text, ensure_ascii=False)}]"


def dot(path: str, key: Any) -> str:
    """``path.key`` for a plain key, ``path["odd key"]`` otherwise."""
    if isinstance(key, str) and _SIMPLE_SEGMENT.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key if isinstance(key, str) else repr(key), ensure_ascii=False)}]"


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


class Collector:
    def __init__(self) -> None:
        self.errors: ErrorList = []
        self.warnings: ErrorList = []  # what does not refuse the document, but is worth saying

    def add(self, path: str, message: str) -> None:
        if (path, message) not in self.errors:
            self.errors.append((path, message))

    def warn(self, path: str, message: str) -> None:
        if (path, message) not in self.warnings:
            self.warnings.append((path, message))


def keys_check(obj: Mapping, allowed: Sequence[str], required: Sequence[str], path: str, errors: Collector) -> None:
    for key in obj:
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), list(allowed), n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else f" (allowed: {', '.join(allowed)})"
            errors.add(path, f"unknown key {key!r}{suggestion}")
    for key in required:
        if key not in obj:
            errors.add(path, f"missing required key {key!r}")


def _check_tag_map(value: Any, path: str, errors: Collector) -> bool:
    """Session tags: tag key → CEL, or → ``{value: CEL, optional: true}``."""
    if not isinstance(value, dict):
        errors.add(path, f"expected a mapping of tag keys to CEL expressions, got {type_name(value)}")
        return False
    ok = True
    for key, item in value.items():
        problem = (
            f"a key must be a string, got {type_name(key)} (quote it in YAML)"
            if not isinstance(key, str)
            else session_tag_entry_problem(item)
        )
        if problem:
            errors.add(dot(path, key), problem)
            ok = False
    return ok


def _check_mapper(value: Any, path: str, errors: Collector) -> bool:
    """``{url: "https://…", timeout_ms: 1500}`` (timeout_ms optional)."""
    if not isinstance(value, dict):
        errors.add(path, f"expected a mapping {{url, timeout_ms}}, got {type_name(value)}")
        return False
    ok = True
    for key in value:
        if key not in ("url", "timeout_ms"):
            errors.add(path, f"unknown key {key!r} (allowed: url, timeout_ms)")
            ok = False
    if not isinstance(value.get("url"), str):
        errors.add(dot(path, "url"), f"expected a string, got {type_name(value.get('url'))}")
        ok = False
    timeout = value.get("timeout_ms", MAPPER_DEFAULT_TIMEOUT_MS)
    if not isinstance(timeout, int) or isinstance(timeout, bool):
        errors.add(dot(path, "timeout_ms"), f"expected a whole number, got {type_name(timeout)}")
        ok = False
    return ok


def _check_str_list(value: Any, path: str, errors: Collector) -> bool:
    if not isinstance(value, list):
        errors.add(path, f"expected a list of strings, got {type_name(value)}")
        return False
    ok = True
    for index, item in enumerate(value):
        if not isinstance(item, str):
            errors.add(f"{path}[{index}]", f"expected a string, got {type_name(item)}")
            ok = False
    return ok


def _check_str_map(value: Any, path: str, errors: Collector) -> bool:
    if not isinstance(value, dict):
        errors.add(path, f"expected a mapping of names to CEL expressions, got {type_name(value)}")
        return False
    ok = True
    for key, item in value.items():
        if not isinstance(key, str):
            errors.add(dot(path, key), f"a key must be a string, got {type_name(key)} (quote it in YAML)")
            ok = False
        elif not isinstance(item, str):
            errors.add(dot(path, key), f"expected a CEL expression (a string), got {type_name(item)}")
            ok = False
    return ok


def _check_jwks(value: Any, path: str, errors: Collector) -> bool:
    problem = static_jwks_problem(value)  # the admin's rule and message (Issuer.clean)
    if problem:
        errors.add(path, problem)
    return problem is None


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# kind -> (test, what the message says was expected): the scalar kinds.
_SCALARS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "int": (_whole, "a whole number"),
    "optional_int": (lambda v: v is None or _whole(v), "a whole number or null"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
}

# kind -> checker reporting its own, more precise messages: the structured kinds.
_STRUCTURED: dict[str, Callable[[Any, str, Collector], bool]] = {
    "str_list": _check_str_list,
    "issuer_ids": _check_str_list,
    "str_map": _check_str_map,
    "tag_map": _check_tag_map,
    "mapper": _check_mapper,
    "jwks": _check_jwks,
}


# kind -> what is stored of a value that passed its check (a deep copy for every other kind).
_STORED: dict[str, Callable[[Any], Any]] = {"jwks": lambda v: None if v is None else static_jwks_clean(v)}


def stored_value(kind: str, value: Any) -> Any:
    """What is written for a checked ``value``: a static JWKS keeps only the members RFC 7517/7518
    define (docs/configuration-file.md#issuer-keys); anything else is copied as it is."""
    return _STORED[kind](value) if kind in _STORED else copy.deepcopy(value)


def value_check(kind: str, value: Any, path: str, errors: Collector) -> bool:
    """True when ``value`` has the shape ``kind`` asks for; reports the problem otherwise."""
    if kind in _STRUCTURED:
        return _STRUCTURED[kind](value, path, errors)
    test, expected = _SCALARS[kind]
    if test(value):
        return True
    errors.add(path, f"expected {expected}, got {type_name(value)}")
    return False
