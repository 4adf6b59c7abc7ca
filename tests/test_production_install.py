"""The README's production install works (README, "Running in production"): ``pip install .`` into a
fresh virtualenv — no test extras — has everything the production set-up loads: the settings, the
WSGI application, the Celery app and its tasks, the Redis broker transport and cache backend, the
PostgreSQL driver, both HTTP servers, metrics and AWS KMS. Then, from the clone as the README's
commands run, ``/readyz``'s checks answer ``ok`` against the real PostgreSQL and Redis.

The test extras happen to bring packages production needs too (kombu's Redis transport imports
``packaging``, which only pytest brought), so only a virtualenv without them shows a missing one.

It takes about half a minute (a virtualenv and every dependency installed, from pip's cache when
warm), so it runs in CI's PostgreSQL + Redis pass, where ``.ci/run`` sets ``JWTEX_TEST_INSTALL=1``::

    DATABASE_URL=postgres://… CELERY_BROKER_URL=redis://… CACHE_URL=redis://… JWTEX_TEST_INSTALL=1 \\
    .venv/bin/python -m pytest tests/test_production_install.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from django.conf import settings as django_settings
from django.db import connection

from tests.conftest import REPO_ROOT
from tests.servers import database_url

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("JWTEX_TEST_INSTALL") != "1",
        reason="a fresh production install (about 30 s): JWTEX_TEST_INSTALL=1 with PostgreSQL and "
        "Redis, as .ci/run's second pass sets it",
    ),
    pytest.mark.django_db(transaction=True),
]

# Every module the README's production set-up loads (make serve with granian or gunicorn, a worker
# and beat on Redis, the Redis cache, PostgreSQL, /metrics, KMS tenants).
PRODUCTION_MODULES = [
    "jwtex_site.settings", "jwtex_site.wsgi", "jwtex_site.celery", "jwtex_site.serve", "jwtex_site.gunicorn_conf",
    "exchange.tasks", "exchange.kms", "exchange.services.health",
    "psycopg", "django.db.backends.postgresql.base",
    "redis", "django.core.cache.backends.redis", "kombu.transport.redis", "celery.backends.redis",
    "celery.apps.worker", "celery.apps.beat", "celery.concurrency.prefork",
    "granian", "granian.server", "gunicorn.app.wsgiapp", "gunicorn.workers.gthread",
    "prometheus_client.multiprocess", "boto3",
]  # fmt: skip

PROBE = """
import importlib, json, sys
import django
django.setup()
failed = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed[name] = f"{type(exc).__name__}: {exc}"
from exchange.services.health import readiness
ready, checks = readiness()
print(json.dumps({"failed": failed, "ready": ready, "checks": checks}))
"""


def _run(command: list[str], *, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)


def test_pip_install_without_extras_has_everything_production_loads(tmp_path):
    broker, cache_url = django_settings.CELERY_BROKER_URL, os.environ.get("CACHE_URL", "")
    if connection.vendor != "postgresql" or not broker.startswith("redis://") or not cache_url.startswith("redis://"):
        pytest.fail(
            "JWTEX_TEST_INSTALL=1 needs DATABASE_URL=postgres://…, CELERY_BROKER_URL=redis://… and "
            "CACHE_URL=redis://…, as .ci/run's second pass sets them",
            pytrace=False,
        )
    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    assert made.returncode == 0, made.stderr[-2000:]
    python = str(venv / "bin" / "python")
    # A copy of the tree as a clone has it (no .venv, no build leftovers in it or left behind in
    # the working tree), installed the README's way.
    source = tmp_path / "clone"
    shutil.copytree(
        REPO_ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git",
            ".venv",
            "var",
            "build",
            "*.egg-info",
            "__pycache__",
            ".pytest_cache",
            ".hypothesis",
            ".import_linter_cache",
            "test-artifacts",
        ),
    )
    installed = _run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(source)],
        timeout=600,
        cwd=tmp_path,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    extras = _run([python, "-m", "pip", "show", "pytest"], timeout=60)
    assert extras.returncode != 0, "the test extras were installed: this would prove nothing"
    consistent = _run([python, "-m", "pip", "check"], timeout=60)
    assert consistent.returncode == 0, consistent.stdout[-2000:]

    env = {k: v for k, v in os.environ.items() if not k.startswith(("JWTEX_", "DJANGO_", "CELERY_", "PYTHON"))}
    env.update(
        DJANGO_SETTINGS_MODULE="jwtex_site.settings",
        DATABASE_URL=database_url(connection.settings_dict),
        CELERY_BROKER_URL=broker,
        CACHE_URL=cache_url,
        JWTEX_VAR_DIR=str(tmp_path / "var"),
        JWTEX_KEY_ENCRYPTION_KEYS=",".join(django_settings.JWTEX_KEY_ENCRYPTION_KEYS),
    )
    probe = _run([python, "-c", PROBE, *PRODUCTION_MODULES], timeout=120, cwd=REPO_ROOT, env=env)
    assert probe.returncode == 0, probe.stderr[-3000:]
    found = json.loads(probe.stdout.strip().splitlines()[-1])
    assert found["failed"] == {}, found["failed"]
    assert found["checks"] == {"database": "ok", "broker": "ok", "cache": "ok"} and found["ready"], found["checks"]
