"""What the deployment files are checked against: the environment the settings read, the
entrypoint's commands, the endpoints the probes name, and what a secret looks like."""

from __future__ import annotations

import re

from tests.conftest import REPO_ROOT

# The readers of the environment: the settings (the one reader of configuration) and make serve's
# server (its port, processes and threads), as the README's table documents them.
READERS = ("jwtex_site/settings.py", "jwtex_site/serve.py")
_READ = re.compile(r'(?:environ\.get|environ\[|_env_bool)\(?\s*"([A-Z][A-Z0-9_]*)"')
SECRET_NAME = re.compile(r"SECRET|PASSWORD|KEYS?$|TOKEN")  # names whose values are secrets
URL_NAME = re.compile(r"_URL$")  # values that may carry a password (user:password@host)


def settings_reads() -> set[str]:
    names = {name for path in READERS for name in _READ.findall((REPO_ROOT / path).read_text())}
    assert {"DATABASE_URL", "JWTEX_PUBLIC_URL", "PORT", "WEB_CONCURRENCY"} <= names  # the pattern still finds them
    return names


def entrypoint_commands() -> set[str]:
    from jwtex_site import entrypoint

    return {line.split()[0] for line in entrypoint.USAGE.splitlines() if line.strip()}


def endpoint_exists(path: str) -> bool:
    from django.urls import Resolver404, resolve

    try:
        resolve(path, urlconf="jwtex_site.urls")
    except Resolver404:
        return False
    return True
