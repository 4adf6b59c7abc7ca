"""The container image's entrypoint (jwtex_site/entrypoint.py): each command becomes the process
it names, with its arguments, and nothing else; the health check asks what the container runs."""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from jwtex_site import entrypoint


class Exec(Exception):
    pass


@pytest.fixture
def execs(monkeypatch) -> list[list[str]]:
    seen: list[list[str]] = []

    def execv(path, argv):
        seen.append([path, *argv[1:]])
        raise Exec  # os.execv never returns

    monkeypatch.setattr(entrypoint.os, "execv", execv)
    return seen


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["web"], ["-m", "jwtex_site.serve"]),
        (["worker"], ["-m", "celery", "-A", "jwtex_site", "worker"]),
        (["worker", "--concurrency=2"], ["-m", "celery", "-A", "jwtex_site", "worker", "--concurrency=2"]),
        (["beat", "--loglevel=INFO"], ["-m", "celery", "-A", "jwtex_site", "beat", "--loglevel=INFO"]),
    ],
)
def test_long_running_commands_replace_the_entrypoint(execs, argv, expected):
    with pytest.raises(Exec):
        entrypoint.main(argv)
    assert execs == [[sys.executable, *expected]]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["migrate"], ["migrate", "--noinput"]),
        (["migrate", "exchange"], ["migrate", "--noinput", "exchange"]),
        (["manage", "jwtex_apply", "-"], ["jwtex_apply", "-"]),
    ],
)
def test_migrate_and_manage_run_django_management_commands(monkeypatch, argv, expected):
    ran = []
    monkeypatch.setattr("django.core.management.execute_from_command_line", lambda args: ran.append(args[1:]))
    assert entrypoint.main(argv) == 0
    assert ran == [expected]


@pytest.mark.parametrize("argv", [[], ["serve"], ["manage"], ["web", "--port", "1"], ["healthcheck", "x"]])
def test_anything_else_is_refused_with_the_usage(execs, capsys, argv):
    assert entrypoint.main(argv) == 2
    assert "usage: jwtex COMMAND" in capsys.readouterr().err and execs == []


def test_help_lists_the_commands(capsys):
    assert entrypoint.main(["help"]) == 0
    out = capsys.readouterr().out
    assert all(f"    {command}" in out for command in ("web", "worker", "beat", "migrate", "manage", "healthcheck"))


def _proc(tmp_path, *cmdlines: list[str]):
    for pid, argv in enumerate(cmdlines, 1):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    return tmp_path


@pytest.mark.parametrize(
    "cmdlines, role",
    [
        (
            [["/opt/jwtex/bin/python", "/opt/jwtex/bin/granian", "--interface", "wsgi", "jwtex_site.wsgi:application"]],
            "web",
        ),
        ([["python", "gunicorn", "--config", "python:jwtex_site.gunicorn_conf", "jwtex_site.wsgi:application"]], "web"),
        (
            [["/sbin/catatonit", "--"], ["python", "-m", "celery", "-A", "jwtex_site", "worker", "--concurrency=2"]],
            "worker",
        ),
        ([["python", "-m", "celery", "-A", "jwtex_site", "beat"]], "beat"),
        ([["python", "-m", "jwtex_site.entrypoint", "manage", "shell"]], None),
    ],
)
def test_the_health_check_knows_what_the_container_runs(tmp_path, cmdlines, role):
    assert entrypoint.running(_proc(tmp_path, *cmdlines)) == role


@pytest.mark.parametrize("status, expected", [(200, 0), (503, 1), (None, 1)])
def test_a_web_container_is_healthy_when_healthz_answers_200(monkeypatch, status, expected):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # http.server's name
            self.send_response(status if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    if status is None:
        server.server_close()  # nothing listens
    else:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("PORT", str(port))
    monkeypatch.setattr(entrypoint, "running", lambda: "web")
    try:
        assert entrypoint.healthcheck() == expected
    finally:
        if status is not None:
            server.shutdown()
