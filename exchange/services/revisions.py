"""Revisions (docs/operations.md#revisions): every effective change of a tenant's configuration is kept as the whole
document ``jwtex_export --tenant T`` printed after it, numbered per tenant from 1, with who made
it, from where and a one-line summary. Kept for as long as the tenant exists (no bound: a
document is a few kilobytes and a tenant changes by hand).

Who and from where come from a context variable that the edges set: the admin's middleware
(jwtex_site/middleware.py: the user, "admin"), ``jwtex_apply`` (``jwtex_apply (file.yaml)``,
"apply"), a restore ("restore"), a promotion of shadow rules ("promote") —
``with revision_actor(author=…, source=…):`` around the change. Anything else is "system".

The document itself is made one floor up (exchange/config/revision_documents.py exports the tenant and
calls ``revision_record``): services cannot import the configuration format.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction

from tenants.models import Tenant

from ..core import strict_yaml
from ..models import Revision, RevisionSource

__all__ = [
    "Actor",
    "DiffLine",
    "revision_actor",
    "revision_actor_current",
    "revision_diff",
    "revision_get",
    "revision_list",
    "revision_record",
    "revision_summary",
]

logger = logging.getLogger(__name__)

SUMMARY_MAX = 500
AUTHOR_MAX = 200
RECORD_ATTEMPTS = 5

# --- who and from where ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Actor:
    """Who changes the configuration, from where; ``note`` heads the summary ("restored revision 3")."""

    author: str
    source: str
    note: str = ""


SYSTEM = Actor(author="system", source=RevisionSource.SYSTEM)

# The author may be a callable, resolved only when a change is made (the admin's middleware
# does not load the user for pages that change nothing).
_actor: contextvars.ContextVar[tuple[str | Callable[[], str], str, str] | None] = contextvars.ContextVar(
    "jwtex_revision_actor", default=None
)


@contextlib.contextmanager
def revision_actor(*, author: str | Callable[[], str], source: str, note: str = "") -> Iterator[None]:
    """Changes made inside are recorded as ``author``'s, from ``source``."""
    token = _actor.set((author, source, note))
    try:
        yield
    finally:
        _actor.reset(token)


def revision_actor_current() -> Actor:
    current = _actor.get()
    if current is None:
        return SYSTEM
    author, source, note = current
    name = author() if callable(author) else author
    return Actor(author=(name or "system")[:AUTHOR_MAX], source=source, note=note)


# --- recording -------------------------------------------------------------------------------------


def revision_record(*, tenant_id: int, render: Callable[[Tenant], str], actor: Actor, now: datetime) -> Revision | None:
    """A new revision of the tenant if ``render(tenant)`` (its document now) differs from the
    latest one's; None when nothing changed (a key rotation, a no-op apply) or the tenant is gone.

    The tenant row is locked FOR NO KEY UPDATE (an audit INSERT holds FOR KEY SHARE on it, which
    FOR UPDATE would wait for) while the document is rendered and numbered, so two checks after
    two commits record the states in their order; where the database has no row locks (SQLite),
    the unique number makes a concurrent insert fail and the check runs again."""
    for attempt in range(RECORD_ATTEMPTS):
        try:
            with transaction.atomic():
                return _record_locked(tenant_id=tenant_id, render=render, actor=actor, now=now)
        except IntegrityError:
            if attempt == RECORD_ATTEMPTS - 1:
                raise
            logger.info("revision number taken; retrying", extra={"jwtex": {"tenant_id": tenant_id}})
    return None  # pragma: no cover - the loop returns or raises


def _record_locked(*, tenant_id: int, render: Callable[[Tenant], str], actor: Actor, now: datetime) -> Revision | None:
    tenant = Tenant.objects.select_for_update(no_key=True).filter(pk=tenant_id).first()
    if tenant is None:
        return None
    latest = Revision.objects.filter(tenant_id=tenant_id).order_by("-number").first()
    document = render(tenant)
    if latest is not None and latest.document == document:
        return None
    if latest is None:  # the tenant's creation, or the configuration when history began
        baseline = actor.source == RevisionSource.BASELINE
        source = RevisionSource.BASELINE if baseline else RevisionSource.CREATED
        summary = "" if baseline else "tenant created"
    else:
        source, summary = actor.source, revision_summary(before=latest.document, after=document)
    if actor.note:
        summary = f"{actor.note}: {summary}" if summary else actor.note
    if len(summary) > SUMMARY_MAX:
        summary = summary[: SUMMARY_MAX - 1] + "…"
    return Revision.objects.create(
        tenant=tenant,
        number=(latest.number if latest else 0) + 1,
        created_at=now,
        author=actor.author,
        source=source,
        summary=summary,
        document=document,
    )


# --- reading ---------------------------------------------------------------------------------------


def revision_list(*, tenant: Tenant):
    """The tenant's revisions, newest first (without their documents)."""
    return Revision.objects.filter(tenant=tenant).defer("document").order_by("-number")


def revision_get(*, tenant: Tenant, number: int) -> Revision | None:
    return Revision.objects.filter(tenant=tenant, number=number).first()


# --- what changed ----------------------------------------------------------------------------------

# Lists of named entries in a tenant's document, each compared entry by entry.
_COLLECTIONS = {"issuers": ("id", "issuer"), "rules": ("name", "rule"), "shadow_rules": ("name", "shadow rule")}


def _tenant_of(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    document = strict_yaml.loads(text)  # our own export, read as strictly as any configuration file
    tenants = document.get("tenants") if isinstance(document, Mapping) else None
    return tenants[0] if isinstance(tenants, list) and tenants and isinstance(tenants[0], Mapping) else {}


def _collection_changes(key: str, before: list, after: list) -> list[str]:
    id_key, label = _COLLECTIONS[key]
    old = {item.get(id_key): item for item in before if isinstance(item, Mapping)}
    new = {item.get(id_key): item for item in after if isinstance(item, Mapping)}
    parts = [f"{label} '{name}' added" for name in new if name not in old]
    parts += [f"{label} '{name}' changed" for name in new if name in old and old[name] != new[name]]
    parts += [f"{label} '{name}' deleted" for name in old if name not in new]
    kept_old = [name for name in old if name in new]
    kept_new = [name for name in new if name in old]
    if key != "issuers" and kept_old != kept_new:  # issuers are exported sorted by id
        parts.append(f"{label}s reordered")
    return parts


def revision_summary(*, before: str | None, after: str) -> str:
    """One line comparing two documents of a tenant by issuer id and rule name:
    ``rule 'main' changed; issuer 'gitlab' added``."""
    old, new = _tenant_of(before), _tenant_of(after)
    if not old:
        return "tenant created"
    settings = sorted(k for k in {*old, *new} - set(_COLLECTIONS) if old.get(k) != new.get(k))
    parts = [f"tenant settings changed ({', '.join(settings)})"] if settings else []
    for key in _COLLECTIONS:
        parts += _collection_changes(key, old.get(key) or [], new.get(key) or [])
    return "; ".join(parts) or "configuration changed"


@dataclass(frozen=True)
class DiffLine:
    kind: str  # "add", "remove", "hunk", "file" or "context"
    text: str


def revision_diff(*, before: str, after: str, before_label: str, after_label: str) -> list[DiffLine]:
    """The unified diff (3 lines of context) of two documents, one entry per line."""
    lines = difflib.unified_diff(
        before.splitlines(), after.splitlines(), fromfile=before_label, tofile=after_label, lineterm=""
    )
    out = []
    for line in lines:
        if line.startswith(("+++", "---")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "remove"
        else:
            kind = "context"
        out.append(DiffLine(kind=kind, text=line))
    return out
