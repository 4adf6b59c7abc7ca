"""The audit table's upgrade from the shape before (migrations 0011–0013) and its partitions.

SQLite migrates simply, rows and all. On PostgreSQL the online upgrade runs for real against a
table of the old shape built in a schema of its own (``jwtex_scratch``, first on the search
path, so every unqualified name the code uses means it): its rows stay readable, old code's
INSERTs keep working, the rollups are seeded exactly, a lock it cannot get at once is asked for
again rather than waited for, and the partitions are then made, used and dropped by day.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from exchange.audit import partitions
from exchange.audit.spool import Spool
from exchange.audit.writer import AuditWriter, record_id_new
from exchange.models import AuditRollup, ExchangeRecord
from exchange.services.audit import audit_retention_sweep, exchange_records_purge

from .test_rollups import counted_by_rollups, counted_from_records

pytestmark = pytest.mark.django_db(transaction=True)
BEFORE = ("exchange", "0010_revision")


def _latest(executor: MigrationExecutor) -> list:
    return [key for key in executor.loader.graph.leaf_nodes() if key[0] == "exchange"]


def _old_rows(OldRecord, tenant, now: datetime) -> None:
    """Records as the release before wrote them: whole claims, the issued subject repeated,
    foreign keys, and some from before record ids."""
    rows = []
    for n in range(40):
        denied = n % 5 == 0
        at = now - timedelta(hours=n * 3, microseconds=n)
        claims = (
            None
            if denied
            else {
                "iss": "https://jwtex.example.com/t/acme",
                "sub": f"repo:a/{n}",
                "aud": "sts",
                "iat": 1,
                "nbf": 1,
                "exp": 901,
                "jti": f"jti-{n}",
            }
        )
        rows.append(
            OldRecord(
                tenant_id=tenant.pk,
                created_at=at,
                endpoint="raw",
                decision="denied" if denied else "allowed",
                status_code=403 if denied else 200,
                error_code="access_denied" if denied else "",
                reason=f"why {n}",
                rule_name=["main", ""][n % 2],
                upstream_sub=f"repo:a/{n}",
                issued_sub="" if denied else f"repo:a/{n}",
                issued_jti="" if denied else f"jti-{n}",
                issued_claims=claims,
                shadow={"decision": "denied", "tags_differ": True} if n % 7 == 0 and not denied else None,
                record_id=None if n % 4 == 0 else uuid.uuid4(),
            )
        )
    OldRecord.objects.bulk_create(rows)


@pytest.mark.skipif("connection.vendor != 'sqlite'")
def test_sqlite_migrates_simply_rows_and_rollups(tenant):
    executor = MigrationExecutor(connection)
    latest = _latest(executor)
    now = timezone.now()
    try:
        executor.migrate([BEFORE])
        old_apps = executor.loader.project_state(BEFORE).apps
        _old_rows(old_apps.get_model("exchange", "ExchangeRecord"), tenant, now)
        executor = MigrationExecutor(connection)
    finally:
        executor.loader.build_graph()
        executor.migrate(latest)
    assert ExchangeRecord.objects.count() == 40
    record = ExchangeRecord.objects.get(issued_jti="jti-3")
    assert record.emitted_claims["sub"] == "repo:a/3" and record.issued_subject == "repo:a/3"
    assert counted_by_rollups() == counted_from_records()
    ExchangeRecord.objects.create(tenant=tenant, created_at=now, endpoint="raw", decision="allowed", status_code=200)
    assert counted_by_rollups() == counted_from_records()  # the trigger, made after the table was rebuilt


@pytest.fixture
def scratch(tenant):
    """The audit table and rollups of the release before, with rows, in schema jwtex_scratch."""
    if connection.vendor != "postgresql":
        pytest.skip("the online upgrade and the partitions are PostgreSQL's")
    executor = MigrationExecutor(connection)
    old_apps = executor.loader.project_state(BEFORE).apps
    OldRecord = old_apps.get_model("exchange", "ExchangeRecord")
    with connection.cursor() as cursor:
        cursor.execute("DROP SCHEMA IF EXISTS jwtex_scratch CASCADE")
        cursor.execute("CREATE SCHEMA jwtex_scratch")
        cursor.execute("SET search_path TO jwtex_scratch, public")
    try:
        with connection.schema_editor() as editor:
            editor.create_model(OldRecord)
            editor.create_model(AuditRollup)
        _old_rows(OldRecord, tenant, timezone.now())
        yield OldRecord
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET search_path TO DEFAULT")
            cursor.execute("DROP SCHEMA IF EXISTS jwtex_scratch CASCADE")


def _upgrade(**kwargs) -> list[str]:
    from exchange.migrations._audit_upgrade import upgrade

    said: list[str] = []
    upgrade(connection, say=kwargs.get("say", said.append))
    return said


def _old_insert(tenant, at: datetime) -> None:
    """An INSERT of the release before (its writer's columns, issuer and rule ids included)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO exchange_exchangerecord (tenant_id, created_at, endpoint, decision, error_code, status_code, "
            "reason, issuer_id, issuer_ref, rule_id, rule_name, upstream_iss, upstream_sub, upstream_jti, issued_jti, "
            "issued_kid, issued_sub, issued_aud, mapper_outcome, mapper_error, record_id) VALUES (%s, %s, 'raw', "
            "'allowed', '', 200, '', NULL, 'ci', NULL, 'main', '', 'repo:old', '', 'old-code', '', 'repo:old', '', '', "
            "'', %s) ON CONFLICT DO NOTHING",
            [tenant.pk, at, uuid.uuid4()],
        )


def test_the_online_upgrade_keeps_every_row_and_counts_it_once(scratch, tenant, tmp_path):
    said = _upgrade()
    assert any("took over" in line for line in said)
    names = {name for name, _, _ in partitions.audit_partitions_list()}
    assert "exchange_exchangerecord_legacy" in names and len(names) == 8  # the legacy one and a week ahead
    assert ExchangeRecord.objects.count() == 40
    old = ExchangeRecord.objects.get(issued_jti="jti-3")
    assert old.emitted_claims["jti"] == "jti-3" and old.issued_subject == "repo:a/3"
    assert counted_by_rollups() == counted_from_records()  # seeded from the rows there
    # The release before, still running during a rolling upgrade, keeps writing (and is counted).
    _old_insert(tenant, timezone.now())
    AuditWriter(Spool(tmp_path)).write(
        {
            "record_id": record_id_new(),
            "tenant_id": tenant.pk,
            "created_at": timezone.now(),
            "endpoint": "api",
            "decision": "denied",
            "status_code": 401,
            "error_code": "invalid_token",
            "reason": "new",
        }
    )
    assert ExchangeRecord.objects.count() == 42 and counted_by_rollups() == counted_from_records()
    newest = ExchangeRecord.objects.order_by("-id").first()
    assert newest.reason == "new" and newest.pk > old.pk  # ids go on
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = "
            "'exchange_exchangerecord_legacy'::regclass"
        )
        legacy_indexes = {row[0] for row in cursor.fetchall()}
        cursor.execute(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'exchange_exchangerecord_legacy'::regclass "
            "AND contype = 'f'"
        )
        assert cursor.fetchone()[0] == 0  # no foreign key checked on INSERTs any more
    assert len(legacy_indexes) == 10  # the partitioned table's, and no other
    assert _upgrade() == []  # done: a second run does nothing


def test_a_lock_the_upgrade_cannot_get_at_once_is_asked_for_again(scratch, tenant):
    import psycopg

    settings = connection.settings_dict
    holder_ready, go = threading.Event(), threading.Event()

    def hold() -> None:  # a long query of the running service: it holds the table while it runs
        with psycopg.connect(
            host=settings["HOST"] or None,
            port=settings["PORT"] or None,
            user=settings["USER"],
            password=settings["PASSWORD"] or None,
            dbname=settings["NAME"],
        ) as other:
            other.execute("LOCK TABLE jwtex_scratch.exchange_exchangerecord IN ACCESS SHARE MODE")
            holder_ready.set()
            go.wait(60)

    thread = threading.Thread(target=hold)
    thread.start()
    assert holder_ready.wait(30)
    said: list[str] = []

    def say(line: str) -> None:
        said.append(line)
        if "lock not granted" in line:
            go.set()  # the long query ends

    try:
        _upgrade(say=say)
    finally:
        go.set()
        thread.join(30)
    assert any("lock not granted within 2s (attempt 1)" in line for line in said)
    assert any("took over" in line for line in said) and ExchangeRecord.objects.count() == 40


def test_days_are_made_ahead_on_demand_and_dropped_past_every_retention(scratch, tenant, other_tenant, tmp_path):
    _upgrade()
    now = timezone.now()
    # The legacy partition goes like a day once every retention has passed its end.
    cutover = {name: stop for name, _, stop in partitions.audit_partitions_list()}["exchange_exchangerecord_legacy"]
    assert partitions.audit_partitions_drop(before=cutover) == ["exchange_exchangerecord_legacy"]
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    made = partitions.audit_partitions_create(days=[now - timedelta(days=n) for n in range(1, 4)])
    assert made == [f"exchange_exchangerecord_p{day - timedelta(days=n):%Y%m%d}" for n in (3, 2, 1)]
    assert partitions.audit_partitions_create(days=[now - timedelta(days=1)]) == []  # there already
    partitions.audit_partitions_ahead(now=now)
    audit = AuditWriter(Spool(tmp_path))
    for n, at in enumerate([now - timedelta(days=d, minutes=1) for d in (3, 2, 1, 0)] + [now + timedelta(days=20)]):
        for t in (tenant, other_tenant):
            assert audit.write(
                {
                    "record_id": record_id_new(at),
                    "tenant_id": t.pk,
                    "created_at": at,
                    "endpoint": "raw",
                    "decision": "allowed",
                    "status_code": 200,
                    "rule_name": f"r{n}",
                }
            )
    assert not audit.spool.pending()  # the day 20 days ahead got its partition from the writer
    assert f"exchange_exchangerecord_p{day + timedelta(days=20):%Y%m%d}" in {
        name for name, _, _ in partitions.audit_partitions_list()
    }
    tenant.audit_retention_days, other_tenant.audit_retention_days = 2, 1
    tenant.save()
    other_tenant.save()
    swept = audit_retention_sweep(now=now)
    assert swept["dropped"] == [f"exchange_exchangerecord_p{day - timedelta(days=3):%Y%m%d}"]  # past both
    assert exchange_records_purge(tenant=tenant, now=now) == 0  # its days went whole
    assert exchange_records_purge(tenant=other_tenant, now=now) == 1  # a shorter retention: a row deleted
    assert ExchangeRecord.objects.count() == 10 - 3
    assert counted_by_rollups() == counted_from_records()
