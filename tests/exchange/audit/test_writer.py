"""Group commit and its fallbacks (docs/operations.md#no-token-without-its-record): one commit for the
records waiting together, the spool when the database cannot take them, 503 when neither can."""

from __future__ import annotations

import threading

import pytest
from django.db import OperationalError

from exchange.audit import writer as writer_module
from exchange.audit.spool import Spool, SpoolError
from exchange.audit.writer import AuditWriter, spool_drain
from exchange.models import ExchangeRecord

from .test_spool import record


def test_records_waiting_together_share_one_commit(tmp_path, monkeypatch):
    """The leader writes every record that queued while it committed: 40 writers, few batches."""
    batches: list[int] = []
    release = threading.Event()
    first_batch_entered = threading.Event()

    def insert(records):
        batches.append(len(records))
        first_batch_entered.set()
        release.wait(5)  # the first commit "takes a while": the others queue meanwhile
        return len(records)

    monkeypatch.setattr(writer_module, "_insert", insert)
    audit = AuditWriter(Spool(tmp_path))
    results: list[bool] = []
    leader = threading.Thread(target=lambda: results.append(audit.write({"n": 0})))
    leader.start()
    assert first_batch_entered.wait(5)
    followers = [threading.Thread(target=lambda i=i: results.append(audit.write({"n": i}))) for i in range(1, 40)]
    for thread in followers:
        thread.start()
    while len(audit._queue) < 39:  # every follower has queued behind the leader
        threading.Event().wait(0.01)
    release.set()
    for thread in [leader, *followers]:
        thread.join(5)
    assert results == [True] * 40
    assert batches == [1, 39]  # two commits for 40 records
    assert audit.commits == 2 and audit.records == 40


def test_no_caller_writes_other_peoples_batches_under_steady_load(tmp_path, monkeypatch):
    """The lead passes on after one batch: under load that never pauses, each caller's answer
    waits for its own batch (and the one before it), never for the whole queue to empty."""
    led: dict[int, int] = {}

    def insert(records):
        me = threading.get_ident()
        led[me] = led.get(me, 0) + 1
        threading.Event().wait(0.002)  # a commit takes a moment: others queue meanwhile
        return len(records)

    monkeypatch.setattr(writer_module, "_insert", insert)
    audit = AuditWriter(Spool(tmp_path))
    worst: list[int] = []

    def client() -> None:
        for _ in range(25):
            before = led.get(threading.get_ident(), 0)
            assert audit.write({})
            worst.append(led.get(threading.get_ident(), 0) - before)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(worst) == 200 and max(worst) == 1
    assert audit.records == 200 and audit.commits < 200  # still batched
    assert not audit._leading and not audit._queue


def test_a_follower_that_gives_up_leaves_the_queue_working(tmp_path, monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(writer_module, "_insert", lambda records: release.wait(5) and len(records))
    monkeypatch.setattr(writer_module, "FOLLOWER_TIMEOUT", 0.05)
    audit = AuditWriter(Spool(tmp_path))
    leader = threading.Thread(target=audit.write, args=({},))
    leader.start()
    while not audit._leading:
        threading.Event().wait(0.005)
    assert audit.write({}) is False  # timed out while queued: withdrawn, its request answers 503
    assert audit._queue == []
    release.set()
    leader.join(5)
    assert audit.write({}) is True and not audit._leading


@pytest.mark.django_db
def test_a_database_outage_spools_and_the_next_commit_drains(tmp_path, monkeypatch, tenant):
    audit = AuditWriter(Spool(tmp_path))
    real_insert = writer_module._insert

    def down(records):
        raise OperationalError("the database is restarting")

    monkeypatch.setattr(writer_module, "_insert", down)
    lost = [record(tenant) for _ in range(3)]
    assert all(audit.write(fields) for fields in lost)  # durable: in the spool
    assert audit.spool.pending() == 3 and ExchangeRecord.objects.count() == 0

    monkeypatch.setattr(writer_module, "_insert", real_insert)
    monkeypatch.setattr(writer_module, "DRAIN_INTERVAL", 0)
    assert audit.write(record(tenant))
    assert ExchangeRecord.objects.count() == 4 and audit.spool.pending() == 0
    assert spool_drain(audit.spool) == 0


@pytest.mark.django_db
def test_a_record_durable_nowhere_is_reported(tmp_path, monkeypatch, tenant):
    audit = AuditWriter(Spool(tmp_path))
    monkeypatch.setattr(writer_module, "_insert", lambda records: (_ for _ in ()).throw(OperationalError("down")))

    def full(records):
        raise SpoolError("No space left on device")

    monkeypatch.setattr(audit.spool, "append", full)
    assert audit.write(record(tenant)) is False


@pytest.mark.django_db(transaction=True)  # a real commit
def test_a_record_whose_rule_and_issuer_were_deleted_meanwhile_is_still_stored(tmp_path, tenant, issuer, allow_rule):
    """The record keeps names, not references: nothing the configuration does refuses it (and a
    deleted rule never rewrites old records). A field it no longer has (an older release's spool
    line) is ignored."""
    rule_id = allow_rule.pk
    allow_rule.delete()
    issuer.delete()
    audit = AuditWriter(Spool(tmp_path))
    assert audit.write(record(tenant, rule_id=rule_id, issuer_id=12345, rule_name="gone", issuer_ref="ci"))
    stored = ExchangeRecord.objects.get()
    assert (stored.rule_name, stored.issuer_ref) == ("gone", "ci")


@pytest.mark.django_db
def test_no_token_when_its_record_can_be_made_durable_nowhere(
    client, settings, tmp_path, monkeypatch, upstream, allow_rule
):
    """Database down and spool full → 503, and nothing issued (docs/design/audit-path.md#when-nothing-is-durable)."""
    settings.JWTEX_AUDIT_SPOOL_DIR = str(tmp_path / "spool")
    monkeypatch.setattr(writer_module, "_insert", lambda records: (_ for _ in ()).throw(OperationalError("down")))

    def full(self, records):
        raise SpoolError("No space left on device")

    monkeypatch.setattr(Spool, "append", full)
    response = client.post("/t/acme/exchange", upstream.mint(), content_type="application/jwt")
    assert response.status_code == 503 and response.json()["error"] == "temporarily_unavailable"
    assert b"eyJ" not in response.content


@pytest.mark.django_db
def test_with_the_database_down_tokens_are_issued_with_their_record_in_the_spool(
    client, settings, tmp_path, monkeypatch, upstream, allow_rule
):
    settings.JWTEX_AUDIT_SPOOL_DIR = str(tmp_path / "spool")
    monkeypatch.setattr(writer_module, "_insert", lambda records: (_ for _ in ()).throw(OperationalError("down")))
    response = client.post("/t/acme/exchange", upstream.mint(), content_type="application/jwt")
    assert response.status_code == 200
    spool = Spool(tmp_path / "spool")
    assert spool.pending() == 1


@pytest.mark.django_db
def test_at_exit_a_process_writes_what_it_spooled(tmp_path, settings, monkeypatch, tenant):
    """What a web process spooled while the database was away is written when it ends (SIGTERM:
    a replaced container may have no successor to drain its file); a database still away at
    exit leaves it in the spool."""
    settings.JWTEX_AUDIT_SPOOL_DIR = str(tmp_path / "spool")
    audit = writer_module.audit_writer()
    real_insert = writer_module._insert

    def down(records):
        raise OperationalError("the database is restarting")

    monkeypatch.setattr(writer_module, "_insert", down)
    spooled = [record(tenant) for _ in range(3)]
    assert all(audit.write(fields) for fields in spooled)
    assert writer_module.flush_at_exit() == 0  # still away: nothing lost, the file stays
    assert audit.spool.pending() == 3 and ExchangeRecord.objects.count() == 0

    monkeypatch.setattr(writer_module, "_insert", real_insert)
    assert writer_module.flush_at_exit() == 3
    assert audit.spool.pending() == 0
    assert {r.record_id for r in ExchangeRecord.objects.all()} == {fields["record_id"] for fields in spooled}


EXIT_SCRIPT = """
import threading, uuid
from datetime import UTC, datetime
import jwtex_site.wsgi  # what a server's worker loads: registers the flush at exit
from exchange.audit.writer import audit_writer
from tenants.models import Tenant
for thread in threading.enumerate():  # the drain at start, over before this process spools
    if thread.name == "jwtex-audit-drain":
        thread.join(10)
tenant = Tenant.objects.create(slug="acme", name="Acme")
audit_writer().spool.append([{"record_id": str(uuid.uuid4()), "tenant_id": tenant.pk, "created_at":
    datetime.now(UTC), "endpoint": "raw", "decision": "allowed", "status_code": 200, "issued_jti": "j1"}])
print(audit_writer().spool.pending(), flush=True)
"""


def test_a_web_process_flushes_its_spool_when_it_ends(tmp_path):
    """The WSGI module registers the flush in the process that loads it, and it runs at a normal
    end (how granian's and gunicorn's workers end after SIGTERM: tests/deploy/ and the served tests
    see it in real servers)."""
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "jwtex_site.settings",
        "JWTEX_VAR_DIR": str(tmp_path / "var"),
        "JWTEX_KEY_ENCRYPTION_KEYS": "test-key-encryption-key-0123456789abcdef",
        "JWTEX_LOG_LEVEL": "WARNING",
    }
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr
    run = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "1"  # spooled, and nothing drained it before the end
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from exchange.models import ExchangeRecord as R; "
            "from exchange.audit.writer import audit_writer; "
            "print(list(R.objects.values_list('issued_jti', flat=True)), "
            "audit_writer().spool.pending())",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.stdout.split("\n")[0] == "['j1'] 0", check.stdout + check.stderr


def test_a_record_whose_day_has_no_partition_yet_is_stored_even_inside_a_transaction(tmp_path, tenant):
    """On PostgreSQL the writer makes the day's partition (a clock far ahead, a year simulated by a
    test) and writes again; a caller's transaction survives the first refusal (a savepoint)."""
    from datetime import timedelta

    from django.utils import timezone

    at = timezone.now() + timedelta(days=400)
    audit = AuditWriter(Spool(tmp_path))
    assert audit.write(record(tenant, created_at=at))
    assert audit.spool.pending() == 0  # in the database, not spooled
    assert ExchangeRecord.objects.filter(created_at=at).count() == 1
