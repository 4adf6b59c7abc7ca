"""The local audit spool (docs/design/audit-path.md#the-spool): where records go while the database cannot take them.

One append-only file per process (``audit-HOST-PID.jsonl`` under ``JWTEX_AUDIT_SPOOL_DIR``), one
JSON record per line, fsync'd before ``append`` returns: a record is durable once it is here.
``drain`` writes spooled records to the database through a caller-given, idempotent writer
(every record has a unique ``record_id``, so a record drained twice is stored once) and deletes
each file only after all its records are stored. A process drains its own file and the files
of processes of this host that are gone (a killed web process leaves its file behind); a file
is claimed by renaming it, so two drainers never read the same one. A line cut short by a
crash while it was being written was never acknowledged to anyone; it is skipped and logged.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger("jwtex.audit")

_DATETIME_FIELDS = ("created_at", "issued_exp")


class SpoolError(OSError):
    """The spool could not make a record durable (disk full, read-only, …)."""


def spool_line_encode(fields: dict[str, Any]) -> str:
    data = dict(fields)
    for name in _DATETIME_FIELDS:
        if isinstance(data.get(name), datetime):
            data[name] = data[name].isoformat()
    if data.get("record_id") is not None:
        data["record_id"] = str(data["record_id"])
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)


def spool_line_decode(line: str) -> dict[str, Any]:
    data = json.loads(line)
    if not isinstance(data, dict) or not data.get("record_id"):
        raise ValueError("not a spooled audit record")
    for name in _DATETIME_FIELDS:
        if isinstance(data.get(name), str):
            data[name] = datetime.fromisoformat(data[name])
    return data


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Spool:
    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.host = socket.gethostname().replace("-", "_") or "host"
        self._lock = threading.Lock()

    # --- writing ---------------------------------------------------------------------------

    def _own_path(self) -> Path:
        return self.directory / f"audit-{self.host}-{os.getpid()}.jsonl"

    def append(self, records: Sequence[dict[str, Any]]) -> None:
        """Make ``records`` durable in this process's spool file (one write and one fsync)."""
        data = "".join(spool_line_encode(record) + "\n" for record in records).encode("utf-8")
        with self._lock:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                fd = os.open(self._own_path(), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    written = os.write(fd, data)
                    if written != len(data):
                        raise OSError(f"short write to the audit spool ({written} of {len(data)} bytes)")
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise SpoolError(str(exc)) from exc

    # --- reading ---------------------------------------------------------------------------

    def _files(self) -> list[Path]:
        try:
            return sorted(p for p in self.directory.iterdir() if p.name.startswith("audit-") and ".jsonl" in p.name)
        except FileNotFoundError:
            return []

    def pending(self) -> int:
        """Records waiting in this host's spool (every process's file)."""
        count = 0
        for path in self._files():
            try:
                with path.open("rb") as handle:
                    count += sum(1 for line in handle if line.strip())
            except FileNotFoundError:
                continue
        return count

    def _claimable(self, path: Path) -> bool:
        """This process's own file, and files of processes of this host that are gone."""
        name = path.name
        if ".draining-" in name:
            owner = name.rsplit(".draining-", 1)[1]
        else:
            parts = name[len("audit-") : -len(".jsonl")].rsplit("-", 1)
            if len(parts) != 2 or parts[0] != self.host:
                return False
            owner = parts[1]
        if not owner.isdigit():
            return False
        return int(owner) == os.getpid() or not _alive(int(owner))

    def drain(self, write: Callable[[list[dict[str, Any]]], None], *, batch: int = 500) -> int:
        """Store every claimable spooled record through ``write`` (idempotent); the number stored.
        A ``write`` that raises leaves the rest for the next drain."""
        drained = 0
        for path in self._files():
            if not self._claimable(path):
                continue
            claimed = (
                path
                if ".draining-" in path.name and path.name.endswith(f"-{os.getpid()}")
                else (path.with_name(f"{path.name.split('.draining-')[0]}.draining-{os.getpid()}"))
            )
            with self._lock:
                try:
                    if claimed != path:
                        os.rename(path, claimed)
                except FileNotFoundError:
                    continue  # another drainer took it
            drained += self._drain_file(claimed, write, batch)
        return drained

    def _drain_file(self, path: Path, write: Callable[[list[dict[str, Any]]], None], batch: int) -> int:
        records = []
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(spool_line_decode(line))
            except ValueError:
                logger.error(
                    "spooled audit line unreadable; skipped", extra={"jwtex": {"file": path.name, "line": number}}
                )
        for start in range(0, len(records), batch):
            write(records[start : start + batch])
        path.unlink()
        if records:
            logger.info("audit spool drained", extra={"jwtex": {"file": path.name, "records": len(records)}})
        return len(records)
