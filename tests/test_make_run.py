"""``make run`` as a new user runs it (docs/environment.md#make-run): on another port its issuer URLs follow,
and Ctrl-C ends it cleanly. A real run: web server, Celery worker and beat, on a fresh var/."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import poll

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _environment(tmp_path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JWTEX_", "DJANGO_", "DATABASE_URL", "CELERY_", "CACHE_URL"))
    }
    env.update(JWTEX_VAR_DIR=str(tmp_path / "var"), PYTHONUNBUFFERED="1")
    return env


def _make_run(port: int, env: dict[str, str], **popen) -> subprocess.Popen:
    # -o: the virtualenv running this test is the project's; never reinstall it from here.
    return subprocess.Popen(
        ["make", "-o", ".venv/.installed", "run", f"PORT={port}", f"PY={sys.executable}"],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


DEMO = """
import io, os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jwtex_site.settings")
import django
django.setup()
from django.core.management import call_command
config = io.StringIO()
call_command("jwtex_demo_upstream", "config", stdout=config)
call_command("jwtex_apply", "-", stdin=io.StringIO(config.getvalue()), stdout=io.StringIO())
call_command("jwtex_demo_upstream", "token")
"""


def test_make_run_on_another_port_serves_issuer_urls_on_that_port_and_stops_cleanly(tmp_path):
    port = _free_port()
    env = _environment(tmp_path)
    make = _make_run(port, env)
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return _get(f"{base}/t/none/.well-known/openid-configuration")[0] == 404
            except OSError:
                return False

        if not poll(up, timeout=60, interval=0.05, stop=lambda: make.poll() is not None):
            make.kill()
            raise AssertionError("make run did not come up:\n" + make.communicate()[0][-3000:])

        # The demo upstream (jwtex_demo_upstream config | jwtex_apply -, then a token from it), in
        # one process of the same deployment (its environment, so var/ and the database of the run).
        demo = subprocess.run([sys.executable, "-c", DEMO], cwd=ROOT, env=env, capture_output=True, text=True)
        assert demo.returncode == 0, demo.stderr[-3000:]
        token = demo.stdout.strip().splitlines()[-1]
        status, body = _get(f"{base}/t/acme/.well-known/openid-configuration")
        assert status == 200
        discovery = json.loads(body)
        assert discovery["issuer"] == f"{base}/t/acme"
        assert discovery["jwks_uri"] == f"{base}/t/acme/.well-known/jwks.json"

        request = urllib.request.Request(f"{base}/t/acme/exchange?issuerId=github", data=token.encode(), method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            issued = response.read().decode()
        payload = json.loads(__import__("base64").urlsafe_b64decode(issued.split(".")[1] + "=="))
        assert payload["iss"] == f"{base}/t/acme"
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        output, _ = make.communicate(timeout=30)
    assert "make: ***" not in output, output[-3000:]
    assert make.returncode in (0, -signal.SIGINT), output[-3000:]
    # Each start-up warning once (docs/environment.md#make-run): the development key warning is jwtex.W001.
    assert output.count("jwtex.W001") == 1, output[-3000:]
    assert "RuntimeWarning" not in output


def test_make_run_stopped_as_a_background_job_exits_0_and_says_nothing(tmp_path):
    # `make run &` in a script starts it with SIGINT ignored; the walkthrough's Ctrl-C then ended
    # in "the Celery worker stopped (exit status 1)… make: *** Error 1". A stop is a clean stop.
    port = _free_port()
    make = _make_run(port, _environment(tmp_path), preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:

        def up() -> bool:
            try:
                return _get(f"http://127.0.0.1:{port}/healthz")[0] == 200
            except OSError:
                return False

        assert poll(up, timeout=60, interval=0.05, stop=lambda: make.poll() is not None), make.communicate()[0][-3000:]
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGINT)
        output, _ = make.communicate(timeout=30)
    assert make.returncode == 0, output[-3000:]
    assert "make: ***" not in output and "stopped (exit status" not in output, output[-3000:]
