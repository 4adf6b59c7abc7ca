"""How fast is one exchange? Prints per-step costs and end-to-end rates on this machine.

    .venv/bin/python bench/exchange_benchmark.py [--n 3000] [--tenants 1,100]

Runs in a throwaway SQLite database under a temporary directory (or DATABASE_URL if set).
Steps: strict parse + RS256 verify of an upstream token, CEL rules, ES256 mint, and the
whole exchange_token() (which also writes its audit row), warm, on one core. With several
tenants it shows the warm path stays flat as tenants grow (no database reads per exchange).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--tenants", default="1,100")
    args = parser.parse_args()

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
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    from exchange.conf import jwtex_settings
    from exchange.core.minting import mint_token
    from exchange.core.rules.engine import decide
    from exchange.core.verification import parse_compact, verify_token
    from exchange.models import Issuer, Rule
    from exchange.runtime import tenant_runtime_get
    from exchange.services.exchange import exchange_token
    from exchange.services.tenants import tenant_create

    upstream_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(upstream_key.public_key(), as_dict=True)
    jwk.update({"kid": "bench", "alg": "RS256", "use": "sig"})
    iss = "https://ci.bench.invalid"

    def make_tenant(slug: str) -> None:
        tenant = tenant_create(slug=slug, name=slug, rate_limit_per_minute=0)
        issuer = Issuer.objects.create(
            tenant=tenant, issuer_id="github", issuer=iss, audiences=["sts.amazonaws.com"], static_jwks={"keys": [jwk]}
        )
        rules = [
            ("deny forks", "claims.repository_owner != 'octo-org'", "deny", {}),
            ("main", "claims.ref == 'refs/heads/main'", "allow",
             {"repository": "claims.repository", "ref": "claims.ref", "actor": "claims.actor"}),
        ]
        for position, (name, when, effect, tags) in enumerate(rules):
            rule = Rule.objects.create(tenant=tenant, position=position, name=name, when=when, effect=effect, session_tags=tags)
            rule.issuers.add(issuer)

    def upstream_token() -> str:
        now = int(time.time())
        claims = {
            "iss": iss, "aud": "sts.amazonaws.com", "sub": "repo:octo-org/app:ref:refs/heads/main",
            "iat": now, "nbf": now - 600, "exp": now + 600, "jti": os.urandom(8).hex(),
            "repository": "octo-org/app", "repository_owner": "octo-org", "ref": "refs/heads/main",
            "actor": "octocat", "workflow": "deploy", "run_id": "1234567890", "event_name": "push",
        }
        return jwt.encode(claims, upstream_key, algorithm="RS256", headers={"kid": "bench"})

    counts = sorted({int(x) for x in args.tenants.split(",")})
    created = 0
    make_tenant("t0")
    created = 1
    token = upstream_token()
    runtime = tenant_runtime_get(slug="t0")
    config = runtime.issuers["github"].config
    from datetime import UTC, datetime

    from exchange.upstream.jwks import issuer_keys_get

    keys = issuer_keys_get(issuer=runtime.issuers["github"], now=datetime.now(UTC)).keys

    def rate(label: str, fn, n: int) -> None:
        samples = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(n // 5):
                fn()
            samples.append((time.perf_counter() - start) / (n // 5))
        best = min(samples)
        print(f"  {label:<44} {best * 1e6:8.1f} µs   {1 / best:9.0f} /s   (median {statistics.median(samples) * 1e6:.1f} µs)")

    now = time.time()
    print(f"jwtex exchange benchmark — Python {sys.version.split()[0]}, {os.cpu_count()} cores, one used")
    print("steps (warm):")
    rate("parse_compact (strict JWS)", lambda: parse_compact(token), args.n)
    parsed = parse_compact(token)
    rate("verify_token (RS256 2048)", lambda: verify_token(parsed, issuer=config, keys=keys, now=now), args.n)
    verified = verify_token(parsed, issuer=config, keys=keys, now=now)
    decide_kwargs = dict(issuer_id="github", claims=verified.claims, requested_audience=None,
                         default_audience="sts.amazonaws.com", max_lifetime=3600)
    rate("decide (2 CEL rules, 3 session tags)", lambda: decide(runtime.rules, **decide_kwargs), args.n)
    decision = decide(runtime.rules, **decide_kwargs)
    rate("mint_token (ES256)", lambda: mint_token(decision=decision, issuer=runtime.issuer_url, signer=runtime.signer, now=int(now)), args.n)

    print("exchange_token() end to end, warm (includes the audit INSERT):")
    for count in counts:
        while created < count:
            make_tenant(f"t{created}")
            created += 1
        slugs = [f"t{i}" for i in range(count)]
        for slug in slugs:  # warm every tenant's runtime
            exchange_token(tenant_slug=slug, subject_token=token, client_address="127.0.0.1")
        i = 0

        def one() -> None:
            nonlocal i
            exchange_token(tenant_slug=slugs[i % count], subject_token=token, client_address="127.0.0.1")
            i += 1

        from django.db import connection, reset_queries
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as queries:
            for _ in range(100):
                one()
        reads = sum(1 for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("SELECT"))
        rate(f"{count} tenant(s), round-robin", one, args.n)
        print(f"    database reads in 100 warm exchanges: {reads} (re-check every {jwtex_settings.config_recheck_seconds} s per tenant)")


if __name__ == "__main__":
    main()
