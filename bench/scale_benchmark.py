"""The admin and the exchange as the audit table grows (docs/scale.md). ``make bench-scale``.

    .venv/bin/python bench/scale_benchmark.py [--sizes 0,1000000,4000000] [--days 30] [--repeat 5]

A fresh PostgreSQL database (``--database``, default ``jwtex_scale`` on the local server, or
``JWTEX_BENCH_POSTGRES=postgres://user@host:port``), dropped at the end. Five tenants with GitHub
and GitLab issuers and three rules each, 10,000 more with two rules each (10,005 in all), a
superuser and an operator of one tenant; ``make serve`` (one process, 8 threads). At each size,
records are added by SQL (``bench/audit_rows.py``: over the last ``--days`` days, 10 % denied)
through the partitioned table, so its trigger keeps the rollups; then VACUUM ANALYZE, as
autovacuum would. Printed per size: each page's median time over HTTP (``--repeat`` requests
after one to warm up) for the superuser and the operator, the exchange's p50/p99 at a fixed 100
exchanges/s (``wrk``), then the bytes each record takes with its indexes and the purge of a day.

``--release-before [REF]`` measures the release before instead (``REF``, default where this
branch left main, exported with ``git archive``): its schema (exchange 0010), records of its
shape, its server; its deep page is ``?p=1000`` and its purge the batched DELETE.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import timedelta
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from audit_rows import TENANTS, insert_sql
from http_benchmark import at_rate, free_port, server_environment

PASSWORD = "scale-benchmark-password"  # a throwaway database's users
RELEASE_BEFORE: Path | None = None  # the code of the release before, when it is the one measured
TARGET_MS, TARGET_GROWTH = 300, 1.5


def _server_url() -> str:
    return os.environ.get("JWTEX_BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432")


def database_create(name: str) -> str:
    import psycopg

    with psycopg.connect(f"{_server_url()}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{_server_url()}/{name}"


def database_drop(name: str) -> None:
    import psycopg

    with psycopg.connect(f"{_server_url()}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bench_setup(env: dict[str, str], days: int) -> dict:
    """Migrate; tenants, issuers, rules, users; daily partitions for the loaded days."""
    os.environ.update(env)
    import django

    django.setup()
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from exchange.audit.partitions import audit_partitions_ahead, audit_partitions_create, audit_partitions_list
    from exchange.models import Issuer, Rule
    from exchange.services.tenants import tenant_create
    from tenants.models import Membership, Tenant

    if RELEASE_BEFORE is not None:
        call_command("migrate", "exchange", "0010_revision", verbosity=0)
        for app in ("contenttypes", "auth", "admin", "sessions", "tenants"):
            call_command("migrate", app, verbosity=0)
    else:
        call_command("migrate", verbosity=0)
        # A running installation has a partition per day; a fresh one has an empty one for the past.
        legacy = [name for name, start, _ in audit_partitions_list() if start is None]
        now = timezone.now()
        with connection.cursor() as cursor:
            for name in legacy:
                cursor.execute(f"ALTER TABLE exchange_exchangerecord DETACH PARTITION {name}")
                cursor.execute(f"DROP TABLE {name}")
        audit_partitions_create(days=[now - timedelta(days=n) for n in range(days + 1)])
        audit_partitions_ahead(now=now)

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update({"kid": "bench", "alg": "RS256", "use": "sig"})
    tenants = {}
    for slug in TENANTS:
        tenant = tenants[slug] = tenant_create(slug=slug, name=slug.title(), rate_limit_per_minute=0)
        issuers = [
            Issuer.objects.create(
                tenant=tenant, issuer_id=name, issuer=url, audiences=[f"https://jwtex.example.com/t/{slug}"]
            )
            for name, url in (
                ("github", "https://token.actions.githubusercontent.com"),
                ("gitlab", "https://gitlab.com"),
            )
        ]
        for position, (name, effect) in enumerate((("forks", "deny"), ("main", "allow"), ("deploy", "allow"))):
            rule = Rule.objects.create(
                tenant=tenant,
                position=position,
                name=name,
                effect=effect,
                any_owner=True,
                when="claims.ref == 'refs/heads/nothing'",
                session_tags={"repository": "claims.repository"} if effect == "allow" else {},
            )
            rule.issuers.add(*issuers)
    acme = tenants["acme"]
    bench = Issuer.objects.create(
        tenant=acme,
        issuer_id="bench",
        issuer="https://ci.bench.invalid",
        audiences=["sts.amazonaws.com"],
        static_jwks={"keys": [jwk]},
    )
    rule = Rule.objects.create(
        tenant=acme,
        position=10,
        name="bench",
        effect="allow",
        when="claims.repository_owner == 'octo-org'",
        session_tags={"repository": "claims.repository", "ref": "claims.ref", "actor": "claims.actor"},
    )
    rule.issuers.add(bench)
    extra = Tenant.objects.bulk_create([Tenant(slug=f"t{n:05d}", name=f"Tenant {n}") for n in range(10_000)])
    Rule.objects.bulk_create(
        [
            Rule(tenant=t, position=p, name=f"rule {p}", effect="allow", when="true", any_owner=True)
            for t in extra
            for p in (1, 2)
        ]
    )
    users = get_user_model().objects
    users.create_superuser("root", "root@example.test", PASSWORD)
    operator = users.create_user("operator", password=PASSWORD, is_staff=True)
    Membership.objects.create(user=operator, tenant=acme, role="operator")
    stamp = int(time.time())
    claims = {
        "iss": "https://ci.bench.invalid",
        "aud": "sts.amazonaws.com",
        "sub": "repo:octo-org/app:ref:refs/heads/main",
        "iat": stamp,
        "nbf": stamp - 600,
        "exp": stamp + 3000,
        "repository": "octo-org/app",
        "repository_owner": "octo-org",
        "ref": "refs/heads/main",
        "actor": "octocat",
    }
    connection.close()
    return {"token": jwt.encode(claims, key, algorithm="RS256", headers={"kid": "bench"}), "acme": acme.pk}


def server_start(env: dict[str, str], port: int) -> subprocess.Popen:
    """``make serve``, one process of 8 threads (DEBUG off, as in production)."""
    log = open(Path(env["JWTEX_VAR_DIR"]) / "serve.log", "wb")  # the server's, while it runs
    env = {**env, "PORT": str(port), "HOST": "127.0.0.1", "WEB_CONCURRENCY": "1", "JWTEX_SERVER_THREADS": "8"}
    command, cwd = ["make", "-s", "-o", ".venv/.installed", "serve", f"PY={sys.executable}"], BENCH.parent
    if RELEASE_BEFORE is not None:  # make serve's own command, in the release before's tree
        command, cwd, env = (
            [sys.executable, "-m", "jwtex_site.serve"],
            RELEASE_BEFORE,
            {**env, "PYTHONPATH": str(RELEASE_BEFORE)},
        )
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return process
        except OSError:
            if process.poll() is not None:
                log_text = (Path(env["JWTEX_VAR_DIR"]) / "serve.log").read_text()
                raise SystemExit("make serve exited:\n" + log_text[-2000:]) from None
            time.sleep(0.2)
    raise SystemExit("make serve did not come up within 30 s")


def _load(rows: int, days: int) -> float:
    from django.db import connection

    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute(insert_sql("old" if RELEASE_BEFORE else "new", rows, days))
    connection.close()
    with connection.cursor() as cursor:  # autocommit: VACUUM cannot run in a transaction
        cursor.execute("VACUUM ANALYZE exchange_exchangerecord")
        if RELEASE_BEFORE is None:
            cursor.execute("VACUUM ANALYZE exchange_auditrollup")
    return time.monotonic() - started


class Browser:
    def __init__(self, base: str, username: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        login = self.get("/admin/login/")[1]
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login)[1]
        body = urllib.parse.urlencode(
            {"csrfmiddlewaretoken": token, "username": username, "password": PASSWORD, "next": "/admin/"}
        ).encode()
        with self.opener.open(urllib.request.Request(self.base + "/admin/login/", data=body), timeout=60) as answer:
            if "/admin/login/" in answer.geturl():
                raise SystemExit(f"{username} could not log in")

    def get(self, path: str) -> tuple[float, str]:
        started = time.perf_counter()
        with self.opener.open(self.base + path, timeout=120) as answer:
            body = answer.read().decode()
            if answer.status != 200:
                raise SystemExit(f"{path}: HTTP {answer.status}")
        return (time.perf_counter() - started) * 1000, body


def _pages(acme: int, size: int) -> dict[str, str]:
    from django.db import connection
    from django.utils import timezone

    jti = "0" * 32
    if size:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT issued_jti FROM exchange_exchangerecord WHERE tenant_id = %s AND issued_jti <> '' "
                "AND created_at < now() - interval '10 days' LIMIT 1",
                [acme],
            )
            jti = cursor.fetchone()[0]
        connection.close()
    deep = (timezone.now() - timedelta(days=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
    records = "/admin/exchange/exchangerecord/"
    return {
        "audit list": records,
        "filter decision = denied": records + "?decision__exact=denied",
        "search by jti": records + "?q=" + jti,
        "a deep page (20 days back)": records + ("?p=1000" if RELEASE_BEFORE else "?before=" + deep),
        "tenant Overview": f"/admin/tenants/tenant/{acme}/overview/",
        "rule list (10,005 tenants)": "/admin/exchange/rule/",
    }


def _time_pages(browsers: dict[str, Browser], pages: dict[str, str], repeat: int) -> dict[tuple[str, str], float]:
    times = {}
    for page, path in pages.items():
        for who, browser in browsers.items():
            browser.get(path)
            times[page, who] = statistics.median(browser.get(path)[0] for _ in range(repeat))
    return times


def _sizes(rebuild: bool = False) -> dict:
    """Rows, table and index bytes. ``rebuild``: the indexes first built again, as they are when
    records arrive in time order (a service appends to each index; the benchmark's second load
    went into the middle of the first's, leaving half-full pages)."""
    from django.db import connection

    with connection.cursor() as cursor:
        if rebuild:
            cursor.execute("REINDEX TABLE exchange_exchangerecord")
        cursor.execute("SELECT count(*) FROM exchange_exchangerecord")
        rows = cursor.fetchone()[0]
        if RELEASE_BEFORE is not None:  # one table
            cursor.execute(
                "SELECT pg_table_size('exchange_exchangerecord'), pg_indexes_size('exchange_exchangerecord')"
            )
            table, indexes = cursor.fetchone()
            cursor.execute(
                "SELECT c.relname, pg_relation_size(c.oid) FROM pg_index x JOIN pg_class c "
                "ON c.oid = x.indexrelid WHERE x.indrelid = 'exchange_exchangerecord'::regclass "
                "ORDER BY 2 DESC"
            )
            return {"rows": rows, "table": table, "indexes": indexes, "per_index": cursor.fetchall(), "rollups": 0}
        cursor.execute("""
            SELECT sum(pg_table_size(c.oid)), sum(pg_indexes_size(c.oid)) FROM pg_inherits i
            JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'exchange_exchangerecord'::regclass""")
        table, indexes = cursor.fetchone()
        cursor.execute("""
            SELECT ci.relname, sum(pg_relation_size(pi.inhrelid)) FROM pg_index x
            JOIN pg_class ci ON ci.oid = x.indexrelid
            JOIN pg_inherits pi ON pi.inhparent = x.indexrelid
            WHERE x.indrelid = 'exchange_exchangerecord'::regclass GROUP BY 1 ORDER BY 2 DESC""")
        per_index = cursor.fetchall()
        cursor.execute("SELECT count(*) FROM exchange_auditrollup")
        rollups = cursor.fetchone()[0]
    connection.close()
    return {"rows": rows, "table": table, "indexes": indexes, "per_index": per_index, "rollups": rollups}


def _purge_a_day(days: int) -> dict:
    """Every tenant's retention set so that the oldest loaded day expires; the daily sweep's work."""
    from django.db import connection
    from django.utils import timezone

    from exchange.services.audit import audit_retention_sweep, exchange_records_purge
    from tenants.models import Tenant

    Tenant.objects.update(audit_retention_days=days - 1)
    before = _sizes()["rows"]
    started = time.monotonic()
    if RELEASE_BEFORE is not None:
        dropped, deleted = [], _purge_before(days - 1)
    else:
        dropped = audit_retention_sweep(now=timezone.now())["dropped"]
        deleted = sum(
            exchange_records_purge(tenant=t, now=timezone.now()) for t in Tenant.objects.filter(slug__in=TENANTS)
        )
    swept = time.monotonic() - started
    total = time.monotonic() - started
    after = _sizes()["rows"]
    connection.close()
    return {"dropped": dropped, "rows": before - after, "sweep_s": swept, "total_s": total, "deleted": deleted}


def _purge_before(retention_days: int) -> int:
    """The release before's purge: each tenant's records older than its retention, 5,000 ids at a time."""
    from django.db import connection

    deleted = 0
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM tenants_tenant WHERE slug = ANY(%s)", [list(TENANTS)])
        for (tenant,) in cursor.fetchall():
            while True:
                cursor.execute(
                    "SELECT id FROM exchange_exchangerecord WHERE tenant_id = %s AND created_at < "
                    "now() - make_interval(days => %s) LIMIT 5000",
                    [tenant, retention_days],
                )
                ids = [row[0] for row in cursor.fetchall()]
                if not ids:
                    break
                cursor.execute("DELETE FROM exchange_exchangerecord WHERE id = ANY(%s)", [ids])
                deleted += cursor.rowcount
    return deleted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,1000000,4000000")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--database", default="jwtex_scale")
    parser.add_argument("--keep", action="store_true", help="keep the database (to look at it) instead of dropping it")
    parser.add_argument("--release-before", nargs="?", const="", default=None, metavar="REF")
    args = parser.parse_args()
    global RELEASE_BEFORE
    if args.release_before is not None:
        from upgrade_benchmark import old_release

        RELEASE_BEFORE = old_release(args.release_before, Path(tempfile.mkdtemp(prefix="jwtex-release-before-")))
    sizes = [int(s) for s in args.sizes.split(",")]
    var = Path(tempfile.mkdtemp(prefix="jwtex-bench-scale-"))
    env = {**server_environment(var, database_create(args.database)), "DJANGO_DEBUG": "0"}
    server = None
    try:
        setup = bench_setup(env, args.days)
        port = free_port()
        server = server_start(env, port)
        base = f"http://127.0.0.1:{port}"
        exchange_url = f"{base}/t/acme/exchange?issuerId=bench"
        results, loaded = {}, 0
        for size in sizes:
            load = _load(size - loaded, args.days) if size > loaded else 0.0
            loaded = max(size, loaded)
            browsers = {"superuser": Browser(base, "root"), "operator": Browser(base, "operator")}
            exchange = at_rate(exchange_url, setup["token"], rate=100, seconds=8)
            results[size] = {
                "pages": _time_pages(browsers, _pages(setup["acme"], size), args.repeat),
                "exchange": exchange,
                "load_s": load,
            }
            print(
                f"  {size:>9,} rows: loaded in {load:.0f} s; exchange p50 {exchange['p50']:.2f} ms "
                f"p99 {exchange['p99']:.2f} ms",
                flush=True,
            )
        sizes_after = _sizes(rebuild=True)
        purge = _purge_a_day(args.days)
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        from django.db import connections

        connections.close_all()
        if not args.keep:
            database_drop(args.database)
    _report(results, sizes, sizes_after, purge)


def _report(results: dict, sizes: list[int], stored: dict, purge: dict) -> None:
    release = "the release before" if RELEASE_BEFORE else "this release"
    print(
        f"\njwtex scale benchmark, {release} — PostgreSQL, make serve (granian, 1 process × 8 threads); "
        f"median of requests, ms"
    )
    header = "| page | who | " + " | ".join(f"{s:,} rows" for s in sizes) + " |"
    print(header)
    print("|" + "---|" * (2 + len(sizes)))
    pages = list(results[sizes[0]]["pages"])
    verdicts = []
    for page, who in pages:
        times = [results[s]["pages"][page, who] for s in sizes]
        print(f"| {page} | {who} | " + " | ".join(f"{t:.0f}" for t in times) + " |")
        if len(sizes) >= 2 and sizes[-1] > 0:
            ok = times[-1] <= TARGET_MS and times[-1] <= TARGET_GROWTH * max(times[-2], 1.0)
            verdicts.append(ok or f"{page} ({who}): {times[-1]:.0f} ms")
    print(
        "| exchange p50 / p99 (100/s) | — | "
        + " | ".join(f"{results[s]['exchange']['p50']:.2f} / {results[s]['exchange']['p99']:.2f}" for s in sizes)
        + " |"
    )
    rows = max(stored["rows"], 1)
    print(
        f"\nstored (indexes rebuilt, as when records arrive in time order): {stored['rows']:,} records; "
        f"{(stored['table'] + stored['indexes']) / rows:.0f} bytes per record "
        f"({stored['table'] / rows:.0f} table + {stored['indexes'] / rows:.0f} indexes); "
        f"{stored['rollups']:,} rollup rows"
    )
    print("  per index: " + ", ".join(f"{name} {size / rows:.1f}" for name, size in stored["per_index"]))
    print(
        f"purge of a day: {purge['rows']:,} records in {purge['total_s'] * 1000:.0f} ms "
        f"(partitions dropped: {', '.join(purge['dropped']) or 'none'}; "
        f"rows deleted one by one: {purge['deleted']:,})"
    )
    failed = [v for v in verdicts if v is not True]
    print(
        f"targets (≤ {TARGET_MS} ms at the largest size and ≤ {TARGET_GROWTH}× the size before): "
        + ("all met" if not failed else "missed by " + "; ".join(failed))
    )


if __name__ == "__main__":
    main()
