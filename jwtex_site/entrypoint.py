"""The container image's one entrypoint (docs/deployment.md): ``jwtex COMMAND [ARGS…]``.

    web              make serve's production server (jwtex_site/serve.py): granian, or gunicorn
    worker [ARGS…]   a Celery worker (ARGS go to ``celery worker``, e.g. ``--concurrency=2``)
    beat [ARGS…]     Celery beat: exactly one per deployment
    migrate [ARGS…]  ``manage.py migrate --noinput`` (run before a release's web and workers)
    manage ARGS…     any management command (``manage createsuperuser``, ``manage jwtex_apply F``)
    healthcheck      the image's HEALTHCHECK: ``/healthz`` of a web container, a ping of a worker

It dispatches and nothing else: the configuration is the environment, which the settings read
(jwtex_site/settings.py; the server's own knobs, such as PORT, jwtex_site/serve.py). ``web``,
``worker`` and ``beat`` replace this process (exec), so the server or Celery receives the
container's signals itself: SIGTERM lets granian and gunicorn finish the exchanges in flight
(each waits for its audit record) and flush the spool (exchange/audit/writer.py), and gives a
Celery worker a warm shutdown. ``migrate`` and ``manage`` run in this process; as PID 1 (no
init in the container) SIGTERM would be ignored by the kernel, so it ends them instead.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

USAGE = __doc__.split("\n\n")[1]


def _exec(*argv: str) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *argv])


def _manage(argv: list[str]) -> int:
    if os.getpid() == 1:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jwtex_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(["jwtex manage", *argv])
    return 0


def running(proc: Path = Path("/proc")) -> str | None:
    """What this container runs — ``web``, ``worker`` or ``beat`` — from its processes' command
    lines (the health check is a process of its own, started beside them by the runtime)."""
    found = set()
    for cmdline in proc.glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"jwtex_site.wsgi:application" in argv:
            found.add("web")
        elif b"jwtex_site" in argv and b"worker" in argv:
            found.add("worker")
        elif b"jwtex_site" in argv and b"beat" in argv:
            found.add("beat")
    for role in ("web", "worker", "beat"):
        if role in found:
            return role
    return None


def healthcheck() -> int:
    """0 when healthy. A web container: ``/healthz`` answers 200 on the port it serves. A worker:
    it answers a Celery ping (its default node name, ``celery@`` its host name). Beat has nothing
    to ask: its process is there (the container ends with it)."""
    role = running()
    if role == "web":
        from .serve import healthcheck as web_healthcheck

        return web_healthcheck()
    if role == "worker":
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jwtex_site.settings")
        from .celery import app

        node = f"celery@{socket.gethostname()}"
        answered = app.control.ping(destination=[node], timeout=5.0)
        print(f"{node}: {'pong' if answered else 'no answer'}")
        return 0 if answered else 1
    if role == "beat":
        return 0
    print("neither jwtex's web server nor a Celery worker or beat runs here", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command, args = (argv[0], argv[1:]) if argv else ("", [])
    if command == "web" and not args:
        _exec("-m", "jwtex_site.serve")
    elif command == "worker":
        _exec("-m", "celery", "-A", "jwtex_site", "worker", *args)
    elif command == "beat":
        _exec("-m", "celery", "-A", "jwtex_site", "beat", *args)
    elif command == "migrate":
        return _manage(["migrate", "--noinput", *args])
    elif command == "manage" and args:
        return _manage(args)
    elif command == "healthcheck" and not args:
        return healthcheck()
    elif command in ("help", "--help", "-h"):
        print(USAGE)
        return 0
    print(f"jwtex: unknown command {' '.join(argv)!r}\n\nusage: jwtex COMMAND [ARGS…]\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
