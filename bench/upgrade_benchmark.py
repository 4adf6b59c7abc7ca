"""The upgrade of a full audit table while the release before serves exchanges
(docs/scale.md#upgrading).

    .venv/bin/python bench/upgrade_benchmark.py [--rows 4000000] [--rate 100] [--old-ref REF]

A throwaway PostgreSQL database (``--database``, default ``jwtex_upgrade``; ``JWTEX_BENCH_POSTGRES``
as for ``bench/scale_benchmark.py``), dropped at the end:

1. migrated as the release before left it (exchange 0010), with ``--rows`` records of that shape
   made by SQL (``bench/audit_rows.py``, 30 days, five tenants, 10 % denied);
2. the release before (``--old-ref``, default: where this branch left main; exported with ``git
   archive``, nothing checked out) serving under ``make serve``'s server, and a client sending it
   ``--rate`` exchanges a second, each timed, from before the migration to after it;
3. this release's ``manage.py migrate`` (the online upgrade, migration 0013), timed step by step.

Printed: the migration's steps and time, the exchanges answered (and any other answer), their
latency during the migration (p50, p99, the worst), the audit records written for them (none may
be missing), and whether the rollups equal a count of the records afterwards.
"""

from __future__ import annotations

import argparse
import http.client
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from io import BytesIO
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

from audit_rows import TENANTS, insert_sql
from http_benchmark import free_port, server_environment
from scale_benchmark import database_create, database_drop

BEFORE = "0010_revision"


def old_release(ref: str, into: Path) -> Path:
    """The code of ``ref`` as files (``git archive``): the repository is not touched."""
    if not ref:
        ref = subprocess.run(
            ["git", "merge-base", "HEAD", "main"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def bench_setup(rows: int) -> str:
    """The release before's schema and records; returns an exchange token for tenant acme."""
    import django

    django.setup()
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa
    from django.core.management import call_command
    from django.db import connection

    from exchange.models import Issuer, Rule
    from exchange.services.tenants import tenant_create

    call_command("migrate", "exchange", BEFORE, verbosity=0)
    for app in ("contenttypes", "auth", "admin", "sessions", "tenants"):
        call_command("migrate", app, verbosity=0)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update({"kid": "bench", "alg": "RS256", "use": "sig"})
    for slug in TENANTS:
        tenant = tenant_create(slug=slug, name=slug, rate_limit_per_minute=0)
        for name, url in (("github", "https://token.actions.githubusercontent.com"), ("gitlab", "https://gitlab.com")):
            Issuer.objects.create(tenant=tenant, issuer_id=name, issuer=url, audiences=["a"])
        for position, (name, effect) in enumerate((("forks", "deny"), ("main", "allow"), ("deploy", "allow"))):
            Rule.objects.create(
                tenant=tenant, position=position, name=name, effect=effect, when="false", any_owner=True
            )
        if slug == "acme":
            bench = Issuer.objects.create(
                tenant=tenant,
                issuer_id="bench",
                issuer="https://ci.bench.invalid",
                audiences=["sts.amazonaws.com"],
                static_jwks={"keys": [jwk]},
            )
            rule = Rule.objects.create(
                tenant=tenant,
                position=10,
                name="bench",
                effect="allow",
                any_owner=True,
                when="claims.repository_owner == 'octo-org'",
                session_tags={"repository": "claims.repository", "ref": "claims.ref"},
            )
            rule.issuers.add(bench)
    with connection.cursor() as cursor:
        cursor.execute(insert_sql("old", rows, 30))
        cursor.execute("VACUUM ANALYZE exchange_exchangerecord")
    connection.close()
    stamp = int(time.time())
    claims = {
        "iss": "https://ci.bench.invalid",
        "aud": "sts.amazonaws.com",
        "sub": "repo:octo-org/app:ref:refs/heads/main",
        "iat": stamp,
        "nbf": stamp - 600,
        "exp": stamp + 7200,
        "repository": "octo-org/app",
        "repository_owner": "octo-org",
        "ref": "refs/heads/main",
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "bench"})


def _bytes_per_record() -> tuple[int, float]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), pg_total_relation_size('exchange_exchangerecord') FROM exchange_exchangerecord"
        )
        rows, size = cursor.fetchone()
    connection.close()
    return rows, size / max(rows, 1)


class Load:
    """``rate`` exchanges a second from four threads, each timed: (sent at, ms, status)."""

    def __init__(self, port: int, token: str, rate: float) -> None:
        self.port, self.token, self.pause = port, token.encode(), 4 / rate
        self.results: list[tuple[float, float, int]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(4)]

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        while not self.stop.is_set():
            started = time.time()
            try:
                conn.request(
                    "POST",
                    "/t/acme/exchange?issuerId=bench",
                    body=self.token,
                    headers={"Content-Type": "application/jwt"},
                )
                answer = conn.getresponse()
                answer.read()
                status = answer.status
            except OSError:
                status, conn = 0, http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            self.results.append((started, (time.time() - started) * 1000, status))
            time.sleep(max(0.0, self.pause - (time.time() - started)))

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)


def _serve_old(old: Path, env: dict[str, str], port: int) -> subprocess.Popen:
    log = open(Path(env["JWTEX_VAR_DIR"]) / "old-serve.log", "wb")  # the server's, while it runs
    process = subprocess.Popen(
        [sys.executable, "-m", "jwtex_site.serve"],
        cwd=old,
        start_new_session=True,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={
            **env,
            "PYTHONPATH": str(old),
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "WEB_CONCURRENCY": "1",
            "JWTEX_SERVER_THREADS": "8",
        },
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.3)
    log_text = (Path(env["JWTEX_VAR_DIR"]) / "old-serve.log").read_text()
    raise SystemExit("the release before did not start:\n" + log_text[-3000:])


def _check() -> dict:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM exchange_exchangerecord WHERE issuer_ref = 'bench'")
        written = cursor.fetchone()[0]
        cursor.execute("""
            WITH raw AS (SELECT tenant_id, date_trunc('hour', created_at, 'UTC') AS hour, decision, error_code,
                                rule_name,
                                count(*) AS n FROM exchange_exchangerecord GROUP BY 1, 2, 3, 4, 5),
                 rolled AS (SELECT tenant_id, hour, decision, error_code, rule_name, sum(count) AS n
                            FROM exchange_auditrollup GROUP BY 1, 2, 3, 4, 5)
            SELECT count(*) FROM raw FULL JOIN rolled USING (tenant_id, hour, decision, error_code, rule_name)
            WHERE raw.n IS DISTINCT FROM rolled.n""")
        mismatched = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM exchange_exchangerecord")
        rows = cursor.fetchone()[0]
    connection.close()
    return {"written": written, "mismatched_groups": mismatched, "rows": rows}


def _latencies(results: list, since: float, until: float) -> str:
    values = sorted(ms for sent, ms, _ in results if since <= sent <= until)
    if not values:
        return "none"
    return (
        f"{len(values):,} exchanges: p50 {values[len(values) // 2]:.1f} ms, "
        f"p99 {values[int(len(values) * 0.99)]:.1f} ms, "
        f"worst {values[-1]:,.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--old-ref", default="")
    parser.add_argument("--database", default="jwtex_upgrade")
    args = parser.parse_args()
    var = Path(tempfile.mkdtemp(prefix="jwtex-bench-upgrade-"))
    env = {**server_environment(var, database_create(args.database)), "DJANGO_DEBUG": "0"}
    os.environ.update(env)
    server = None
    try:
        old = old_release(args.old_ref, var / "old")
        started = time.monotonic()
        token = bench_setup(args.rows)
        rows, before = _bytes_per_record()
        print(
            f"{rows:,} records of the old shape made in {time.monotonic() - started:.0f} s: {before:.0f} bytes each "
            "with their indexes",
            flush=True,
        )
        port = free_port()
        server = _serve_old(old, env, port)
        load = Load(port, token, args.rate)
        load.start()
        time.sleep(10)
        migrate_from = time.time()
        migrated = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, capture_output=True, text=True
        )
        migrate_until = time.time()
        time.sleep(10)
        load.finish()
        if migrated.returncode:
            raise SystemExit("migrate failed:\n" + migrated.stdout[-3000:] + migrated.stderr[-3000:])
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
    checked = _check()
    answers: dict[int, int] = {}
    for _, _, status in load.results:
        answers[status] = answers.get(status, 0) + 1
    from django.db import connections

    connections.close_all()
    database_drop(args.database)
    print(f"\njwtex upgrade benchmark — {rows:,} records, the release before serving {args.rate:.0f} exchanges/s")
    print("migrate:\n" + "\n".join(f"  {line}" for line in migrated.stdout.splitlines() if line.strip()))
    print(f"  took {migrate_until - migrate_from:.1f} s")
    print(f"exchanges: {sum(answers.values()):,} sent, answers {dict(sorted(answers.items()))}")
    print(f"  before the migration: {_latencies(load.results, 0, migrate_from)}")
    print(f"  during it:             {_latencies(load.results, migrate_from, migrate_until)}")
    print(f"  after it:              {_latencies(load.results, migrate_until, time.time())}")
    ok = answers.get(200, 0)
    print(
        f"audit records of these exchanges: {checked['written']:,} for {ok:,} tokens issued"
        + (" — none missing" if checked["written"] >= ok else " — MISSING RECORDS")
    )
    print(
        f"rollups against a count of the {checked['rows']:,} records: "
        + (
            "equal in every group"
            if not checked["mismatched_groups"]
            else f"{checked['mismatched_groups']} groups differ"
        )
    )


if __name__ == "__main__":
    main()
