"""The served runs of ``make bench-http`` (bench/http_benchmark.py): the headline, the ablation table, the tail.

- **Headline**: the full path, ``--runs`` times (3), each with its own ceiling just before it:
  medians of served at peak, served/ceiling, and p50/p99 at a fixed half of that run's peak.
- **Ablation table**: for each piece of an exchange's work (``exchange/ablation.py``, plus the
  server's access log), the full path and the path without that piece, one right after the
  other (``--pairs`` times, the order alternating): served at peak, the server's CPU time per
  exchange at peak (its processes' user + system time over the 200s they answered: the main
  measure on a shared machine, since another process's load slows the clock, not this CPU
  count), and p50/p99 at the same fixed rate (half of the full path's peak in that pair).
- **The tail**: one more full-path run at half of peak with ``JWTEX_BENCH_TIMELINE=1``: a latency
  histogram and the slowest exchanges' timelines, with the collections and re-checks that ran
  meanwhile.

Every run is a fresh ``make serve`` (one process, core 0) with production logging (INFO, the
server's access log on, stderr to a file).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from http_benchmark import at_rate, ceiling_measure, free_port, server_start, wrk_run

PIECES = [
    "audit-write",
    "audit-record",
    "exchange-log",
    "access-log",
    "metrics",
    "rate-limits",
    "jti-mark",
    "headers",
    "request",
]
BINS_MS = [0.5, 1, 1.5, 2, 3, 5, 10, 20, 50]


@dataclass
class Tokens:
    """The upstream tokens wrk sends: with one-time tokens, a pool of distinct ones (``path``),
    each sent once per server run (the per-process cache forgets the marks with its process;
    with ``CACHE_URL`` the used marks are deleted before the next run)."""

    token: str
    path: str = ""
    size: int = 0
    used: int = 0
    jtis: list[str] = field(default_factory=list)

    def rewind(self, issuer_pk: int) -> None:
        if self.used and os.environ.get("CACHE_URL"):
            import hashlib

            from django.core.cache import cache

            keys = [f"jwtex:jti:{issuer_pk}:{hashlib.sha256(j.encode()).hexdigest()}" for j in self.jtis[: self.used]]
            for i in range(0, len(keys), 5000):
                cache.delete_many(keys[i : i + 5000])
        self.used = 0


def _mint(args: tuple) -> list[str]:
    import jwt
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    pem, claims, jtis = args
    key = load_pem_private_key(pem, password=None)
    return [jwt.encode({**claims, "jti": jti}, key, algorithm="RS256", headers={"kid": "bench"}) for jti in jtis]


def tokens_pool(setup: dict, size: int) -> Tokens:
    """``size`` one-time tokens, minted on both cores before anything is measured (RS256: ~1 ms each)."""
    from concurrent.futures import ProcessPoolExecutor

    from cryptography.hazmat.primitives import serialization

    pem = setup["key"].private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    jtis = [f"bench-{i}" for i in range(size)]
    chunks = [(pem, setup["claims"], jtis[i::2]) for i in range(2)]
    with ProcessPoolExecutor(2) as pool:
        halves = list(pool.map(_mint, chunks))
    ordered = [t for pair in zip(*halves, strict=False) for t in pair] + halves[0][len(halves[1]) :]
    ordered_jtis = [j for pair in zip(jtis[0::2], jtis[1::2], strict=False) for j in pair] + jtis[0::2][
        len(jtis[1::2]) :
    ]
    path = Path(tempfile.mkdtemp(prefix="jwtex-tokens-")) / "tokens.txt"
    path.write_text("\n".join(ordered) + "\n")
    return Tokens(token=setup["token"], path=str(path), size=size, jtis=ordered_jtis)


def _cpu_seconds(session: int) -> float:
    """User + system CPU time of every process of the server's session (its make, granian and workers)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:  # session id
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    return total / os.sysconf("SC_CLK_TCK")


@dataclass
class Context:
    env: dict[str, str]
    args: object
    tokens: object  # Tokens or one str
    issuer_pk: int

    def stop(self, server) -> None:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def served_run(ctx: Context, *, without: str | None = None, rate: float | None = None, timeline: bool = False) -> dict:
    """One fresh server: warm up, peak (CPU per exchange), then a fixed ``rate`` (half of the peak if not given)."""
    env = dict(ctx.env)
    if without == "access-log":
        env["JWTEX_ACCESS_LOG"] = "0"
    elif without:
        env["JWTEX_BENCH_ABLATE"] = without
    if timeline:
        env["JWTEX_BENCH_TIMELINE"] = "1"
    if isinstance(ctx.tokens, Tokens):
        ctx.tokens.rewind(ctx.issuer_pk)
    for stale in Path(env["JWTEX_VAR_DIR"]).glob("bench-timeline-*.json"):
        stale.unlink()
    port, args = free_port(), ctx.args
    server = server_start(env, port, args.server, args.threads)
    url = f"http://127.0.0.1:{port}/t/bench/exchange?issuerId=github"
    try:
        # Warm up; a timeline run (its recording covers the whole process) skips the peak and warms
        # up gently, so that its slowest exchanges are those of the fixed rate.
        wrk_run(url, ctx.tokens, seconds=2, connections=2 if timeline else args.connections)
        before = _cpu_seconds(server.pid)
        peak = (
            {"rate": 2 * rate, "statuses": {}}
            if timeline
            else wrk_run(url, ctx.tokens, seconds=args.seconds, connections=args.connections)
        )
        cpu = _cpu_seconds(server.pid) - before
        half = at_rate(url, ctx.tokens, rate=rate or peak["rate"] / 2, seconds=args.seconds)
    finally:
        ctx.stop(server)
    ok = peak["statuses"].get("200", 0)
    result = {
        "peak": peak["rate"],
        "cpu_us": 1e6 * cpu / max(ok, 1),
        "half": half,
        "rate": rate or peak["rate"] / 2,
        "answers": [peak["statuses"], half["probe_statuses"], half["statuses"]],
    }
    if timeline:  # written by the server's process as it ends
        for _ in range(50):
            reports = list(Path(env["JWTEX_VAR_DIR"]).glob("bench-timeline-*.json"))
            if reports:
                break
            time.sleep(0.1)
        result["timelines"] = [json.loads(p.read_text()) for p in reports]
    return result


def refusals_count(runs: list[dict]) -> dict[str, int]:
    other: dict[str, int] = {}
    for run in runs:
        for statuses in run["answers"]:
            for status, count in statuses.items():
                if status != "200":
                    other[status] = other.get(status, 0) + count
    return other


def headline(ctx: Context, token: str) -> list[dict]:
    runs = []
    for _ in range(ctx.args.runs):
        ceiling = ceiling_measure(token)
        run = served_run(ctx)
        run["ceiling"] = ceiling
        runs.append(run)
    med = statistics.median
    print(f"  headline, medians of {len(runs)} runs (each after its own ceiling):")
    print(
        f"    ceiling {med([r['ceiling'] for r in runs]):,.0f}/s"
        f"   served at peak {med([r['peak'] for r in runs]):,.0f}/s"
        f"   ratio {med([r['peak'] / r['ceiling'] for r in runs]):.2f}   CPU {med([r['cpu_us'] for r in runs]):,.0f} µs"
        f" per exchange (ceiling {1e6 / med([r['ceiling'] for r in runs]):,.0f})"
    )
    print(
        f"    at half of peak ({med([r['rate'] for r in runs]):,.0f}/s):"
        f" p50 {med([r['half']['p50'] for r in runs]):.2f} ms"
        f"   p99 {med([r['half']['p99'] for r in runs]):.2f} ms"
    )
    print(
        "    runs: "
        + "; ".join(
            f"{r['peak']:,.0f}/s of {r['ceiling']:,.0f} ({r['peak'] / r['ceiling']:.2f}), p99 {r['half']['p99']:.2f} ms"
            for r in runs
        )
    )
    return runs


def ablation_table(ctx: Context, pieces: list[str]) -> list[dict]:
    """Each piece's pairs, printed as a Markdown table the README can quote."""
    print(
        f"\n  ablation: the full path against the path without one piece, {ctx.args.pairs} interleaved pair(s) each,"
        f" {ctx.args.seconds} s per load"
    )
    print(
        "\n| without | served at peak: full → without | CPU µs per exchange: full → without (Δ) "
        "| p50 / p99 at half of the full path's peak: full → without |"
    )
    print("|---|---|---|---|")
    rows = []
    for piece in pieces:
        pairs = []
        for i in range(ctx.args.pairs):
            if i % 2 == 0:
                full = served_run(ctx)
                less = served_run(ctx, without=piece, rate=full["rate"])
            else:
                less = served_run(ctx, without=piece)
                full = served_run(ctx, rate=less["rate"])
                less["rate"] = full["rate"]
            pairs.append((full, less))

        def med(pick, pairs=pairs):
            return statistics.median([pick(p) for p in pairs])

        row = {
            "piece": piece,
            "full_peak": med(lambda p: p[0]["peak"]),
            "peak": med(lambda p: p[1]["peak"]),
            "full_cpu": med(lambda p: p[0]["cpu_us"]),
            "cpu": med(lambda p: p[1]["cpu_us"]),
            "full_p50": med(lambda p: p[0]["half"]["p50"]),
            "p50": med(lambda p: p[1]["half"]["p50"]),
            "full_p99": med(lambda p: p[0]["half"]["p99"]),
            "p99": med(lambda p: p[1]["half"]["p99"]),
            "refused": refusals_count([run for pair in pairs for run in pair]),
        }
        rows.append(row)
        print(
            f"| {piece} | {row['full_peak']:,.0f} → {row['peak']:,.0f}/s | {row['full_cpu']:,.0f} → {row['cpu']:,.0f}"
            f" ({row['cpu'] - row['full_cpu']:+,.0f}) | {row['full_p50']:.2f} / {row['full_p99']:.2f} → "
            f"{row['p50']:.2f} / {row['p99']:.2f} ms |" + (f" refused: {row['refused']}" if row["refused"] else ""),
            flush=True,
        )
    return rows


def histogram(cdf: dict[float, float]) -> list[str]:
    """The share of requests in each latency bin, from wrk's percentiles (a CDF)."""
    points = sorted(cdf.items())
    lines, below = [], 0.0
    for edge in [*BINS_MS, float("inf")]:
        share = max((p for p, ms in points if ms <= edge), default=0.0)
        if share - below > 0 or edge == float("inf"):
            label = f"≤ {edge:g} ms" if edge != float("inf") else f"> {BINS_MS[-1]:g} ms"
            part = max(share - below, 0.0) if edge != float("inf") else max(100.0 - below, 0.0)
            lines.append(f"    {label:>10} {part:6.2f} % {'#' * round(part / 2)}")
            below = share
    return lines


def tail(ctx: Context, rate: float, show: int = 5) -> None:
    run = served_run(ctx, rate=rate, timeline=True)
    half = run["half"]
    print(
        f"\n  the tail, full path at {run['rate']:,.0f}/s (timelines on):"
        f" p50 {half['p50']:.2f} ms, p99 {half['p99']:.2f} ms,"
        f" p99.9 {half['cdf'].get(99.9, 0):.2f} ms, max {half['cdf'].get(100.0, 0):.2f} ms"
    )
    print("\n".join(histogram(half["cdf"])))
    slowest = sorted((t for report in run.get("timelines", []) for t in report["slowest"]), key=lambda t: -t["ms"])
    for timeline in slowest[:show]:
        steps = ", ".join(f"{s['step']} {s['at_ms']:.2f}" for s in timeline["steps"][1:])
        print(f"    {timeline['ms']:.2f} ms: {steps}")
        for event in sorted(timeline["meanwhile"], key=lambda e: -e["ms"])[:3]:  # the longest
            print(f"        meanwhile at {event['at_ms']:.2f} ms: {event['what']} for {event['ms']:.2f} ms")
