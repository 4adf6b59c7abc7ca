"""One reader of the environment, one place for each default, one logging configuration
(docs/environment.md#variables, docs/design/layout.md#settings-in-one-place)."""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import subprocess
import sys

import pytest

from jwtex_site import environment
from jwtex_site.environment import DEFAULTS
from tests.conftest import REPO_ROOT

READER = "jwtex_site/environment.py"
# Not the service: programs of their own that happen to live in the repository. The benchmarks
# and the tests prepare the environment of the servers they start; the CI client (jwtex_token.py,
# and the GitLab component's copy of it) runs inside a CI job and reads that job's variables; the
# example mapper is a stand-alone web service.
OTHER_PROGRAMS = ("tests/", "bench/", "examples/", "jwtex_token.py", "templates/jwtex-token/")
# Django's bootstrap names its settings module before anything can read settings (so it cannot
# ask them): manage.py, the WSGI/ASGI applications, the Celery app and the container entrypoint
# each say which one. It chooses code, not configuration, and a deployment may still point it elsewhere.
BOOTSTRAP = 'os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jwtex_site.settings")'
_ACCESS = re.compile(
    r"\bos\.(environ|getenv|putenv|unsetenv)\b|\bfrom os import\b[^\n]*\b(environ|getenv)\b|\bos\.environb\b"
)


def _service_sources() -> list[str]:
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    files = [path for path in tracked.stdout.split() if not path.startswith(OTHER_PROGRAMS)]
    assert {"jwtex_site/settings.py", "jwtex_site/serve.py", "jwtex_site/gunicorn_conf.py", "manage.py"} <= set(files)
    return files


def test_only_the_reader_touches_the_process_environment():
    offences = []
    for path in _service_sources():
        if path == READER:
            continue
        for number, line in enumerate((REPO_ROOT / path).read_text().splitlines(), 1):
            if _ACCESS.search(line) and line.strip() != BOOTSTRAP:
                offences.append(f"{path}:{number}: {line.strip()}")
    assert offences == [], "read the environment through jwtex_site/environment.py:\n" + "\n".join(offences)


def test_the_environment_test_sees_an_offence():
    # The pattern finds what it must (a check that could not fail would hold nothing).
    for line in ('x = os.environ.get("PORT")', "from os import getenv", 'os.getenv("HOST")', "env = dict(os.environ)"):
        assert _ACCESS.search(line), line
    assert not _ACCESS.search('environ.get("PATH_INFO")')  # a WSGI environ is a request, not the process's


def test_the_reader_asks_only_for_variables_it_declares():
    with pytest.raises(KeyError):
        environment.text("JWTEX_NOT_A_VARIABLE", {})
    assert (
        environment.whole("JWTEX_RATE_LIMIT_PER_ADDRESS", {"JWTEX_RATE_LIMIT_PER_ADDRESS": ""}) == 600
    )  # empty: unset
    assert environment.text("JWTEX_ADMIN_OIDC_ROLES_PREFIX", {"JWTEX_ADMIN_OIDC_ROLES_PREFIX": ""}) == ""  # empty kept
    assert environment.text("JWTEX_PUBLIC_URL", {"JWTEX_PUBLIC_URL": ""}) == ""  # no URL: refused by jwtex.E009
    with pytest.raises(environment.BadVariable, match="JWTEX_SERVER_THREADS"):
        environment.whole("JWTEX_SERVER_THREADS", {"JWTEX_SERVER_THREADS": "eight"})
    with pytest.raises(environment.BadVariable, match="json or text"):
        environment.log_format({"JWTEX_LOG_FORMAT": "xml"})


# --------------------------------------------------------------------- each default written once


def _literal_matches(value, default) -> bool:
    if isinstance(value, bool) or isinstance(default, bool) or default in ("", None):
        return False
    if isinstance(default, (int, float)):
        if isinstance(value, (int, float)):
            return value == default
        return isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)?", value) is not None and float(value) == default
    return value == default


def _knob_words(name: str) -> re.Pattern:
    short = name.removeprefix("JWTEX_")
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(short)}(?![A-Za-z0-9])", re.IGNORECASE)


def default_sites(name: str, sources: list[str], root=REPO_ROOT) -> list[str]:
    """Where a literal equal to ``name``'s default sits on a line that names the knob (a value
    compared with, ``server == "granian"``, is a choice being tested, not a default)."""
    default, words, sites = DEFAULTS[name], _knob_words(name), []
    for path in sources:
        for number, line, value in _constants(root / path):
            if _literal_matches(value, default) and words.search(line):
                sites.append(f"{path}:{number}")
    return sites


@functools.cache
def _constants(path) -> list[tuple[int, str, object]]:
    """Each literal of a module not compared with anything: (line number, line, value)."""
    text = path.read_text()
    lines, tree = text.splitlines(), ast.parse(text)
    compared = {id(n) for c in ast.walk(tree) if isinstance(c, ast.Compare) for n in (c.left, *c.comparators)}
    return [
        (node.lineno, lines[node.lineno - 1], node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and id(node) not in compared
    ]


def test_each_default_is_written_once():
    sources = _service_sources()
    computed = {"JWTEX_VAR_DIR", "WEB_CONCURRENCY"}  # the project's var/, the CPU count: no literal to find
    wrong = {}
    for name, default in DEFAULTS.items():
        if isinstance(default, bool) or default in ("", None) or name in computed:
            continue  # nothing to find (off, empty, or derived by the settings)
        sites = default_sites(name, sources)
        if len(sites) != 1 or not sites[0].startswith(READER + ":"):
            wrong[name] = (default, sites)
    assert wrong == {}, "each default belongs in jwtex_site/environment.py, once"
    assert len(DEFAULTS) > 40


def test_the_default_finder_finds_a_second_copy(tmp_path):
    (tmp_path / "copy.py").write_text(
        'threads = int(os.environ.get("JWTEX_SERVER_THREADS") or 8)\nlimit = rate_limit_per_address or "600"\n'
        "if server_threads == 8: pass\n"
    )
    assert default_sites("JWTEX_SERVER_THREADS", ["copy.py"], root=tmp_path) == ["copy.py:1"]
    assert default_sites("JWTEX_RATE_LIMIT_PER_ADDRESS", ["copy.py"], root=tmp_path) == ["copy.py:2"]
    assert default_sites("JWTEX_LOGIN_LOCKOUT_SECONDS", ["copy.py"], root=tmp_path) == []


# --------------------------------------------------------------------- one logging configuration

_PROBE = """
import json, os, sys
import django
django.setup()
from django.conf import settings
import logging
from jwtex_site import celery, gunicorn_conf, serve
celery._log_like_the_web()  # what the worker and beat do at start-up (Celery's setup_logging signal)
worker = [type(handler.formatter).__name__ for handler in logging.getLogger().handlers]
print(json.dumps({"settings": settings.LOGGING, "gunicorn": gunicorn_conf.logconfig_dict,
                  "granian": json.load(open(serve._granian_log_config(os.environ))), "worker": worker}))
"""


@pytest.mark.parametrize(
    ("variables", "formatter", "level", "access"),
    [
        ({}, "json", "INFO", "INFO"),
        ({"JWTEX_LOG_FORMAT": "text", "JWTEX_LOG_LEVEL": "DEBUG", "JWTEX_ACCESS_LOG": "0"}, "text", "DEBUG", "WARNING"),
    ],
    ids=["defaults", "text-debug-no-access"],
)
def test_the_web_servers_and_celery_log_through_one_configuration(tmp_path, variables, formatter, level, access):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JWTEX_", "DJANGO_", "DATABASE_URL", "CELERY_", "CACHE_URL"))
    }
    env.update(JWTEX_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="jwtex_site.settings", **variables)
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    configs = json.loads(done.stdout.splitlines()[-1])
    # Django's LOGGING is what the web processes, the Celery worker and beat apply (jwtex_site/celery.py);
    # gunicorn and granian get the very same dictionary.
    assert configs["settings"] == configs["gunicorn"] == configs["granian"]
    config = configs["settings"]
    assert configs["worker"] == [f"{formatter.capitalize()}Formatter"]  # jwtex_site.logging's, one handler
    assert config["handlers"]["console"]["formatter"] == formatter
    assert config["root"]["level"] == level
    assert config["loggers"]["gunicorn.access"]["level"] == access
    for logger in ("django", "gunicorn.error", "gunicorn.access", "_granian", "granian.access"):
        assert config["loggers"][logger]["handlers"] == ["console"], logger
