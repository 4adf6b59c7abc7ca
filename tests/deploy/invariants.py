"""What the deployment files are checked against: the environment the settings read, the
entrypoint's commands, the endpoints the probes name, and what a secret looks like."""

from __future__ import annotations

import re

SECRET_NAME = re.compile(r"SECRET|PASSWORD|KEYS?$|TOKEN")  # names whose values are secrets
URL_NAME = re.compile(r"_URL$")  # values that may carry a password (user:password@host)


def settings_reads() -> set[str]:
    """The variables jwtex reads: jwtex_site/environment.py's table, the one reader of the
    environment (the settings and make serve's server take their values from it)."""
    from jwtex_site.environment import DEFAULTS

    names = set(DEFAULTS)
    assert {"DATABASE_URL", "JWTEX_PUBLIC_URL", "PORT", "WEB_CONCURRENCY"} <= names
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
