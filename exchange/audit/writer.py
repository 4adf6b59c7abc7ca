"""Durable audit records with group commit (SPEC §8: no token without its record).

``record_write(fields)`` returns once the record is durable: committed to the database, or,
while the database cannot take it, fsync'd to the local spool. Concurrent callers share
commits: the first caller to find no commit under way becomes the leader and writes every
record waiting at that moment in one multi-row INSERT and one commit, then the records that
queued meanwhile, until none is left; the others wait for their record's outcome. So
durability costs one commit per batch, not per request, and a caller alone (a test, a sync
worker) simply writes its own record in its own connection.

Every record carries a unique ``record_id``: INSERTs ignore a record already stored, so a
batch that committed although its answer was lost, and then went to the spool, or a spool
drained twice, still leaves exactly one row.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError, IntegrityError, connection
from django.db.models.constants import OnConflict

from ..conf import jwtex_settings
from ..models import ExchangeRecord
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
    done: threading.Event = field(default_factory=threading.Event)
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
        fields.setdefault("record_id", uuid.uuid4())
        item = _Pending(fields)
        with self._lock:
            self._queue.append(item)
            lead = not self._leading
            if lead:
                self._leading = True
        if not lead:
            if not item.done.wait(FOLLOWER_TIMEOUT):
                logger.error("audit record not made durable in time", extra={"jwtex": {"wait_s": FOLLOWER_TIMEOUT}})
            return item.durable
        self._lead()
        return item.durable

    def _lead(self) -> None:
        try:
            while True:
                with self._lock:
                    batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                    if not batch:
                        self._leading = False
                        return
                self._persist(batch)
        except BaseException:
            with self._lock:
                self._leading = False
            raise

    def _persist(self, batch: list[_Pending]) -> None:
        try:
            try:
                stored = _insert([item.fields for item in batch])
            except IntegrityError:
                stored = _insert_one_by_one([item.fields for item in batch])
            self.commits += 1
            self.records += stored
            durable = True
        except DatabaseError as exc:
            connection.close_if_unusable_or_obsolete()
            durable = self._spool(batch, exc)
        else:
            self._drain_now_and_then()
        for item in batch:
            item.durable = durable
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
        drain(self.spool)


_FIELDS = [f for f in ExchangeRecord._meta.concrete_fields if not f.primary_key]
_JSON_FIELDS = frozenset(f.name for f in _FIELDS if f.get_internal_type() == "JSONField")


def _insert(records: list[dict[str, Any]]) -> int:
    """One ``INSERT … ON CONFLICT DO NOTHING`` per record, all in one transaction and, on
    PostgreSQL, one pipelined round trip (psycopg's ``executemany`` with server-side binding:
    no per-value quoting in Python); elsewhere one multi-row statement. Values are prepared by
    each field itself (``get_db_prep_save``, as the ORM does), without model instances."""
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
        [Jsonb(v) if f.name in _JSON_FIELDS and v is not None else v for f in _FIELDS for v in (_value(fields, f),)]
        for fields in records
    ]
    sql = f"INSERT INTO {_table()} ({_columns()}) VALUES ({', '.join(['%s'] * len(_FIELDS))}) ON CONFLICT DO NOTHING"
    connection.ensure_connection()
    raw = connection.connection
    # Driver errors as Django's (DatabaseError…), and the connection marked as failed, so it is
    # closed and the next statement reconnects.
    with connection.wrap_database_errors, psycopg.Cursor(raw) as cursor:
        if connection.in_atomic_block:  # inside the caller's transaction (tests): just the statements
            cursor.executemany(sql, params)
        elif len(params) == 1:
            cursor.execute(sql, params[0])  # autocommit: the statement is its own transaction
        else:
            with raw.transaction():
                cursor.executemany(sql, params)
    return len(params)


def _table() -> str:
    return connection.ops.quote_name(ExchangeRecord._meta.db_table)


def _columns() -> str:
    return ", ".join(connection.ops.quote_name(f.column) for f in _FIELDS)


def _value(fields: dict[str, Any], field) -> Any:
    if field.attname in fields:
        return fields[field.attname]
    if field.name in fields:
        return fields[field.name]
    return _default(field)


def _default(field) -> Any:
    return field.get_default() if field.has_default() else ("" if field.empty_strings_allowed and not field.null else None)


def _insert_one_by_one(records: list[dict[str, Any]]) -> int:
    """A batch the database refused (a rule or issuer deleted since the snapshot was taken):
    each record alone, and without its dangling references if need be."""
    for fields in records:
        try:
            _insert([fields])
        except IntegrityError:
            _insert([{**fields, "issuer_id": None, "rule_id": None}])
    return len(records)


def drain(spool: Spool) -> int:
    """Write the spooled records of this host to the database, exactly once each."""
    try:
        return spool.drain(_insert_drained)
    except DatabaseError:
        connection.close_if_unusable_or_obsolete()
        return 0


def _insert_drained(records: list[dict[str, Any]]) -> None:
    try:
        _insert(records)
    except IntegrityError:
        _insert_one_by_one(records)


_writer: AuditWriter | None = None
_writer_lock = threading.Lock()


def audit_writer() -> AuditWriter:
    """This process's writer (one spool file per process)."""
    global _writer
    with _writer_lock:
        directory = jwtex_settings.audit_spool_dir
        if _writer is None or _writer.spool.directory != directory:
            _writer = AuditWriter(Spool(directory))
        return _writer


def record_write(fields: dict[str, Any]) -> bool:
    return audit_writer().write(fields)
