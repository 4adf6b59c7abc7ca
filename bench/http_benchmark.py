"""Served exchanges against their in-process ceiling (the README's "Performance"). ``make bench-http``.

    .venv/bin/python bench/http_benchmark.py [--server granian|gunicorn] [--threads 8] [--seconds 10] [--runs 3]
        [--without PIECE,…] [--pairs 1] [--table-seconds 5] [--no-tail] [--reusable-token] [--shadow]

- Database: ``DATABASE_URL``, else a fresh ``jwtex_bench`` database on the local PostgreSQL
  (127.0.0.1:5432), else SQLite in a temporary directory (said so in the output).
- The ceiling: the same work in this process, on core 0 — verify an RS256 upstream token, one CEL
  rule with three session tags, sign ES256 — with the same libraries.
- Served: ``make serve`` with one process pinned to core 0 (``taskset``), ``wrk`` on core 1
  driving the raw endpoint (``apt-get install wrk`` if it is missing): peak throughput, then a
  fixed rate at half of it for p50/p99.
- Audit: rows written vs 200s answered; database transactions per exchange (PostgreSQL's own
  counters); audit commits per exchange.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WRK_SCRIPT = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/jwt"
wrk.body = os.getenv("JWTEX_BENCH_TOKEN")
local interval = tonumber(os.getenv("JWTEX_BENCH_DELAY_MS") or "0")
statuses = {}
-- One-time tokens: a pool of distinct ones, each sent once from the offset on.
local pool, next_token = {}, 0
function init(args)
  local path = os.getenv("JWTEX_BENCH_TOKENS")
  if path and path ~= "" then
    for line in io.lines(path) do table.insert(pool, line) end
    next_token = tonumber(os.getenv("JWTEX_BENCH_TOKENS_FROM") or "0")
  end
end
function request()
  if #pool == 0 then return wrk.format() end
  next_token = next_token + 1
  return wrk.format(nil, nil, nil, pool[(next_token - 1) % #pool + 1])
end
function delay() return interval end
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
"""
# wrk runs response() in its own thread's Lua state: report through a summary file per thread.
WRK_SCRIPT += r"""
local threads = {}
function setup(thread) table.insert(threads, thread) end
function done(summary, latency, requests)
  local counts = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    for k, v in pairs(s) do counts[tostring(k)] = (counts[tostring(k)] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(counts) do table.insert(parts, string.format('"%s": %d', k, v)) end
  io.write("STATUSES {" .. table.concat(parts, ", ") .. "}\n")
  local cdf = {}
  local points = {1, 5, 10, 20, 30, 40, 50, 60, 70, 75, 80, 85, 90, 92, 94, 95, 96, 97, 98, 99, 99.5, 99.9, 99.99}
  for _, p in ipairs(points) do
    table.insert(cdf, string.format('"%s": %d', p, latency:percentile(p)))
  end
  table.insert(cdf, string.format('"100": %d', latency.max))
  io.write("CDF_US {" .. table.concat(cdf, ", ") .. "}\n")
  local e = summary.errors  -- a request that timed out or failed was sent all the same
  io.write(string.format("SENT %d\n", summary.requests + e.timeout + e.read + e.write))
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url_choose() -> tuple[str, str]:
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"], "DATABASE_URL"
    try:
        import psycopg

        for user in ("postgres", "root"):
            try:
                with psycopg.connect(
                    f"postgresql://{user}@127.0.0.1:5432/postgres", autocommit=True, connect_timeout=2
                ) as c:
                    c.execute("DROP DATABASE IF EXISTS jwtex_bench WITH (FORCE)")
                    c.execute("CREATE DATABASE jwtex_bench")
                return f"postgres://{user}@127.0.0.1:5432/jwtex_bench", "PostgreSQL (fresh jwtex_bench database)"
            except psycopg.OperationalError:
                continue
    except ImportError:
        pass
    return "", "SQLite (no PostgreSQL reachable)"


def server_environment(var: Path, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JWTEX_", "DJANGO_", "CELERY_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="jwtex_site.settings",
        JWTEX_VAR_DIR=str(var),
        JWTEX_KEY_ENCRYPTION_KEYS="benchmark-key-encryption-key-0123456789",
        JWTEX_RATE_LIMIT_PER_ADDRESS="0",
        JWTEX_LOG_LEVEL="WARNING",
        JWTEX_ACCESS_LOG="0",
        PYTHONPATH=str(ROOT),
    )
    if database_url:
        env["DATABASE_URL"] = database_url
    return env


def bench_setup(env: dict[str, str], *, shadow: bool = False, one_time: bool = False, limits: bool = False) -> dict:
    """Migrate, create tenant ``bench`` (issuer with a static JWKS, one rule, three tags), and
    return what the benchmark needs (an upstream token, the pieces for the ceiling). ``one_time``:
    the issuer takes each token once (replay protection); ``limits``: the tenant's rate limit
    counts every exchange (and never refuses one)."""
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    from exchange.models import Issuer, Rule
    from exchange.services.tenants import tenant_create

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update({"kid": "bench", "alg": "RS256", "use": "sig"})
    iss = "https://ci.bench.invalid"
    tenant = tenant_create(slug="bench", name="bench", rate_limit_per_minute=10**9 if limits else 0)
    issuer = Issuer.objects.create(
        tenant=tenant,
        issuer_id="github",
        issuer=iss,
        audiences=["sts.amazonaws.com"],
        static_jwks={"keys": [jwk]},
        replay_protection=one_time,
    )
    rule = Rule.objects.create(
        tenant=tenant,
        position=10,
        name="main",
        effect="allow",
        when="claims.repository_owner == 'octo-org' && claims.ref == 'refs/heads/main'",
        session_tags={"repository": "claims.repository", "ref": "claims.ref", "actor": "claims.actor"},
    )
    rule.issuers.add(issuer)
    if shadow:  # a candidate set (docs/operations.md#shadow-rules) deciding every exchange differently: the worst case
        candidate = Rule.objects.create(
            tenant=tenant,
            position=10,
            name="main",
            effect="allow",
            shadow=True,
            when="claims.repository_owner == 'octo-org'",
            session_tags={"repository": "claims.repository", "ref": "claims.ref"},
        )
        candidate.issuers.add(issuer)
    now = int(time.time())
    claims = {
        "iss": iss,
        "aud": "sts.amazonaws.com",
        "sub": "repo:octo-org/app:ref:refs/heads/main",
        "iat": now,
        "nbf": now - 600,
        "exp": now + 3000,
        "jti": "bench",
        "repository": "octo-org/app",
        "repository_owner": "octo-org",
        "ref": "refs/heads/main",
        "actor": "octocat",
        "workflow": "deploy",
    }
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "bench"})
    return {"token": token, "key": key, "claims": claims, "issuer_pk": issuer.pk}


def ceiling_measure(token: str, seconds: float = 3.0) -> float:
    """Exchanges per second of the same cryptography and rules in this process, on core 0."""
    from datetime import UTC, datetime

    from exchange.core.compact_jws import jwt_parse
    from exchange.core.minting import jwt_mint
    from exchange.core.rules.engine import compiled_rules_decide
    from exchange.core.verification import jwt_verify
    from exchange.runtime import tenant_runtime_get
    from exchange.upstream.issuer_keys import issuer_keys_get

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    runtime = tenant_runtime_get(slug="bench")
    issuer = runtime.issuers["github"]
    keys = issuer_keys_get(issuer=issuer, now=datetime.now(UTC)).keys

    def one() -> None:
        now = time.time()
        verified = jwt_verify(jwt_parse(token), issuer=issuer.config, keys=keys, now=now)
        decision = compiled_rules_decide(
            runtime.rules,
            issuer_id="github",
            claims=verified.claims,
            requested_audience=None,
            default_audience=runtime.default_audience,
            max_lifetime=runtime.max_token_lifetime,
        )
        jwt_mint(decision=decision, issuer=runtime.issuer_url, signer=runtime.signer, now=int(now))

    rates = []
    for _ in range(5):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 5:
            one()
            count += 1
        rates.append(count / (time.perf_counter() - start))
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    return statistics.median(rates)


def server_start(env: dict[str, str], port: int, server: str, threads: int) -> subprocess.Popen:
    taskset = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    serve_env = {
        **env,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "WEB_CONCURRENCY": "1",
        "JWTEX_SERVER": server,
        "JWTEX_SERVER_THREADS": str(threads),
    }
    log = open(Path(env["JWTEX_VAR_DIR"]) / "serve.log", "wb")  # the server's, while it runs
    process = subprocess.Popen(
        [*taskset, "make", "-s", "-o", ".venv/.installed", "serve", f"PY={sys.executable}"],
        cwd=ROOT,
        env=serve_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/t/bench/.well-known/jwks.json", timeout=1).read()
            return process
        except (urllib.error.URLError, ConnectionError, OSError):
            if process.poll() is not None:
                raise SystemExit(
                    "make serve exited:\n" + (Path(env["JWTEX_VAR_DIR"]) / "serve.log").read_text()[-2000:]
                ) from None
            time.sleep(0.2)
    raise SystemExit("make serve did not come up within 30 s")


def wrk_run(url: str, token, *, seconds: int, connections: int, delay_ms: float = 0.0) -> dict:
    """One wrk run; ``token`` is one token sent again and again, or a pool of one-time tokens
    (``http_ablation.Tokens``: each sent once, from where the last run stopped)."""
    script = Path(tempfile.mkdtemp(prefix="jwtex-wrk-")) / "exchange.lua"
    script.write_text(WRK_SCRIPT)
    taskset = ["taskset", "-c", "1"] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []
    env = {**os.environ, "JWTEX_BENCH_DELAY_MS": str(delay_ms)}
    if isinstance(token, str):
        env.update(JWTEX_BENCH_TOKEN=token, JWTEX_BENCH_TOKENS="")
    else:
        env.update(
            JWTEX_BENCH_TOKEN=token.token, JWTEX_BENCH_TOKENS=token.path, JWTEX_BENCH_TOKENS_FROM=str(token.used)
        )
    out = subprocess.run(
        [*taskset, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    if os.environ.get("JWTEX_BENCH_VERBOSE"):
        print(out)
    sent = int(re.search(r"SENT (\d+)", out)[1])
    if not isinstance(token, str):
        token.used += sent + connections  # those in flight as wrk stopped were sent too
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
    latencies = {m[1]: _ms(m[2]) for m in re.finditer(r"^\s+(50|75|90|99)%\s+([\d.]+\w+)", out, re.M)}
    statuses = json.loads(re.search(r"STATUSES (\{.*\})", out)[1])
    cdf = {float(p): us / 1000.0 for p, us in json.loads(re.search(r"CDF_US (\{.*\})", out)[1]).items()}
    return {
        "rate": rate,
        "p50": latencies.get("50"),
        "p99": latencies.get("99"),
        "statuses": statuses,
        "cdf": cdf,
        "sent": sent,
    }


def at_rate(url: str, token, *, rate: float, seconds: int, connections: int = 8) -> dict:
    """Load at a fixed ``rate``: each connection pauses between requests (wrk's ``delay``), the
    pause corrected once by a short probe for the time each request itself takes."""
    pause = 1000.0 * connections / rate
    probe = wrk_run(url, token, seconds=3, connections=connections, delay_ms=pause)
    per_request = 1000.0 * connections / probe["rate"] - pause  # ms each request took, on average
    run = wrk_run(url, token, seconds=seconds, connections=connections, delay_ms=max(pause - per_request, 0.0))
    return {**run, "probe_statuses": probe["statuses"]}


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def _db_counters() -> dict[str, int]:
    from django.db import connection

    from exchange.models import ExchangeRecord

    counters = {"rows": ExchangeRecord.objects.filter(decision="allowed").count()}
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            time.sleep(1.5)  # let the server's backends flush their statistics
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
            counters["transactions"] = cursor.fetchone()[0]
    connection.close()
    return counters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=["gunicorn", "granian"], default=os.environ.get("JWTEX_SERVER", "granian"))
    parser.add_argument("--threads", type=int, default=int(os.environ.get("JWTEX_SERVER_THREADS") or 8))
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=10, help="each load of the headline's runs")
    parser.add_argument("--runs", type=int, default=3, help="headline runs (medians)")
    parser.add_argument("--shadow", action="store_true", help="give the tenant a candidate (shadow) rule set")
    parser.add_argument(
        "--without", default=",".join(PIECES), help="the ablation table's rows (comma-separated; empty: no table)"
    )
    parser.add_argument("--pairs", type=int, default=1, help="interleaved pairs per row of the table")
    parser.add_argument("--table-seconds", type=int, default=5, help="each load of the table's runs")
    parser.add_argument("--no-tail", action="store_true", help="no timeline run")
    parser.add_argument(
        "--reusable-token",
        action="store_true",
        help="one token sent again and again (no one-time tokens: no jti mark, no pool to mint)",
    )
    parser.add_argument(
        "--pool", type=int, default=40_000, help="one-time tokens minted (each server run uses them once)"
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk (Debian's package)")

    var = Path(tempfile.mkdtemp(prefix="jwtex-bench-http-"))
    database_url, database = database_url_choose()
    # Production logging: one JSON line per exchange at INFO, and the server's access line (README, "Performance").
    env = {
        **server_environment(var, database_url),
        "JWTEX_LOG_LEVEL": "INFO",
        "JWTEX_ACCESS_LOG": "1",
        "JWTEX_RATE_LIMIT_PER_ADDRESS": str(10**9),
    }
    setup = bench_setup(env, shadow=args.shadow, one_time=not args.reusable_token, limits=True)
    tokens = setup["token"] if args.reusable_token else tokens_pool(setup, args.pool)
    ctx = Context(env=env, args=args, tokens=tokens, issuer_pk=setup["issuer_pk"])
    cache = "Redis (CACHE_URL)" if os.environ.get("CACHE_URL") else "per-process memory (no CACHE_URL)"
    print(
        f"jwtex HTTP benchmark — {args.server} ({args.threads} threads), one process on core 0, wrk on core 1;"
        f" {database}"
        f"; cache: {cache}; "
        + ("one token again and again" if args.reusable_token else "one-time tokens (jti marked)")
        + "; rate limits counted; logs at INFO with the access log"
        + ("; with a shadow rule set" if args.shadow else ""),
        flush=True,
    )
    before = _db_counters()
    runs = headline(ctx, setup["token"])
    after = _db_counters()
    ok = sum(statuses.get("200", 0) for run in runs for statuses in run["answers"])
    other = refusals_count(runs)
    print(f"    answers: {ok} × 200" + (f", others {other}" if other else ""))
    print(
        f"    audit rows written: {after['rows'] - before['rows']} for {ok} tokens issued "
        "(≥: requests wrk abandoned as a run ended still complete)"
    )
    if "transactions" in after:
        per = (after["transactions"] - before["transactions"]) / max(ok, 1)
        print(
            f"    database transactions per exchange: {per:.3f} (the warm path reads nothing; each process "
            f"reads the configuration epoch every 1.5 s)"
        )
    pieces = [p.strip() for p in args.without.split(",") if p.strip()]
    unknown = sorted(set(pieces) - set(PIECES))
    if unknown:
        raise SystemExit(f"--without: no such piece {unknown}; known: {', '.join(PIECES)}")
    if pieces:
        args.seconds = args.table_seconds
        ablation_table(ctx, pieces)
    if not args.no_tail:
        tail(ctx, rate=statistics.median([r["rate"] for r in runs]))


if __name__ == "__main__":
    from http_ablation import PIECES, Context, ablation_table, headline, refusals_count, tail, tokens_pool

    main()
