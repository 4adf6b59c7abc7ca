"""The audit rollups are exact (docs/scale.md#rollups): after a mixed load — group commits from many threads,
a record written twice, records spooled while the database was away and drained (one of them
already stored), rows written by the ORM — and after the retention purge, they equal a count of
the records, group by group, with each group's latest time and reason and the candidate
report's kinds of divergence (``REPORT_KINDS``, whose conditions the trigger repeats in SQL)."""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from exchange.audit import writer as writer_module
from exchange.audit.spool import Spool
from exchange.audit.writer import AuditWriter, record_id_new, spool_drain
from exchange.models import AuditRollup, ExchangeRecord
from exchange.services.audit import audit_retention_sweep, exchange_records_purge
from exchange.services.shadow import REPORT_KINDS

pytestmark = pytest.mark.django_db(transaction=True)  # real commits, as in production

SHADOWS = [
    None,
    {"decision": "denied", "rule": "strict", "differs": ["decision"], "tags_differ": True},  # would deny (+ tags)
    {"decision": "allowed", "rule": "main", "differs": ["session_tags"], "tags_differ": True},  # tags
    {"decision": "allowed", "rule": "main", "differs": ["subject"], "tags_differ": False},  # other
    {"decision": "not evaluated", "rule": "mapper", "why": "a mapper rule"},  # other
]
DENIED_SHADOWS = [
    None,
    {"decision": "allowed", "rule": "open", "differs": ["decision"], "tags_differ": True},  # allow
    {"decision": "denied", "rule": "other", "differs": ["rule"], "tags_differ": False},
]  # other


def _record(tenant, at: datetime, n: int) -> dict:
    denied = n % 4 == 0
    fields = {
        "record_id": record_id_new(at),
        "tenant_id": tenant.pk,
        "created_at": at,
        "endpoint": "raw",
        "decision": "denied" if denied else "allowed",
        "status_code": 403 if denied else 200,
        "rule_name": ["main", "deploy", ""][n % 3],
        "upstream_sub": f"repo:octo-org/app-{n % 5}",
    }
    if denied:
        fields.update(
            error_code=["access_denied", "invalid_token"][n % 2], reason=f"reason {n}", shadow=DENIED_SHADOWS[n % 3]
        )
    else:
        fields.update(issued_jti=uuid.uuid4().hex, shadow=SHADOWS[n % 5])
    return fields


def _hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def counted_from_records() -> dict:
    groups: dict = defaultdict(lambda: {"count": 0, "last": None, "shadow": 0, **{k: 0 for k in REPORT_KINDS}})
    for row in ExchangeRecord.objects.order_by("created_at", "id").values(
        "tenant_id", "created_at", "decision", "error_code", "rule_name", "reason", "shadow"
    ):
        group = groups[row["tenant_id"], _hour(row["created_at"]), row["decision"], row["error_code"], row["rule_name"]]
        group["count"] += 1
        group["last"] = (row["created_at"], row["reason"])
        group["shadow"] += row["shadow"] is not None
    for kind, (_, condition) in REPORT_KINDS.items():
        for row in ExchangeRecord.objects.filter(condition).values(
            "tenant_id", "created_at", "decision", "error_code", "rule_name"
        ):
            key = (row["tenant_id"], _hour(row["created_at"]), row["decision"], row["error_code"], row["rule_name"])
            groups[key][kind] += 1
    return {key: dict(group) for key, group in groups.items()}


def counted_by_rollups() -> dict:
    groups: dict = {}
    for row in AuditRollup.objects.order_by("last_seen").values():
        key = (row["tenant_id"], row["hour"], row["decision"], row["error_code"], row["rule_name"])
        group = groups.setdefault(key, {"count": 0, "last": None, "shadow": 0, **{k: 0 for k in REPORT_KINDS}})
        group["count"] += row["count"]
        group["last"] = (row["last_seen"], row["last_reason"])
        group["shadow"] += row["shadow_count"]
        for kind in REPORT_KINDS:
            group[kind] += row[f"shadow_{kind}"]
    return groups


def test_the_rollups_count_every_stored_record_once_through_the_purge(tmp_path, tenant, other_tenant, monkeypatch):
    now = timezone.now()
    minutes = [1, 2, 61, 62, 130, 60 * 30, 60 * 30 + 1]
    times = [now - timedelta(minutes=m, microseconds=n) for n, m in enumerate(minutes)]
    times += [now - timedelta(days=100, microseconds=n) for n in range(3)]  # past the default retention
    audit = AuditWriter(Spool(tmp_path / "spool"))
    records = [_record(t, at, n) for n, (t, at) in enumerate((t, at) for at in times for t in (tenant, other_tenant))]
    records += [_record(tenant, now - timedelta(minutes=5, microseconds=n), n) for n in range(40)]

    # Group commits from eight threads at once.
    def write_all(chunk: list[dict]) -> None:
        for fields in chunk:
            audit.write(dict(fields))
        connection.close()  # this thread's

    threads = [threading.Thread(target=write_all, args=(records[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert ExchangeRecord.objects.count() == len(records)
    assert audit.write(dict(records[0]))  # written twice: stored (and counted) once

    # The database goes away: these records are spooled, then drained; one was stored already.
    spooled = [_record(other_tenant, now - timedelta(minutes=3, microseconds=n), n) for n in range(6)]
    real_insert = writer_module._insert
    monkeypatch.setattr(writer_module, "_insert", lambda batch: (_ for _ in ()).throw(OperationalError("down")))
    assert all(audit.write(dict(r)) for r in spooled[:5])
    monkeypatch.setattr(writer_module, "_insert", real_insert)
    audit.spool.append([dict(records[1]), dict(spooled[5])])
    assert spool_drain(audit.spool) == 7 and spool_drain(audit.spool) == 0

    # Rows the ORM writes count too (fixtures, tools, an older release during an upgrade).
    ExchangeRecord.objects.create(
        tenant=tenant,
        created_at=now - timedelta(minutes=7),
        endpoint="api",
        decision="denied",
        status_code=401,
        error_code="invalid_token",
        reason="by the ORM",
    )
    ExchangeRecord.objects.bulk_create(
        [
            ExchangeRecord(
                tenant=tenant,
                created_at=now - timedelta(hours=5, seconds=s),
                endpoint="rfc8693",
                decision="allowed",
                status_code=200,
            )
            for s in range(3)
        ]
    )

    expected = counted_from_records()
    assert sum(group["count"] for group in expected.values()) == len(records) + 6 + 4
    assert all(sum(group[kind] for group in expected.values()) for kind in REPORT_KINDS)  # every kind is in the load
    assert counted_by_rollups() == expected

    # Retention: the records 100 days old go, and a one-day retention cuts into the other tenant's.
    other_tenant.audit_retention_days = 1
    other_tenant.save()
    audit_retention_sweep(now=now)
    purged = sum(exchange_records_purge(tenant=t, now=now) for t in (tenant, other_tenant))
    assert purged > 0
    after = counted_from_records()
    assert sum(group["count"] for group in after.values()) < sum(group["count"] for group in expected.values())
    assert not ExchangeRecord.objects.filter(created_at__lt=now - timedelta(days=90)).exists()
    assert counted_by_rollups() == after
