"""Revisions, wired to the configuration format (docs/operations.md#revisions; the records are
exchange.services.revisions').

Every change a tenant's configuration can see — an issuer, a rule or the tenant row saved or
deleted, through any admin form, ▲/▼, a preset, ``jwtex_apply`` — already bumps the tenant
(exchange/invalidation.py), which sends ``config_changed``. The receiver here schedules one
check per tenant per transaction, after the commit: it exports the tenant exactly as
``jwtex_export --tenant T`` prints it and records a revision only when that text differs from
the latest revision's. A key rotation or an upstream key refresh bumps too, but changes no
export, so it records nothing; so does an apply that changes nothing (it writes nothing).

A restore applies a revision's document through ``config_apply``, so it is validated exactly as
``jwtex_apply`` would validate that file today, and becomes a new revision (source "restore").
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction
from django.utils import timezone

from tenants.models import Tenant

from ..invalidation import config_changed
from ..models import Revision, RevisionSource
from ..services.revisions import (
    Actor,
    DiffLine,
    revision_actor,
    revision_actor_current,
    revision_diff,
    revision_get,
    revision_record,
)
from .apply import ApplyReport, config_apply
from .export import config_export
from .files import config_dump, config_load
from .schema import ConfigError

__all__ = [
    "revision_check_schedule",
    "revision_restore",
    "revision_restore_preview",
    "revisions_baseline",
    "tenant_document",
]

logger = logging.getLogger(__name__)


def tenant_document(tenant: Tenant) -> str:
    """The tenant's configuration, byte for byte what ``jwtex_export --tenant T`` prints."""
    return config_dump(config_export(tenant_slugs=[tenant.slug]), fmt="yaml")


# --- after every committed change: one check per tenant ------------------------------------------


class RevisionCheck:
    """The on_commit callback; who changed it is taken when the change is made."""

    def __init__(self, tenant_id: int, actor: Actor) -> None:
        self.tenant_id, self.actor = tenant_id, actor
        self.done = False

    def __call__(self) -> None:
        self.done = True  # (a test's captured callbacks run but stay in the list)
        try:
            revision_record(tenant_id=self.tenant_id, render=tenant_document, actor=self.actor, now=timezone.now())
        except Exception:  # the change is committed; a lost revision must not fail it
            logger.exception("recording a revision failed", extra={"jwtex": {"tenant_id": self.tenant_id}})


def revision_check_schedule(*, tenant_id: int) -> None:
    """Check the tenant for a new revision once the current transaction commits — once per
    transaction however many rows it changes (a callback already waiting at this savepoint
    level or above covers this change too)."""
    connection = transaction.get_connection()
    if connection.in_atomic_block:
        open_savepoints = set(connection.savepoint_ids)
        for entry in connection.run_on_commit:
            savepoints, callback = entry[0], entry[1]
            if (
                isinstance(callback, RevisionCheck)
                and callback.tenant_id == tenant_id
                and not callback.done
                and savepoints <= open_savepoints
            ):
                return
    transaction.on_commit(RevisionCheck(tenant_id, revision_actor_current()))


def _config_changed(sender, tenant_id: int, **kwargs) -> None:
    revision_check_schedule(tenant_id=tenant_id)


config_changed.connect(_config_changed, dispatch_uid="jwtex.revisions.check")


def revisions_baseline(*, using: str = DEFAULT_DB_ALIAS, **kwargs) -> int:
    """After ``migrate``: revision 1 ("history starts here") for every tenant that has none yet
    (tenants made before revisions were kept), so their first change can be undone too."""
    if using != DEFAULT_DB_ALIAS:
        return 0
    try:
        if Revision._meta.db_table not in connections[using].introspection.table_names():
            return 0
        missing = list(Tenant.objects.filter(revisions__isnull=True).values_list("pk", flat=True))
        actor = Actor(author="system", source=RevisionSource.BASELINE, note="history starts here")
        now = timezone.now()
        return sum(
            revision_record(tenant_id=pk, render=tenant_document, actor=actor, now=now) is not None for pk in missing
        )
    except DatabaseError as exc:  # migrated only part of the way
        logger.warning("no baseline revisions: %s", exc)
        return 0


# --- restore ---------------------------------------------------------------------------------------


def _revision_document(*, tenant: Tenant, number: int) -> tuple[Revision, dict]:
    revision = revision_get(tenant=tenant, number=number)
    where = f"revision {number}"
    if revision is None:
        raise ConfigError([(where, "no such revision")])
    document = config_load(revision.document, source=where, fmt="yaml")
    slugs = [t.get("slug") for t in document.get("tenants") or [] if isinstance(t, dict)]
    if slugs != [tenant.slug]:  # a revision only ever holds its own tenant
        raise ConfigError([(where, f"the document is not the configuration of {tenant.slug} alone")])
    return revision, document


def revision_restore_preview(*, tenant: Tenant, number: int, now: datetime) -> tuple[list[DiffLine], ApplyReport]:
    """What restoring revision ``number`` would do: the diff current → N and the dry run's report.
    Raises ``ConfigError`` as the restore would (validated like an apply)."""
    revision, document = _revision_document(tenant=tenant, number=number)
    diff = revision_diff(
        before=tenant_document(tenant),
        after=revision.document,
        before_label="current",
        after_label=f"revision {number}",
    )
    return diff, config_apply(document=document, now=now, dry_run=True)


def revision_restore(*, tenant: Tenant, number: int, author: str, now: datetime) -> ApplyReport:
    """Apply revision ``number``'s document as ``jwtex_apply`` would; it becomes a new revision
    (source "restore"), unless it equals the current configuration. Raises ``ConfigError``."""
    _, document = _revision_document(tenant=tenant, number=number)
    with revision_actor(author=author, source=RevisionSource.RESTORE, note=f"restored revision {number}"):
        return config_apply(document=document, now=now)
