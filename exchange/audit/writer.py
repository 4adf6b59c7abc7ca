"""Durable audit records with group commit: no token without its record
(docs/operations.md#no-token-without-its-record, docs/design/audit-path.md#group-commit).

``record_write(fields)`` returns once the record is durable: committed to the database, or,
while the database cannot take it, fsync'd to the local spool. Concurrent callers share
commits: the first caller to find no commit under way becomes the leader and writes every
record waiting at that moment in one multi-row INSERT and one commit, then hands the lead to
the first caller that queued meanwhile (so nobody's answer waits behind other people's
batches); the others wait for their record's outcome. So durability costs one commit per
batch, not per request, and a caller alone (a test, a sync worker) simply writes its own
record in its own connection.

Every record carries a unique ``record_id`` (time-ordered, UUID version 7, so that its index
grows at one end): INSERTs ignore a record already stored, so a batch that committed although
its answer was lost, and then went to the spool, or a spool drained twice, still leaves exactly
one row.

A batch is one INSERT statement, so the database's rollup trigger (``AuditRollup``) runs once
per batch, in the same transaction. On PostgreSQL a record whose day has no partition yet (the
daily sweep creates them a week ahead) has its partition created here, and the batch retried.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models.constants import OnConflict

from .. import timeline
from ..conf import jwtex_settings
from ..models import ExchangeRecord
from . import partitions
from .spool import Spool, SpoolError

logger = logging.getLogger("jwtex.audit")

MAX_BATCH = 256
# How long a follower waits for the leader's outcome before it gives up (its request: 503).
FOLLOWER_TIMEOUT = 10.0
# How often a process looks for spooled records to drain after a successful commit.
DRAIN_INTERVAL = 5.0


@dataclass
class _Pending:
    fields: dict[str, Any]
    done: threading.Event = field(default_factory=threading.Event)  # resolved, or made the leader
    lead: bool = False
    resolved: bool = False
    durable: bool = False


class AuditWriter:
    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._leading = False
        self._last_drain = 0.0
        self.commits = 0  # batches committed (the benchmark reads commits per record)
        self.records = 0

    def write(self, fields: dict[str, Any]) -> bool:
        """Make one record durable; False when it could be made durable nowhere."""
        if fields.get("record_id") is None:
            fields["record_id"] = record_id_new(fields.get("created_at"))
        item = _Pending(fields)
        with self._lock:
            self._queue.append(item)
            if not self._leading:
                self._leading = item.lead = True
        timeline.mark("audit queued, leading" if item.lead else "audit queued, following")
        if not item.lead and not self._follow(item):
            return item.durable
        self._lead_one_batch()
        return item.durable

    def _follow(self, item: _Pending) -> bool:
        """Wait for the record's outcome; True when this caller was made the next leader."""
        item.done.wait(FOLLOWER_TIMEOUT)
        timeline.mark("follower woken")
        with self._lock:
            if item.lead and not item.resolved:
                return True
            if not item.resolved and item in self._queue:  # never taken: withdraw it
                self._queue.remove(item)
        if not item.resolved:
            logger.error("audit record not made durable in time", extra={"jwtex": {"wait_s": FOLLOWER_TIMEOUT}})
        return False

    def _lead_one_batch(self) -> None:
        """Write what is queued (this caller's record among it), then hand the lead to the first
        record queued meanwhile: no caller waits for more than its own batch and the one
        before it, however long the load lasts."""
        with self._lock:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
        try:
            if batch:
                self._persist(batch)
                timeline.mark(f"led a batch of {len(batch)}")
        finally:
            with self._lock:
                if self._queue:
                    heir = self._queue[0]
                    heir.lead = True
                    heir.done.set()
                else:
                    self._leading = False

    def _persist(self, batch: list[_Pending]) -> None:
        try:
            stored = records_store([item.fields for item in batch])
            self.commits += 1
            self.records += stored
            durable = True
        except DatabaseError as exc:
            _close_if_broken()
            durable = self._spool(batch, exc)
        else:
            self._drain_now_and_then()
        for item in batch:
            item.durable, item.resolved = durable, True
            item.done.set()

    def _spool(self, batch: list[_Pending], cause: Exception) -> bool:
        try:
            self.spool.append([item.fields for item in batch])
        except SpoolError as exc:
            logger.critical(
                "audit records could be made durable nowhere",
                extra={"jwtex": {"records": len(batch), "database": type(cause).__name__, "spool": str(exc)[:200]}},
            )
            return False
        logger.warning(
            "database unavailable: audit records spooled",
            extra={"jwtex": {"records": len(batch), "error": type(cause).__name__}},
        )
        return True

    def _drain_now_and_then(self) -> None:
        clock = time.monotonic()
        if clock - self._last_drain < DRAIN_INTERVAL:
            return
        self._last_drain = clock
        spool_drain(self.spool)


def record_id_new(created_at: datetime | None = None) -> uuid.UUID:
    """A UUID version 7 (RFC 9562 §5.7): the record's time in milliseconds, then 74 random bits.
    Consecutive ids sort together, so the unique index takes them at its end."""
    millis = int((created_at.timestamp() if created_at is not None else time.time()) * 1000) & ((1 << 48) - 1)
    random = int.from_bytes(os.urandom(10), "big")
    value = (millis << 80) | (0x7 << 76) | ((random >> 62) & 0xFFF) << 64 | (0b10 << 62) | (random & ((1 << 62) - 1))
    return uuid.UUID(int=value)


_FIELDS = [f for f in ExchangeRecord._meta.concrete_fields if not f.primary_key]
_JSON_FIELDS = frozenset(f.name for f in _FIELDS if f.get_internal_type() == "JSONField")


def records_store(records: list[dict[str, Any]]) -> int:
    """Insert ``records`` (one statement, one transaction); on PostgreSQL, a day without its
    partition gets one and the statement runs again. Inside a caller's transaction (a test, a
    command) the first try is a savepoint, so that the transaction survives the refusal."""
    try:
        if connection.in_atomic_block and connection.vendor == "postgresql":
            with transaction.atomic():
                return _insert(records)
        return _insert(records)
    except IntegrityError as exc:
        if not partitions.partition_missing(exc):
            raise
        _close_if_broken()
        partitions.audit_partitions_create(days=[fields["created_at"] for fields in records])
        return _insert(records)


def _insert(records: list[dict[str, Any]]) -> int:
    """One ``INSERT … VALUES (…), (…) ON CONFLICT DO NOTHING`` for the whole batch: one statement,
    so one transaction on its own and one run of the rollup trigger. On PostgreSQL, psycopg binds
    the values on the server (no per-value quoting in Python); values are prepared by each field
    itself (``get_db_prep_save``, as the ORM does), without model instances."""
    if connection.vendor == "postgresql":
        return _insert_postgresql(records)
    params = [[field.get_db_prep_save(_value(fields, field), connection) for field in _FIELDS] for fields in records]
    ops = connection.ops
    row = "(" + ", ".join(["%s"] * len(_FIELDS)) + ")"
    sql = (
        f"{ops.insert_statement(on_conflict=OnConflict.IGNORE)} {_table()} ({_columns()}) VALUES "
        + ", ".join([row] * len(records))
        + " "
        + ops.on_conflict_suffix_sql(_FIELDS, OnConflict.IGNORE, None, None)
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [value for values in params for value in values])
    return len(records)


def _insert_postgresql(records: list[dict[str, Any]]) -> int:
    import psycopg
    from psycopg.types.json import Jsonb

    # psycopg adapts every value of these columns itself; only JSON needs saying so.
    params = [
        Jsonb(v) if f.name in _JSON_FIELDS and v is not None else v
        for fields in records
        for f in _FIELDS
        for v in (_value(fields, f),)
    ]
    row = f"({', '.join(['%s'] * len(_FIELDS))})"
    sql = f"INSERT INTO {_table()} ({_columns()}) VALUES {', '.join([row] * len(records))} ON CONFLICT DO NOTHING"
    connection.ensure_connection()
    # Driver errors as Django's (DatabaseError…), and the connection marked as failed, so it is
    # closed and the next statement reconnects. Outside a transaction the statement is its own.
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params)
    return len(records)


_quoted: dict[str, tuple[str, str]] = {}  # vendor → (table, columns), quoted once


def _table() -> str:
    return _names()[0]


def _columns() -> str:
    return _names()[1]


def _names() -> tuple[str, str]:
    names = _quoted.get(connection.vendor)
    if names is None:
        quote = connection.ops.quote_name
        names = _quoted[connection.vendor] = (
            quote(ExchangeRecord._meta.db_table),
            ", ".join(quote(f.column) for f in _FIELDS),
        )
    return names


def _value(fields: dict[str, Any], field) -> Any:
    if field.attname in fields:
        return fields[field.attname]
    if field.name in fields:
        return fields[field.name]
    return _default(field)


def _default(field) -> Any:
    return (
        field.get_default() if field.has_default() else ("" if field.empty_strings_allowed and not field.null else None)
    )


def _close_if_broken() -> None:
    """Let the next statement reconnect — unless a caller's transaction holds the connection
    (it is theirs to roll back)."""
    if not connection.in_atomic_block:
        connection.close_if_unusable_or_obsolete()


def spool_drain(spool: Spool) -> int:
    """Write the spooled records of this host to the database, exactly once each."""
    try:
        return spool.drain(_insert_drained)
    except DatabaseError:
        _close_if_broken()
        return 0


def spool_drain_at_start() -> threading.Thread:
    """Drain what this host's earlier processes spooled (e.g. one was killed), in the background so
    that a database still down does not hold up the start; the next commits drain the rest."""

    def run() -> None:
        try:
            count = spool_drain(audit_writer().spool)
            if count:
                logger.info("spooled audit records written at start", extra={"jwtex": {"records": count}})
        except Exception:  # a failed drain at start is retried by every commit
            logger.exception("draining the audit spool at start failed")
        finally:
            connection.close()

    thread = threading.Thread(target=run, name="jwtex-audit-drain", daemon=True)
    thread.start()
    return thread


def flush_at_exit() -> int:
    """At the end of a web process: write what it spooled to the database, once the server has let
    every in-flight exchange finish (each waits for its own record, so none is pending here). A
    process that is going away — a container replaced, a pod deleted — may have no successor on
    this host to drain its file; what the database still cannot take stays in the spool."""
    try:
        count = spool_drain(audit_writer().spool)
    except Exception:  # never fail an exit over it; the file stays for the next drain
        logger.exception("draining the audit spool at exit failed")
        return 0
    finally:
        if not connection.in_atomic_block:  # a caller's transaction (tests) is theirs to end
            connection.close()
    left = audit_writer().spool.pending()
    if count or left:
        logger.warning("audit spool at exit", extra={"jwtex": {"written": count, "left in the spool": left}})
    return count


def flush_at_exit_register() -> None:
    """Run ``flush_at_exit`` when this process ends normally: after SIGTERM, granian's and
    gunicorn's workers stop taking requests, finish the ones in flight and return. Both end a
    worker through multiprocessing's exit function (granian's workers are multiprocessing
    processes, which skip ``atexit``; elsewhere multiprocessing runs the same from ``atexit``),
    so a multiprocessing finalizer is the one hook both servers run (seen with granian 2.8 and
    gunicorn 27). Registered in the process that serves: the finalizers of a forking parent
    are not its children's."""
    from multiprocessing.util import Finalize

    Finalize(None, flush_at_exit, exitpriority=10)


def _insert_drained(records: list[dict[str, Any]]) -> None:
    records_store(records)


_writer: AuditWriter | None = None
_writer_lock = threading.Lock()


def audit_writer() -> AuditWriter:
    """This process's writer (one spool file per process; a new one if the setting changed)."""
    global _writer
    directory = jwtex_settings.audit_spool_dir
    writer = _writer
    if writer is not None and writer.spool.directory == directory:
        return writer
    with _writer_lock:
        if _writer is None or _writer.spool.directory != directory:
            _writer = AuditWriter(Spool(directory))
        return _writer


def record_write(fields: dict[str, Any]) -> bool:
    return audit_writer().write(fields)
