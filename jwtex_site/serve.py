"""``make serve``: the production web server, in the foreground, from the environment (docs/environment.md#variables).

``PORT`` (8000), ``HOST`` (0.0.0.0), ``WEB_CONCURRENCY`` processes (default: the number of CPUs),
``JWTEX_SERVER_THREADS`` threads each (8), ``JWTEX_SERVER`` = ``granian`` (the default: its WSGI
interface, chosen by measurement — README, "Performance") or ``gunicorn`` (gthread workers).
Both log their own start-up, access and error lines as the service does (one JSON object per
line on stderr; ``JWTEX_ACCESS_LOG=0`` turns the access lines off). No Celery here: run the
worker and beat apart.
The configuration is checked first; an unsafe production configuration never serves.

Metrics: the processes share a fresh ``PROMETHEUS_MULTIPROC_DIR`` (``var/metrics`` unless set),
emptied at start, so ``/metrics`` from any of them is the node's total (docs/operations.md#metrics).

SIGTERM: both servers stop taking connections, let the requests in flight finish — each exchange
answers only once its audit record is durable — and end their processes, which write what they
spooled (exchange/audit/writer.py); a process still busy after 20 s is killed (the records of
the exchanges it answered are durable already). Orchestrators should allow 30 s.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from jwtex_site import environment as env
from jwtex_site.logging import configured

ROOT = Path(__file__).resolve().parent.parent
# How long a stopping server waits for its requests in flight before killing (gunicorn_conf.py too).
GRACEFUL_SECONDS = 20


def _granian_log_config(environ: Mapping[str, str]) -> str:
    """granian's --log-config: the one logging configuration (jwtex_site/logging.py), as a file."""
    config = configured(environ)
    handle, path = tempfile.mkstemp(prefix="jwtex-granian-log-", suffix=".json")
    with os.fdopen(handle, "w") as file:
        json.dump(config, file)
    return path


def command(environ: Mapping[str, str]) -> list[str]:
    server = env.text("JWTEX_SERVER", environ)
    bindir = Path(sys.executable).parent
    workers = str(env.whole("WEB_CONCURRENCY", environ))
    threads = str(env.whole("JWTEX_SERVER_THREADS", environ))
    if server == "gunicorn":
        return [str(bindir / "gunicorn"), "--config", "python:jwtex_site.gunicorn_conf", "jwtex_site.wsgi:application"]
    if server == "granian":
        return [
            str(bindir / "granian"),
            "--interface",
            "wsgi",
            "--host",
            env.text("HOST", environ),
            "--port",
            env.text("PORT", environ),
            "--workers",
            workers,
            "--blocking-threads",
            threads,
            "--no-ws",
            "--respawn-failed-workers",
            "--workers-kill-timeout",
            str(GRACEFUL_SECONDS),
            "--log-config",
            _granian_log_config(environ),
            "--access-log" if env.access_log(environ) else "--no-access-log",
            "--access-log-fmt",
            '%(addr)s "%(method)s %(path)s %(protocol)s" %(status)d %(dt_ms).1fms',
            "jwtex_site.wsgi:application",
        ]
    raise SystemExit(f"JWTEX_SERVER must be gunicorn or granian, not {server!r}")


def _metrics_dir() -> None:
    """A multiprocess directory for prometheus-client, empty: values of an earlier run of the
    server must not be added to this one's."""
    directory = Path(env.text("PROMETHEUS_MULTIPROC_DIR") or env.var_dir() / "metrics")
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    env.export("PROMETHEUS_MULTIPROC_DIR", str(directory))


def healthcheck() -> int:
    """0 when this host's server answers ``/healthz`` within 3 s (the container image's HEALTHCHECK)."""
    url = f"http://127.0.0.1:{env.text('PORT')}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:  # a fixed http URL
            status = response.status
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1
    print(f"{url}: {status}")
    return 0 if status == 200 else 1


def main() -> None:
    _metrics_dir()
    # A production server: DEBUG off unless asked for (with a loopback JWTEX_PUBLIC_URL, as in a
    # benchmark, the settings' own default would be on).
    env.export("DJANGO_DEBUG", "0", only_if_unset=True)
    # The application reads the thread count the server runs with (its cap on requests waiting
    # for upstream keys is half of it, docs/errors.md#bursts): one value for both, the default included.
    env.export("JWTEX_SERVER_THREADS", str(env.whole("JWTEX_SERVER_THREADS")))
    try:
        argv = command(env.snapshot())
    except env.BadVariable as exc:
        raise SystemExit(str(exc)) from None
    if not Path(argv[0]).exists() and not shutil.which(argv[0]):
        raise SystemExit(f"{argv[0]} is not installed in this virtualenv")
    os.chdir(ROOT)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
