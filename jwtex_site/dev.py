"""``make run``: a development instance in one terminal (docs/environment.md#development-defaults).

Checks the configuration once (so each warning is printed once), migrates the SQLite database
under var/, makes sure an ``admin`` superuser exists, then runs the web server on HOST:PORT
and a Celery worker with embedded beat on the filesystem broker. ``JWTEX_PUBLIC_URL``
defaults to ``http://HOST:PORT``, so issuer URLs, discovery documents, tokens and the
admin's snippets name the port actually served. Ctrl-C (or SIGTERM) stops both: exit status 0,
nothing more printed.

This module does not import Django: it only prepares the environment (as jwtex_site/environment.py
reads it) and starts processes.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from jwtex_site import environment

ROOT = Path(__file__).resolve().parent.parent


def public_url(host: str, port: str) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _manage(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "manage.py"), *args]


def _stop(processes: list[subprocess.Popen], *, signal_them: bool, grace: float = 10.0) -> None:
    """Wait for ``processes`` to end (asking them with SIGTERM when ``signal_them``), then kill."""
    for process in processes:
        if signal_them and process.poll() is None:
            process.terminate()  # Celery: warm shutdown; runserver: exit
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# The Celery worker, with its beat (the periodic tasks) in the same process.
CELERY_WORKER = (
    *("-m", "celery", "-A", "jwtex_site", "--quiet", "worker", "--beat", "--loglevel=INFO"),
    *("--concurrency=2", "--without-mingle", "--without-gossip"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", default=environment.DEFAULTS["PORT"])
    options = parser.parse_args(argv)

    # Ctrl-C and SIGTERM end the run cleanly, also where this process was started with SIGINT
    # ignored (a background job of a script inherits that), which Python would otherwise keep.
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    env = environment.snapshot()
    env.setdefault("JWTEX_PUBLIC_URL", public_url(options.host, options.port))
    env.setdefault("JWTEX_LOG_FORMAT", "text")  # readable in a terminal; production logs JSON
    # migrate runs the system checks first (each warning printed once; an error stops here).
    for step in (("migrate", "--noinput"), ("jwtex_dev_admin",)):
        code = subprocess.call(_manage(*step), cwd=ROOT, env=env)
        if stop.is_set():
            return 0
        if code:
            return code

    worker = subprocess.Popen([sys.executable, *CELERY_WORKER], cwd=ROOT, env=env)
    server = subprocess.Popen(
        _manage("runserver", "--noreload", "--skip-checks", f"{options.host}:{options.port}"), cwd=ROOT, env=env
    )
    processes = [server, worker]
    try:
        while not stop.is_set() and all(process.poll() is None for process in processes):
            stop.wait(0.2)
    except KeyboardInterrupt:
        stop.set()
    if stop.is_set():
        # Asked to stop (Ctrl-C reaches the whole process group; SIGTERM only this process): a
        # clean stop, exit 0 and nothing said. The worker's exit status is not a failure here:
        # Celery exits 1 on SIGINT. SIGTERM to those still running (their warm shutdown).
        _stop(processes, signal_them=True)
        return 0
    failed = next(process for process in processes if process.poll() is not None)
    name = "the web server" if failed is server else "the Celery worker"
    print(f"make run: {name} stopped (exit status {failed.returncode}); stopping the rest.", file=sys.stderr)
    _stop(processes, signal_them=True)
    return failed.returncode or 1


if __name__ == "__main__":
    sys.exit(main())
