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
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _granian_log_config(environ: dict[str, str]) -> str:
    formatter = "jwtex_site.logging.TextFormatter" if environ.get("JWTEX_LOG_FORMAT") == "text" else (
        "jwtex_site.logging.JsonFormatter"
    )
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"jwtex": {"()": formatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "jwtex", "stream": "ext://sys.stderr"}},
        "loggers": {
            "_granian": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            "granian.access": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        },
    }
    handle, path = tempfile.mkstemp(prefix="jwtex-granian-log-", suffix=".json")
    with os.fdopen(handle, "w") as file:
        json.dump(config, file)
    return path


def command(environ: dict[str, str]) -> list[str]:
    server = environ.get("JWTEX_SERVER", "granian")
    bindir = Path(sys.executable).parent
    workers = environ.get("WEB_CONCURRENCY") or str(os.cpu_count() or 1)
    threads = environ.get("JWTEX_SERVER_THREADS") or "8"
    if server == "gunicorn":
        return [str(bindir / "gunicorn"), "--config", "python:jwtex_site.gunicorn_conf", "jwtex_site.wsgi:application"]
    if server == "granian":
        return [
            str(bindir / "granian"), "--interface", "wsgi", "--host", environ.get("HOST", "0.0.0.0"),
            "--port", environ.get("PORT", "8000"), "--workers", workers, "--blocking-threads", threads,
            "--no-ws", "--respawn-failed-workers", "--log-config", _granian_log_config(environ),
            "--access-log" if environ.get("JWTEX_ACCESS_LOG", "1") != "0" else "--no-access-log",
            "--access-log-fmt", '%(addr)s "%(method)s %(path)s %(protocol)s" %(status)d %(dt_ms).1fms',
            "jwtex_site.wsgi:application",
        ]
    raise SystemExit(f"JWTEX_SERVER must be gunicorn or granian, not {server!r}")


def _metrics_dir() -> None:
    """A multiprocess directory for prometheus-client, empty: values of an earlier run of the
    server must not be added to this one's."""
    directory = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or Path(os.environ.get("JWTEX_VAR_DIR", ROOT / "var")) / "metrics")
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def main() -> None:
    _metrics_dir()
    environ = dict(os.environ)
    # A production server: DEBUG off unless asked for (with a loopback JWTEX_PUBLIC_URL, as in a
    # benchmark, the settings' own default would be on).
    os.environ.setdefault("DJANGO_DEBUG", "0")
    # The application reads the thread count the server runs with (its cap on requests waiting
    # for upstream keys is half of it, docs/errors.md#bursts): one value for both, the default included.
    os.environ["JWTEX_SERVER_THREADS"] = environ["JWTEX_SERVER_THREADS"] = environ.get("JWTEX_SERVER_THREADS") or "8"
    argv = command(environ)
    if not Path(argv[0]).exists() and not shutil.which(argv[0]):
        raise SystemExit(f"{argv[0]} is not installed in this virtualenv")
    os.chdir(ROOT)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
