"""Configuration as code (docs/configuration-file.md#configuration-file): tenants, issuers and rules from one document.

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
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction

from tenants.models import Tenant

from ..core.publication import published_folder
from ..models import Issuer, Rule
from ..publish.documents import published_url_problem_for
from ..services.tenants import tenant_create
from ..upstream.issuer_keys import issuer_keys_forget_if_source_changed
from .schema import ConfigError
from .validate import DesiredTenant, config_validate

__all__ = ["ApplyReport", "config_apply"]


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
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (path, message), from validation

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def note(self, kind: str, action: str, label: str, detail: str = "") -> None:
        self.counts[kind][action] += 1
        if action != "unchanged":
            verb = f"would {action[:-1]}" if self.dry_run else action  # created → would create
            self.changes.append(f"{verb} {kind} {label}" + (f" ({detail})" if detail else ""))

    def summary(self) -> str:
        lines = [f"warning: {path}: {message}" for path, message in self.warnings] + list(self.changes)
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
    tenant: Tenant | None, desired: DesiredTenant, existing: dict[str, Issuer], report: ApplyReport, *, write: bool
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
    desired: DesiredTenant,
    existing: dict[str, Rule],
    issuer_rows: dict[str, Issuer],
    report: ApplyReport,
    *,
    write: bool,
    shadow: bool = False,
) -> None:
    for item in desired.shadow_rules if shadow else desired.rules:
        label = f"{desired.slug}/{'shadow ' if shadow else ''}{json.dumps(item.name, ensure_ascii=False)}"
        wanted = {**item.fields, "position": item.position, "shadow": shadow}
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


def _sync_tenant(desired: DesiredTenant, report: ApplyReport, *, write: bool) -> None:
    queryset = Tenant.objects.select_for_update() if write else Tenant.objects.all()
    tenant = queryset.filter(slug=desired.slug).first()
    existing_issuers: dict[str, Issuer] = {}
    existing_rules: dict[str, Rule] = {}
    existing_shadow: dict[str, Rule] = {}
    if tenant is None:
        report.note("tenant", "created", desired.slug)
        if write:
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
        for rule in Rule.objects.filter(tenant=tenant).prefetch_related("issuers"):
            (existing_shadow if rule.shadow else existing_rules)[rule.name] = rule

    # Rules the file no longer lists go first, so nothing below can collide with them.
    for shadow, existing, items in (
        (False, existing_rules, desired.rules),
        (True, existing_shadow, desired.shadow_rules),
    ):
        listed = {item.name for item in items}
        gone = [rule for name, rule in existing.items() if name not in listed]
        for rule in sorted(gone, key=lambda r: (r.position, r.pk)):
            label = f"{desired.slug}/{'shadow ' if shadow else ''}{json.dumps(rule.name, ensure_ascii=False)}"
            report.note("rule", "deleted", label)
            if write:
                rule.delete()
    issuer_rows = _sync_issuers(tenant, desired, existing_issuers, report, write=write)
    _sync_rules(tenant, desired, existing_rules, issuer_rows, report, write=write)
    _sync_rules(tenant, desired, existing_shadow, issuer_rows, report, write=write, shadow=True)


def _published_urls_check(desired: list[DesiredTenant]) -> None:
    """Each published issuer URL is valid and the file's tenants and the others publish to distinct
    folders (docs/endpoints.md#published-issuer-url): the admin's check, over the whole file."""
    errors: list[tuple[str, str]] = []
    slugs = {tenant.slug for tenant in desired}
    folders: dict[str, str] = {}
    for tenant in desired:
        value = str(tenant.fields.get("published_issuer_url") or "")
        problem = published_url_problem_for(value=value, exclude_slugs=slugs) if value else None
        if value and not problem and folders.setdefault(published_folder(value), tenant.slug) != tenant.slug:
            problem = f"Tenant {folders[published_folder(value)]} of this file publishes to the same folder."
        if problem:
            errors.append((f"{tenant.path}.published_issuer_url", problem))
    if errors:
        raise ConfigError(errors)


def config_apply(*, document: Mapping, now: datetime, dry_run: bool = False) -> ApplyReport:
    """Make the tenants ``document`` names match it, in one transaction; see the module doc.

    Raises ``ConfigError`` (and changes nothing) when the document has any problem. With
    ``dry_run`` nothing is written and the report says what would change.
    """
    desired = config_validate(document)
    _published_urls_check(desired)
    report = ApplyReport(
        applied_at=now, dry_run=dry_run, warnings=[warning for tenant in desired for warning in tenant.warnings]
    )
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
                raise ConfigError(
                    [(tenant.path, f"the database refused the change ({exc}); nothing was applied")]
                ) from exc
            except ValidationError as exc:
                messages = "; ".join(exc.messages)
                raise ConfigError([(tenant.path, f"{messages}; nothing was applied")]) from exc
    return report
