"""What each piece of an exchange's work costs in CPU, in process (the ablation table's pieces without HTTP).

    DATABASE_URL=postgres://… .venv/bin/python bench/exchange_pieces.py [--n 2000] [--rounds 5]

``token_exchange()`` on one thread, as the raw endpoint calls it (one-time tokens, rate limits
counted, the log line at INFO to /dev/null, metrics in prometheus-client's multiprocess mode as
``make serve`` runs them), with each piece switched off in turn (exchange/ablation.py); rounds
interleave, the figure is the median of the thread's CPU time per exchange (``time.thread_time``,
which another process's load does not inflate the way it does the clock). One thread means each
audit record is its own commit: the served path shares commits (bench/http_benchmark.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent))

PIECES = ["audit-write", "audit-record", "exchange-log", "metrics", "rate-limits", "jti-mark"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from http_benchmark import bench_setup, database_url_choose, server_environment

    var = Path(tempfile.mkdtemp(prefix="jwtex-pieces-"))
    (var / "metrics").mkdir()
    database_url, database = database_url_choose()
    env = {
        **server_environment(var, database_url),
        "JWTEX_LOG_LEVEL": "INFO",
        "JWTEX_RATE_LIMIT_PER_ADDRESS": str(10**9),
        "PROMETHEUS_MULTIPROC_DIR": str(var / "metrics"),
    }
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(2)
    os.dup2(devnull, 2)  # the log lines: written, to nowhere
    try:
        setup = bench_setup(env, one_time=True, limits=True)
        results = measure(setup, args.n, args.rounds)
    finally:
        os.dup2(saved, 2)
    print(f"CPU per exchange in process (thread time, median of {args.rounds} rounds of {args.n}); {database}")
    full = statistics.median(results[None])
    print(f"  full path: {full:,.0f} µs")
    for piece in PIECES:
        less = statistics.median(results[piece])
        print(f"  without {piece:13} {less:7,.0f} µs   ({less - full:+,.0f})")


def measure(setup: dict, n: int, rounds: int) -> dict:
    import jwt
    from django.test import override_settings

    from exchange.services.exchange import token_exchange

    claims, key = setup["claims"], setup["key"]
    counter = iter(range(10**9))

    def tokens(count: int) -> list[str]:
        return [
            jwt.encode({**claims, "jti": f"p{next(counter)}"}, key, algorithm="RS256", headers={"kid": "bench"})
            for _ in range(count)
        ]

    for token in tokens(200):  # warm
        token_exchange(tenant_slug="bench", subject_token=token, issuer_id="github", client_address="127.0.0.1")
    results: dict = {None: [], **{p: [] for p in PIECES}}
    for _ in range(rounds):
        for piece in [None, *PIECES]:
            batch = tokens(n)
            with override_settings(JWTEX_BENCH_ABLATE=(piece,) if piece else ()):
                start = time.thread_time()
                for token in batch:
                    token_exchange(
                        tenant_slug="bench",
                        subject_token=token,
                        issuer_id="github",
                        client_address="127.0.0.1",
                        endpoint="raw",
                    )
                results[piece].append(1e6 * (time.thread_time() - start) / n)
    return results


if __name__ == "__main__":
    main()
