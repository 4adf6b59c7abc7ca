"""The audit table's partitions on PostgreSQL (docs/scale.md#retention-at-volume): one per day (UTC) on ``created_at``.

Retention then drops whole days instead of deleting rows one by one: no long DELETE, no dead rows
for vacuum, no bloated indexes. The daily sweep creates the partitions of the coming week and
drops the days every tenant's retention has passed (``exchange.services.audit``); a record whose
day has no partition yet gets it from the writer (``partition_missing``). The partition of rows
from before the upgrade (``…_legacy``, everything before its cut-over) is dropped like a day once
its last day has passed.

New partitions are made beside the table and attached (``ATTACH PARTITION`` takes only a SHARE
UPDATE EXCLUSIVE lock: reads and writes go on), old ones detached concurrently before they are
dropped; each lock is asked for with a short timeout, so that no exchange waits behind it.

On SQLite (the embedded default) there are no partitions: every function here does nothing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from django.db import DatabaseError, connection, transaction

from ..models import AuditRollup, ExchangeRecord

logger = logging.getLogger("jwtex.audit")

TABLE = ExchangeRecord._meta.db_table
DAYS_AHEAD = 7
LOCK_TIMEOUT = "2s"
_BOUNDS = re.compile(r"FROM \((MINVALUE|'[^']+')\) TO \((MAXVALUE|'[^']+')\)")


def partitioned() -> bool:
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [TABLE])
        row = cursor.fetchone()
    return bool(row) and row[0] == "p"


def partition_missing(exc: BaseException) -> bool:
    """True for PostgreSQL's refusal of a row whose day has no partition."""
    return "no partition of relation" in str(exc)


def _day(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _bound(text: str, cursor) -> datetime | None:
    if text in ("MINVALUE", "MAXVALUE"):
        return None
    cursor.execute("SELECT %s::timestamptz", [text.strip("'")])
    return cursor.fetchone()[0]


def audit_partitions_list() -> list[tuple[str, datetime | None, datetime | None]]:
    """(name, from, to) of each partition, oldest first; None is an open end."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(%s)",
            [TABLE],
        )
        rows = cursor.fetchall()
        parts = []
        for name, bound in rows:
            match = _BOUNDS.search(bound or "")
            if match:
                parts.append((name, _bound(match[1], cursor), _bound(match[2], cursor)))
    return sorted(parts, key=lambda part: part[1] or datetime.min.replace(tzinfo=UTC))


def _covered(day: datetime, parts) -> bool:
    end = day + timedelta(days=1)
    return any((start is None or start < end) and (stop is None or stop > day) for _, start, stop in parts)


def _locked(statements: list[str]) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        for statement in statements:
            cursor.execute(statement)


def audit_partitions_create(*, days: Iterable[datetime]) -> list[str]:
    """A partition for each of ``days`` that no partition covers yet; the names made. Two
    processes making the same one at once: one attaches it, the other finds it there."""
    if not partitioned():
        return []
    made = []
    parts = audit_partitions_list()
    for day in sorted({_day(moment) for moment in days}):
        if _covered(day, parts):
            continue
        name = f"{TABLE}_p{day:%Y%m%d}"
        try:
            _locked(
                [
                    f"CREATE TABLE IF NOT EXISTS {name} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)",
                    f"ALTER TABLE {TABLE} ATTACH PARTITION {name} "
                    f"FOR VALUES FROM ('{day.isoformat()}') TO ('{(day + timedelta(days=1)).isoformat()}')",
                ]
            )
        except DatabaseError as exc:
            parts = audit_partitions_list()
            if _covered(day, parts):
                continue  # another process attached it meanwhile
            raise exc
        made.append(name)
        logger.info("audit partition created", extra={"jwtex": {"partition": name}})
    return made


def audit_partitions_ahead(*, now: datetime, days: int = DAYS_AHEAD) -> list[str]:
    """Today's partition and those of the next ``days`` days."""
    return audit_partitions_create(days=[now + timedelta(days=n) for n in range(days + 1)])


def audit_partitions_drop(*, before: datetime) -> list[str]:
    """Drop every partition that holds only rows older than ``before`` (its upper bound is at or
    before it): detached concurrently (reads and writes go on), then dropped. Inside a
    transaction (tests) the detach cannot be concurrent and takes its lock for a moment."""
    if not partitioned():
        return []
    _finalize_pending()
    dropped = []
    for name, start, stop in audit_partitions_list():
        if stop is None or stop > before:
            continue
        with connection.cursor() as cursor:
            if connection.in_atomic_block:
                cursor.execute(f"ALTER TABLE {TABLE} DETACH PARTITION {name}")
            else:
                cursor.execute(f"ALTER TABLE {TABLE} DETACH PARTITION {name} CONCURRENTLY")
        _drop_with_rollups(name, start, stop)
        dropped.append(name)
        logger.info("audit partition dropped", extra={"jwtex": {"partition": name, "before": before.isoformat()}})
    return dropped


def _drop_with_rollups(name: str, start: datetime | None, stop: datetime) -> None:
    """The detached partition and the rollups of its hours go together: the counts stay those
    of the records left (a record's hour is within its partition's days)."""
    hours = AuditRollup.objects.filter(hour__lt=stop)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {name}")
        (hours if start is None else hours.filter(hour__gte=start)).delete()


def _finalize_pending() -> None:
    """A concurrent detach interrupted half-way leaves its partition "detach pending": finish it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(%s) AND i.inhdetachpending",
            [TABLE],
        )
        pending = [row[0] for row in cursor.fetchall()]
    for name, start, stop in audit_partitions_list():
        if name in pending:
            with connection.cursor() as cursor:
                cursor.execute(f"ALTER TABLE {TABLE} DETACH PARTITION {name} FINALIZE")
            _drop_with_rollups(name, start, stop)
