"""The database back in the configuration format: export → apply → export is identical
(docs/configuration-file.md#commands)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from django.db import models

from tenants.models import Tenant

from ..models import Issuer, Rule
from .schema import ISSUER_KEYS, RULE_KEYS, TENANT_KEYS, ConfigError, Key, at, field_default

__all__ = ["config_export"]


# --------------------------------------------------------------------------- export


def _export_fields(row: models.Model, table: Mapping[str, Key], model: type[models.Model]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, spec in table.items():
        if spec.kind == "issuer_ids":
            continue
        if spec.kind == "mapper":
            if row.mapper_url:
                out[key] = {"url": row.mapper_url}
                if row.mapper_timeout_ms != field_default(model, "mapper_timeout_ms"):
                    out[key]["timeout_ms"] = row.mapper_timeout_ms
            continue
        value = getattr(row, spec.model_field)
        if spec.exported_always or value != field_default(model, spec.model_field):
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
    rules = Rule.objects.filter(tenant=tenant).order_by("position", "id").prefetch_related("issuers")
    out["rules"] = [_export_rule(rule) for rule in rules if not rule.shadow]
    shadow = [_export_rule(rule) for rule in rules if rule.shadow]
    if shadow:  # the candidate set (docs/operations.md#shadow-rules); absent when there is none
        out["shadow_rules"] = shadow
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
            raise ConfigError([(at("tenants", slug), "no such tenant") for slug in missing])
    return {"tenants": [_export_tenant(tenant) for tenant in tenants]}
