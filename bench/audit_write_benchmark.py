"""What making audit records durable costs, and the rollups' share of it (docs/scale.md#rollups).

    .venv/bin/python bench/audit_write_benchmark.py [--seconds 3] [--rounds 5]

On SQLite (a throwaway file, as ``make run`` has it) and on PostgreSQL (a throwaway database,
``JWTEX_BENCH_POSTGRES`` as for ``bench/scale_benchmark.py``): the group commit's own INSERT
(``exchange.audit.writer.records_store``) of one record and of a batch of 16, each its own transaction,
with the rollup trigger and with it switched off, in alternating rounds; the median time per
record of each. The records are an allowed exchange's, as ``attempt_record`` stores them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))


def _record(tenant_id: int, n: int) -> dict:
    from exchange.audit.writer import record_id_new

    now = datetime.now(UTC)
    return {
        "record_id": record_id_new(now),
        "tenant_id": tenant_id,
        "created_at": now,
        "endpoint": "raw",
        "decision": "allowed",
        "status_code": 200,
        "issuer_ref": "github",
        "rule_name": "main",
        "upstream_iss": "https://token.actions.githubusercontent.com",
        "upstream_sub": f"repo:octo-org/app-{n % 50}",
        "upstream_jti": f"{n:032x}",
        "upstream_aud": "https://jwtex.example.com/t/acme",
        "issued_jti": f"{n:032x}",
        "issued_kid": "kQ7gT1yUeVQ0Xg3L0dD6y2w3t9Rz4pN8mB5cH1aS2fE",
        "issued_aud": "sts.amazonaws.com",
        "issued_exp": now,
        "client_address": "10.1.2.3",
        "issued_claims_compact": {
            "iss": "https://jwtex.example.com/t/acme",
            "iat": int(now.timestamp()),
            "https://aws.amazon.com/tags": [{"repository": "octo-org/app", "ref": "main"}],
        },
    }


def _trigger(on: bool) -> None:
    from django.db import connection

    from exchange.migrations._audit_sql import SQLITE_TRIGGER, SQLITE_TRIGGER_DROP

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"ALTER TABLE exchange_exchangerecord {'ENABLE' if on else 'DISABLE'} TRIGGER exchange_audit_rollup"
            )
        else:
            cursor.execute(SQLITE_TRIGGER if on else SQLITE_TRIGGER_DROP)


def _per_record(tenant_id: int, batch: int, seconds: float) -> float:
    from exchange.audit.writer import records_store

    written, n, started = 0, 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        n += 1
        written += records_store([_record(tenant_id, n * batch + i) for i in range(batch)])
    return (time.perf_counter() - started) / written * 1e6


def run_one(seconds: float, rounds: int) -> None:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from tenants.models import Tenant

    call_command("migrate", verbosity=0)
    tenant = Tenant.objects.create(slug="acme", name="Acme")
    times: dict[tuple[int, bool], list[float]] = {}
    for _ in range(rounds):
        for batch in (1, 16):
            for trigger in (True, False):
                _trigger(trigger)
                times.setdefault((batch, trigger), []).append(_per_record(tenant.pk, batch, seconds))
    _trigger(True)
    name = "PostgreSQL" if connection.vendor == "postgresql" else "SQLite"
    for batch in (1, 16):
        on, off = statistics.median(times[batch, True]), statistics.median(times[batch, False])
        print(
            f"  {name:10} {batch:>2} per commit: {on:7.1f} µs a record with the rollups, {off:7.1f} without "
            f"({on - off:+.1f} µs, {100 * (on - off) / off:+.0f} %)"
        )
    connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return run_one(args.seconds, args.rounds)
    from http_benchmark import server_environment
    from scale_benchmark import database_create, database_drop

    print("jwtex audit write benchmark — the group commit's INSERT, each its own transaction (median of rounds)")
    var = Path(tempfile.mkdtemp(prefix="jwtex-bench-audit-"))
    for database in (f"sqlite:///{var / 'audit.sqlite3'}", None):
        url = database or database_create("jwtex_audit_write")
        env = {**server_environment(var, url), "DJANGO_SETTINGS_MODULE": "jwtex_site.settings"}
        try:
            subprocess.run(
                [sys.executable, __file__, "--one", f"--seconds={args.seconds}", f"--rounds={args.rounds}"],
                env=env,
                check=True,
            )
        finally:
            if database is None:
                database_drop("jwtex_audit_write")
    return None


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jwtex_site.settings")
    main()
