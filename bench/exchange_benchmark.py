"""How fast is one exchange, and does it stay that fast with many tenants? Prints per-step
costs (and what the rules' cost guard adds to them), end-to-end latency for 1 tenant and for
many, their ratio, database reads per warm exchange and memory per process, the exchange with the
tenant's key in AWS KMS (moto), and the worst rules the cost guard lets through
(bench/rule_cost.py).

    .venv/bin/python bench/exchange_benchmark.py [--n 3000] [--tenants 10000] [--rules 20]

Runs in a throwaway SQLite database under a temporary directory (or DATABASE_URL if set), on
one core. Every tenant has the same issuer and ``--rules`` rules (the last an allow with three
session tags, the others denies that do not match), so the comparison isolates the number of
tenants. End to end is the whole ``token_exchange()``, audit record and rate-limit counters
included (each tenant's limit set too high to refuse); rounds of the one-tenant and the
many-tenant case alternate and the medians are compared.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ISS = "https://ci.bench.invalid"
ROUNDS = 7


def django_setup() -> None:
    tmp = tempfile.mkdtemp(prefix="jwtex-bench-")
    os.environ.setdefault("JWTEX_VAR_DIR", tmp)
    os.environ.setdefault("JWTEX_KEY_ENCRYPTION_KEYS", "benchmark-key-encryption-key-0123456789")
    os.environ.setdefault("JWTEX_RATE_LIMIT_PER_ADDRESS", "0")
    os.environ.setdefault("JWTEX_LOG_LEVEL", "WARNING")
    os.environ["DJANGO_SETTINGS_MODULE"] = "jwtex_site.settings"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


@dataclass
class Upstream:
    key: object
    jwk: dict

    @classmethod
    def generate(cls) -> Upstream:
        import jwt
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        jwk.update({"kid": "bench", "alg": "RS256", "use": "sig"})
        return cls(key, jwk)

    def token(self) -> str:
        import jwt

        now = int(time.time())
        claims = {
            "iss": ISS,
            "aud": "sts.amazonaws.com",
            "sub": "repo:octo-org/app:ref:refs/heads/main",
            "iat": now,
            "nbf": now - 600,
            "exp": now + 1800,
            "jti": os.urandom(8).hex(),
            "repository": "octo-org/app",
            "repository_owner": "octo-org",
            "ref": "refs/heads/main",
            "actor": "octocat",
            "workflow": "deploy",
            "run_id": "1234567890",
            "event_name": "push",
        }
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "bench"})


def tenants_create(*, start: int, stop: int, rules: int, upstream: Upstream, prefix: str = "t", **fields) -> None:
    """Tenants t{start}…t{stop-1}, each with one issuer and ``rules`` rules, in bulk."""
    from django.db import transaction

    from exchange.models import Issuer, Rule
    from exchange.services.tenants import tenant_create

    allow_tags = {"repository": "claims.repository", "ref": "claims.ref", "actor": "claims.actor"}
    with transaction.atomic():
        tenants = [
            tenant_create(slug=f"{prefix}{i}", name=f"{prefix}{i}", rate_limit_per_minute=10**9, **fields)
            for i in range(start, stop)
        ]
        issuers = Issuer.objects.bulk_create(
            Issuer(
                tenant=t,
                issuer_id="github",
                issuer=ISS,
                audiences=["sts.amazonaws.com"],
                static_jwks={"keys": [upstream.jwk]},
            )
            for t in tenants
        )
        created = Rule.objects.bulk_create(
            Rule(tenant=t, position=p, name=name, when=when, effect=effect, session_tags=tags)
            for t in tenants
            for p, (name, when, effect, tags) in enumerate(rule_specs(t.slug, rules, allow_tags))
        )
        issuer_of = {i.tenant_id: i.pk for i in issuers}
        Through = Rule.issuers.through
        Through.objects.bulk_create(Through(rule_id=r.pk, issuer_id=issuer_of[r.tenant_id]) for r in created)


def rule_specs(slug: str, rules: int, allow_tags: dict) -> list[tuple]:
    """Each tenant's own expressions (no two tenants share a compiled program by accident)."""
    specs = [(f"deny {n}", f"claims.repository == 'octo-org/{slug}-blocked-{n}'", "deny", {}) for n in range(rules - 1)]
    return [*specs, ("main", "claims.ref == 'refs/heads/main'", "allow", allow_tags)]


def per_call(fn, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def line(label: str, seconds: list[float]) -> float:
    median = statistics.median(seconds)
    print(f"  {label:<46} {median * 1e6:8.1f} µs   {1 / median:8.0f} /s   (best {min(seconds) * 1e6:.1f} µs)")
    return median


def steps(upstream: Upstream, n: int) -> None:
    from datetime import UTC, datetime

    from exchange.core.compact_jws import jwt_parse
    from exchange.core.minting import jwt_mint
    from exchange.core.rules.engine import compiled_rules_decide
    from exchange.core.verification import jwt_verify
    from exchange.runtime import tenant_runtime_get
    from exchange.upstream.issuer_keys import issuer_keys_get

    runtime = tenant_runtime_get(slug="t0")
    issuer = runtime.issuers["github"]
    keys = issuer_keys_get(issuer=issuer, now=datetime.now(UTC)).keys
    token, now = upstream.token(), time.time()
    parsed = jwt_parse(token)
    claims = jwt_verify(parsed, issuer=issuer.config, keys=keys, now=now).claims
    ask = dict(
        issuer_id="github",
        claims=claims,
        requested_audience=None,
        default_audience="sts.amazonaws.com",
        max_lifetime=3600,
    )
    decision = compiled_rules_decide(runtime.rules, **ask)
    unguarded = [dataclasses.replace(rule, cost=None) for rule in runtime.rules]  # what decide was before the guard
    specs = [rule.spec for rule in runtime.rules]
    print(f"steps, warm, one tenant with {len(runtime.rules)} rules (median of {ROUNDS} rounds):")
    for label, fn in [
        ("jwt_parse (strict JWS)", lambda: jwt_parse(token)),
        ("jwt_verify (RS256 2048)", lambda: jwt_verify(parsed, issuer=issuer.config, keys=keys, now=now)),
        (
            f"decide ({len(runtime.rules)} CEL rules, 3 session tags)",
            lambda: compiled_rules_decide(runtime.rules, **ask),
        ),
        (
            "jwt_mint (ES256)",
            lambda: jwt_mint(decision=decision, issuer=runtime.issuer_url, signer=runtime.signer, now=int(now)),
        ),
    ]:
        line(label, [per_call(fn, n // ROUNDS) for _ in range(ROUNDS)])
    guarded, bare = [], []
    for _ in range(ROUNDS * 2):  # alternate, so a busy moment of the machine hits both
        guarded.append(per_call(lambda: compiled_rules_decide(runtime.rules, **ask), n // ROUNDS))
        bare.append(per_call(lambda: compiled_rules_decide(unguarded, **ask), n // ROUNDS))
    print(
        f"  the cost guard on decide: {(statistics.median(guarded) - statistics.median(bare)) * 1e6:+.1f} µs median, "
        f"{(min(guarded) - min(bare)) * 1e6:+.1f} µs best ({min(bare) * 1e6:.1f} µs without it)"
    )
    compile_time = line(
        f"compile the {len(specs)} rules (parse, check, cost: once per snapshot)",
        [
            per_call(lambda: [compile_rule_uncached(spec) for spec in specs], max(1, n // 50 // ROUNDS))
            for _ in range(ROUNDS)
        ],
    )
    print(f"    {compile_time / len(specs) * 1e6:.0f} µs a rule")


def compile_rule_uncached(spec):
    """rule_compile as a snapshot build runs it, without the cache of recent sources (a cold process)."""
    from exchange.core.rules import cel_guard
    from exchange.core.rules.compiled import rule_compile

    cel_guard._compile.cache_clear()
    return rule_compile(spec)


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def warm(slugs: list[str], token: str) -> None:
    from exchange.services.exchange import token_exchange

    for slug in slugs:
        token_exchange(tenant_slug=slug, subject_token=token, client_address="127.0.0.1")


def round_robin(slugs: list[str], token: str):
    from exchange.services.exchange import token_exchange

    state = {"i": 0}

    def one() -> None:
        token_exchange(tenant_slug=slugs[state["i"] % len(slugs)], subject_token=token, client_address="127.0.0.1")
        state["i"] += 1

    return one


def reads_per_exchange(one, n: int) -> float:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    warnings.filterwarnings("ignore", "Limit for query logging exceeded")  # we count, not keep
    with CaptureQueriesContext(connection) as queries:
        for _ in range(n):
            one()
    reads = sum(1 for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("SELECT"))
    return reads / n


def scale(upstream: Upstream, *, tenants: int, rules: int, n: int) -> None:
    from exchange.conf import jwtex_settings

    token = upstream.token()
    warm(["t0"], token)
    start = time.perf_counter()
    tenants_create(start=1, stop=tenants, rules=rules, upstream=upstream)
    print(
        f"end to end, token_exchange() with its audit record, warm ({tenants:,} tenants created in "
        f"{time.perf_counter() - start:.0f} s):"
    )
    many = [f"t{i}" for i in range(tenants)]
    before = rss_bytes()
    start = time.perf_counter()
    warm(many[1:], token)
    grown = rss_bytes() - before
    print(f"  warming {tenants - 1:,} more tenant runtimes took {time.perf_counter() - start:.0f} s")
    one_tenant, all_tenants = round_robin(["t0"], token), round_robin(many, token)
    singles, multis = [], []
    for _ in range(ROUNDS):  # alternate, so a busy moment of the machine hits both
        singles.append(per_call(one_tenant, n // ROUNDS))
        multis.append(per_call(all_tenants, n // ROUNDS))
    single = line("1 tenant", singles)
    multi = line(f"{tenants:,} tenants x {rules} rules, round-robin", multis)
    print(f"  ratio {tenants:,} tenants / 1 tenant: {multi / single:.3f}   (target ≤ 1.10)")
    print(
        f"  database reads per warm exchange ({tenants:,} tenants, re-check every "
        f"{jwtex_settings.config_recheck_seconds:g} s): {reads_per_exchange(all_tenants, 500):.4f}"
    )
    print(
        f"  memory: process RSS {rss_bytes() / 2**20:.0f} MiB; the {tenants - 1:,} extra runtimes added "
        f"{grown / 2**20:.0f} MiB ({grown / max(tenants - 1, 1) / 1024:.1f} KiB per tenant with {rules} rules)"
    )


def kms_signing(upstream: Upstream, *, rules: int, n: int) -> None:
    """The exchange with the tenant's key in AWS KMS: every token one Sign call. Against moto's
    server on loopback (tests/kms.py), so a lower bound: no TLS, no network, no AWS behind it."""
    from exchange.kms import kms_clients_reset
    from exchange.runtime import tenant_runtime_get
    from tests.kms import REGION, MotoKms

    server = MotoKms()
    os.environ.update(server.environment())
    kms_clients_reset()
    for algorithm in ("ES256", "RS256"):
        tenants_create(
            start=0,
            stop=1,
            rules=rules,
            upstream=upstream,
            prefix=f"kms-{algorithm.lower()}-",
            key_backend="aws-kms",
            kms_region=REGION,
            signing_algorithm=algorithm,
        )
    token, count = upstream.token(), max(ROUNDS, n // 5)
    sign = tenant_runtime_get(slug="kms-es256-0").signer.remote_sign
    print(f"end to end with the tenant's key in AWS KMS (moto's server on loopback: a lower bound; {count} exchanges):")
    line(
        "KMS Sign alone (ES256, through boto3)",
        [per_call(lambda: sign(b"x" * 600), count // ROUNDS) for _ in range(ROUNDS)],
    )
    local = line(
        "token_exchange(), local ES256 key",
        [per_call(round_robin(["t0"], token), count // ROUNDS) for _ in range(ROUNDS)],
    )
    for algorithm in ("ES256", "RS256"):
        one = round_robin([f"kms-{algorithm.lower()}-0"], token)
        one()
        median = line(
            f"token_exchange(), AWS KMS {algorithm} key", [per_call(one, count // ROUNDS) for _ in range(ROUNDS)]
        )
        print(f"    {(median - local) * 1e3:+.2f} ms per exchange against the local key")
    server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=3500, help="exchanges per measurement (split in rounds)")
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--rules", type=int, default=20, help="rules per tenant")
    args = parser.parse_args()
    django_setup()
    upstream = Upstream.generate()
    tenants_create(start=0, stop=1, rules=args.rules, upstream=upstream)
    print(f"jwtex exchange benchmark — Python {sys.version.split()[0]}, {os.cpu_count()} cores, one used")
    steps(upstream, args.n)
    rule_costs()
    scale(upstream, tenants=args.tenants, rules=args.rules, n=args.n)
    kms_signing(upstream, rules=args.rules, n=args.n)


def rule_costs() -> None:
    """The worst rules the cost guard lets through, each over the claims that make it slowest."""
    sys.path.insert(0, str(ROOT / "bench"))
    import rule_cost

    worst = max(rule_cost.report(), rule_cost.exchange_worst())
    print(f"  the slowest: {worst:.2f} ms of CPU (target: no exchange over 50 ms, live and candidate rules together)")


if __name__ == "__main__":
    main()
