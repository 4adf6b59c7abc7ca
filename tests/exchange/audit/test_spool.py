"""The local audit spool (docs/design/audit-path.md#the-spool): durable on append, drained exactly once,
robust to crashes."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime

import pytest

from exchange.audit.spool import Spool, SpoolError, spool_line_decode, spool_line_encode
from exchange.audit.writer import spool_drain
from exchange.models import ExchangeRecord


def record(tenant, **fields):
    return {
        "record_id": uuid.uuid4(),
        "tenant_id": tenant.pk,
        "created_at": datetime.now(UTC).replace(microsecond=0),
        "endpoint": "raw",
        "decision": "allowed",
        "status_code": 200,
        "issued_jti": uuid.uuid4().hex,
        **fields,
    }


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_record_round_trips_through_the_line_format(tenant):
    original = record(tenant, issued_claims={"sub": "x", "tags": ["a"]}, issued_exp=datetime(2030, 1, 1, tzinfo=UTC))
    decoded = spool_line_decode(spool_line_encode(original))
    assert decoded["issued_exp"] == original["issued_exp"] and decoded["created_at"] == original["created_at"]
    assert decoded["record_id"] == str(original["record_id"]) and decoded["issued_claims"] == original["issued_claims"]


@pytest.mark.django_db
def test_append_then_drain_stores_each_record_once(tmp_path, tenant):
    spool = Spool(tmp_path)
    records = [record(tenant) for _ in range(3)]
    spool.append(records)
    assert spool.pending() == 3
    assert spool_drain(spool) == 3
    assert spool.pending() == 0 and not list(tmp_path.iterdir())
    assert set(ExchangeRecord.objects.values_list("issued_jti", flat=True)) == {r["issued_jti"] for r in records}


@pytest.mark.django_db
def test_a_crash_between_write_and_drain_loses_nothing(tmp_path, tenant):
    """A process killed after spooling leaves its file; another process of the host drains it."""
    victim = dead_pid()
    spool = Spool(tmp_path)
    records = [record(tenant) for _ in range(2)]
    (tmp_path / f"audit-{spool.host}-{victim}.jsonl").write_text("".join(spool_line_encode(r) + "\n" for r in records))
    assert Spool(tmp_path).pending() == 2
    assert spool_drain(Spool(tmp_path)) == 2
    assert ExchangeRecord.objects.count() == 2


@pytest.mark.django_db
def test_a_record_drained_twice_is_stored_once(tmp_path, tenant):
    spool = Spool(tmp_path)
    records = [record(tenant) for _ in range(2)]
    spool.append(records)
    copy = (tmp_path / f"audit-{spool.host}-{os.getpid()}.jsonl").read_text()
    spool_drain(spool)
    # The same lines again, as if a drainer died after its INSERT but before it deleted the file.
    (tmp_path / f"audit-{spool.host}-{dead_pid()}.jsonl").write_text(copy)
    spool_drain(spool)
    assert ExchangeRecord.objects.count() == 2


@pytest.mark.django_db
def test_a_corrupt_tail_line_is_skipped_and_the_rest_stored(tmp_path, tenant):
    spool = Spool(tmp_path)
    good = [record(tenant) for _ in range(2)]
    line = spool_line_encode(record(tenant))
    (tmp_path / f"audit-{spool.host}-{dead_pid()}.jsonl").write_text(
        "".join(spool_line_encode(r) + "\n" for r in good) + line[: len(line) // 2]  # cut short by a crash
    )
    assert spool_drain(spool) == 2
    assert ExchangeRecord.objects.count() == 2 and not list(tmp_path.iterdir())


def test_files_of_live_processes_and_other_hosts_are_left_alone(tmp_path):
    spool = Spool(tmp_path)
    parent = os.getppid()
    (tmp_path / f"audit-{spool.host}-{parent}.jsonl").write_text("x\n")
    (tmp_path / f"audit-other_host-{dead_pid()}.jsonl").write_text("x\n")
    assert spool.drain(lambda records: None) == 0
    assert len(list(tmp_path.iterdir())) == 2


def test_a_full_disk_is_a_spool_error(tmp_path, monkeypatch, tenant):
    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(SpoolError, match="No space left"):
        Spool(tmp_path).append([record(tenant)])


@pytest.mark.django_db
def test_the_celery_task_and_the_command_drain_the_spool(tmp_path, settings, tenant):
    from io import StringIO

    from django.core.management import call_command

    from exchange import tasks

    settings.JWTEX_AUDIT_SPOOL_DIR = str(tmp_path)
    spool = Spool(tmp_path)
    (tmp_path / f"audit-{spool.host}-{dead_pid()}.jsonl").write_text(spool_line_encode(record(tenant)) + "\n")
    assert tasks.drain_audit_spool.delay().get() == 1
    (tmp_path / f"audit-{spool.host}-{dead_pid()}.jsonl").write_text(spool_line_encode(record(tenant)) + "\n")
    out = StringIO()
    call_command("jwtex_drain_audit_spool", stdout=out)
    assert "1 spooled audit record(s) written; 0 still waiting." in out.getvalue()
    assert ExchangeRecord.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_starting_web_process_drains_what_a_killed_one_spooled(tmp_path, settings, tenant):
    """jwtex_site/wsgi.py calls spool_drain_at_start: in the background, so a database still down
    would not hold up the start."""
    from exchange.audit.writer import spool_drain_at_start

    settings.JWTEX_AUDIT_SPOOL_DIR = str(tmp_path)
    spool = Spool(tmp_path)
    (tmp_path / f"audit-{spool.host}-{dead_pid()}.jsonl").write_text(spool_line_encode(record(tenant)) + "\n")
    spool_drain_at_start().join(10)
    assert ExchangeRecord.objects.count() == 1 and spool.pending() == 0
