"""Retention under write load: a day's records removed by batched DELETE from one table, or by
dropping that day's partition (docs/scale.md#retention-at-volume). PostgreSQL only.

    .venv/bin/python bench/retention_benchmark.py [--rows 2000000] [--days 10] [--rate 800]

A throwaway database (``--database``, default ``jwtex_retention``; ``JWTEX_BENCH_POSTGRES`` as
for ``bench/scale_benchmark.py``), dropped at the end. The same records (``bench/audit_rows.py``:
``--rows`` over ``--days`` days) in two tables with the same columns and indexes: the audit table,
partitioned by day as this release makes it, and a plain copy. For each, while a writer inserts
records as the group commit does (a few per statement, ``--rate`` a second), the oldest day is
removed: the plain table by ``exchange_records_purge``'s batches (5,000 ids at a time), the
partitioned one by ``audit_partitions_drop`` (detached concurrently, dropped). Printed: how long
it took, the WAL it wrote, the writer's latency meanwhile, the table and index sizes before and
after (and after a VACUUM, for the plain table: the space is reusable, not returned).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from audit_rows import TENANTS, insert_sql
from http_benchmark import server_environment
from scale_benchmark import database_create, database_drop

PLAIN = "bench_plain_records"


def bench_setup(days: int, rows: int) -> None:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from exchange.audit.partitions import audit_partitions_create, audit_partitions_list
    from exchange.models import Issuer, Rule
    from exchange.services.tenants import tenant_create

    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        for name, start, _ in audit_partitions_list():
            if start is None:  # the empty partition of "before the upgrade": days instead, as in a year-old install
                cursor.execute(f"ALTER TABLE exchange_exchangerecord DETACH PARTITION {name}")
                cursor.execute(f"DROP TABLE {name}")
    now = timezone.now()
    audit_partitions_create(days=[now - timedelta(days=n) for n in range(-2, days + 1)])
    for slug in TENANTS:
        tenant = tenant_create(slug=slug, name=slug)
        for name in ("github", "gitlab"):
            Issuer.objects.create(tenant=tenant, issuer_id=name, issuer=f"https://{name}.example", audiences=["a"])
        for position, name in enumerate(("forks", "main", "deploy")):
            Rule.objects.create(
                tenant=tenant, position=position, name=name, effect="allow", when="true", any_owner=True
            )
    with connection.cursor() as cursor:
        cursor.execute(insert_sql("new", rows, days))
        cursor.execute(
            f"CREATE TABLE {PLAIN} (LIKE exchange_exchangerecord INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
            f"INCLUDING INDEXES INCLUDING IDENTITY)"
        )
        cursor.execute(f"INSERT INTO {PLAIN} SELECT * FROM exchange_exchangerecord ORDER BY created_at")
        cursor.execute(f"SELECT setval(pg_get_serial_sequence('{PLAIN}', 'id'), (SELECT max(id) FROM {PLAIN}))")
        cursor.execute("VACUUM ANALYZE exchange_exchangerecord")
        cursor.execute(f"VACUUM ANALYZE {PLAIN}")
    connection.close()


def _size(table: str) -> tuple[int, int, int]:
    from django.db import connection

    with connection.cursor() as cursor:
        if table == PLAIN:
            cursor.execute(
                f"SELECT pg_table_size(%s::regclass), pg_indexes_size(%s::regclass), (SELECT count(*) FROM {PLAIN})",
                [table, table],
            )
        else:
            cursor.execute(
                "SELECT sum(pg_table_size(inhrelid)), sum(pg_indexes_size(inhrelid)), "
                "(SELECT count(*) FROM exchange_exchangerecord) FROM pg_inherits "
                "WHERE inhparent = 'exchange_exchangerecord'::regclass"
            )
        return tuple(int(v) for v in cursor.fetchone())


class Writer(threading.Thread):
    """Inserts a few records per statement at ``rate`` a second into ``table``, timing each."""

    def __init__(self, table: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.table, self.pause, self.latencies, self.stop = table, 4 / rate, [], threading.Event()

    def run(self) -> None:
        import psycopg

        with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
            columns = (
                "tenant_id, created_at, endpoint, decision, error_code, status_code, reason, issuer_ref, "
                "rule_name, "
                "upstream_iss, upstream_sub, upstream_jti, issued_jti, issued_kid, issued_sub, issued_aud, "
                "mapper_outcome, mapper_error, record_id"
            )
            row = (
                "((SELECT min(id) FROM tenants_tenant), now(), 'raw', 'allowed', '', 200, '', 'github', 'main', "
                "'https://token.actions.githubusercontent.com', 'repo:octo-org/app:ref:refs/heads/main', "
                "gen_random_uuid()::text, md5(random()::text), 'kid', '', 'sts.amazonaws.com', '', '', "
                "gen_random_uuid())"
            )
            sql = f"INSERT INTO {self.table} ({columns}) VALUES {', '.join([row] * 4)}"
            while not self.stop.is_set():
                started = time.perf_counter()
                conn.execute(sql)
                self.latencies.append((time.perf_counter() - started) * 1000)
                time.sleep(max(0.0, self.pause - (time.perf_counter() - started)))


def _wal() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
        return int(cursor.fetchone()[0])


def _percentiles(values: list[float]) -> str:
    values = sorted(values)
    if not values:
        return "—"
    return (
        f"p50 {values[len(values) // 2]:.1f} ms, p99 {values[int(len(values) * 0.99)]:.1f} ms, max {values[-1]:.1f} ms"
    )


def _purge_plain(before) -> int:
    from django.db import connection

    deleted = 0
    with connection.cursor() as cursor:
        while True:
            cursor.execute(f"SELECT id FROM {PLAIN} WHERE created_at < %s LIMIT 5000", [before])
            ids = [row[0] for row in cursor.fetchall()]
            if not ids:
                return deleted
            cursor.execute(f"DELETE FROM {PLAIN} WHERE id = ANY(%s)", [ids])
            deleted += cursor.rowcount


def _run(name: str, table: str, purge, rate: float, before) -> dict:
    from django.db import connection

    before_size = _size(table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table} WHERE created_at < %s", [before])
        day = cursor.fetchone()[0]
    writer = Writer(table, rate)
    writer.start()
    time.sleep(3)  # the writer's latency before
    baseline = list(writer.latencies)
    wal, started = _wal(), time.monotonic()
    purge()
    took = time.monotonic() - started
    during = writer.latencies[len(baseline) :]
    wal = _wal() - wal
    time.sleep(1)
    writer.stop.set()
    writer.join(10)
    return {
        "name": name,
        "took": took,
        "wal": wal,
        "day": day,
        "before": before_size,
        "after": _size(table),
        "baseline": _percentiles(baseline),
        "during": _percentiles(during),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--rate", type=float, default=800.0)
    parser.add_argument("--database", default="jwtex_retention")
    args = parser.parse_args()
    os.environ.update(
        server_environment(Path(tempfile.mkdtemp(prefix="jwtex-bench-retention-")), database_create(args.database))
    )
    try:
        bench_setup(args.days, args.rows)
        from django.db import connection
        from django.utils import timezone

        from exchange.audit.partitions import audit_partitions_drop, audit_partitions_list

        oldest = min(stop for _, start, stop in audit_partitions_list() if start is not None)
        runs = [
            _run("batched DELETE, one table", PLAIN, lambda: _purge_plain(oldest), args.rate, oldest),
            _run(
                "DROP of the day's partition",
                "exchange_exchangerecord",
                lambda: audit_partitions_drop(before=oldest),
                args.rate,
                oldest,
            ),
        ]
        started = time.monotonic()
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM {PLAIN}")
        vacuum = time.monotonic() - started
        after_vacuum = _size(PLAIN)
        connection.close()
        print(
            f"jwtex retention benchmark — PostgreSQL, {args.rows:,} records over {args.days} days "
            f"({args.rows // args.days:,} a day); a writer inserting {args.rate:.0f} records/s meanwhile "
            f"({timezone.now():%Y-%m-%d})"
        )
        mb = 1024 * 1024
        for run in runs:
            print(
                f"\n{run['name']}: {run['day']:,} records in {run['took'] * 1000:,.0f} ms, "
                f"{run['wal'] / mb:,.1f} MiB of WAL"
            )
            print(f"  writer before: {run['baseline']}; during: {run['during']}")
            print(
                f"  table + indexes: {run['before'][0] / mb:,.0f} + {run['before'][1] / mb:,.0f} MiB before, "
                f"{run['after'][0] / mb:,.0f} + {run['after'][1] / mb:,.0f} MiB after"
            )
        print(
            f"  (the plain table after VACUUM, {vacuum:.1f} s: {after_vacuum[0] / mb:,.0f} + "
            f"{after_vacuum[1] / mb:,.0f} MiB — the space is reusable, not returned)"
        )
    finally:
        from django.db import connections

        connections.close_all()
        database_drop(args.database)


if __name__ == "__main__":
    main()
