"""The admin's static assets served by the web process itself: WhiteNoise (what the container image
and make serve use) against granian's own static route (the alternative considered).

    .venv/bin/python bench/static_benchmark.py [--seconds 5]

Assets collected as the image collects them (``collectstatic``, gzip'd copies beside them) into a
temporary directory; ``make serve``'s granian with one process pinned to core 0 (``taskset``), wrk
on core 1 (``apt-get install wrk``): requests per second and latency for the admin's base.css
(22 KB) and jQuery (285 KB), plain and with ``Accept-Encoding: gzip``, and the response headers
of each (what a browser can cache and revalidate). SQLite in the same directory: no exchange is made.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ("/static/admin/css/base.css", "/static/admin/js/vendor/jquery/jquery.js")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_start(env: dict[str, str], port: int, extra: list[str]) -> subprocess.Popen:
    sys.path.insert(0, str(ROOT))
    from jwtex_site.serve import command

    argv = command({**env, "PORT": str(port), "HOST": "127.0.0.1", "WEB_CONCURRENCY": "1"})
    process = subprocess.Popen(
        ["taskset", "-c", "0", *argv[:-1], *extra, argv[-1]],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
            return process
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the server did not come up")


def wrk_run(url: str, seconds: int, gzip: bool) -> tuple[float, str]:
    header = ["-H", "Accept-Encoding: gzip"] if gzip else []
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", "-c16", f"-d{seconds}s", "--latency", *header, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+(\S+)", out).group(1)
    return rate, p99


def _headers(url: str) -> str:
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=5) as response:
        keep = ("content-length", "content-encoding", "cache-control", "etag", "last-modified")
        return ", ".join(f"{k}: {v}" for k, v in response.headers.items() if k.lower() in keep) or "(none of those)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk (Debian's package)")
    var = Path(tempfile.mkdtemp(prefix="jwtex-static-bench-"))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("JWTEX_", "DJANGO_"))},
        "DJANGO_SETTINGS_MODULE": "jwtex_site.settings", "JWTEX_VAR_DIR": str(var), "DJANGO_DEBUG": "0",
        "JWTEX_STATIC_ROOT": str(var / "static"), "JWTEX_ACCESS_LOG": "0", "JWTEX_LOG_LEVEL": "WARNING",
        "JWTEX_KEY_ENCRYPTION_KEYS": "benchmark-only-key-encryption-key-0123456789",
    }  # fmt: skip
    for step in (["migrate", "-v0"], ["collectstatic", "--noinput", "-v0"]):
        subprocess.run([sys.executable, "manage.py", *step], cwd=ROOT, env=env, check=True)
    setups = {
        "WhiteNoise (the image's)": (env, []),
        # The same server without WhiteNoise (no collected directory at its STATIC_ROOT), its static route instead.
        "granian's static route": (
            {**env, "JWTEX_STATIC_ROOT": str(var / "none")},
            ["--static-path-route", "/static", "--static-path-mount", str(var / "static")],
        ),
    }
    print(f"static assets, one granian process on core 0, wrk (16 connections) on core 1, {args.seconds} s each")
    try:
        for name, (setup_env, extra) in setups.items():
            port = free_port()
            server = server_start(setup_env, port, extra)
            try:
                for asset in ASSETS:
                    url = f"http://127.0.0.1:{port}{asset}"
                    for gzip in (False, True):
                        rate, p99 = wrk_run(url, args.seconds, gzip)
                        print(
                            f"  {name:26} {asset.rsplit('/', 1)[1]:10} {'gzip' if gzip else 'plain':5} "
                            f"{rate:8,.0f}/s  p99 {p99}"
                        )
                    print(f"  {'':26} headers: {_headers(url)}")
            finally:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=30)
    finally:
        shutil.rmtree(var, ignore_errors=True)


if __name__ == "__main__":
    main()
