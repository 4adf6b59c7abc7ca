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

from django.db import DatabaseError, IntegrityError, connection, transaction

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


def _insert(records: list[dict[str, Any]]) -> int:
    with transaction.atomic():
        ExchangeRecord.objects.bulk_create([ExchangeRecord(**fields) for fields in records], ignore_conflicts=True)
    return len(records)


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
