"""The process environment, read here and nowhere else (docs/environment.md#variables).

Every variable jwtex reads is in ``DEFAULTS`` with its default: the one place each default is
written. Django's settings (jwtex_site/settings.py) take their values from here, and so do the
launchers that run before Django is configured: ``make serve`` (jwtex_site/serve.py and
jwtex_site/gunicorn_conf.py) and ``make run`` (jwtex_site/dev.py). This module imports nothing of
Django or of the project, so any of them may import it first.

A variable that is unset takes its default; so does an empty one, except for the few text values
where empty means something (``JWTEX_PUBLIC_URL=`` is no URL at all, ``JWTEX_ADMIN_OIDC_ROLES_PREFIX=``
no prefix): those keep what was given.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Where each default lives: here. None: the settings derive it (named beside it).
DEFAULTS: dict[str, str | int | float | bool | None] = {
    # The deployment (docs/environment.md#production-mode).
    "JWTEX_PUBLIC_URL": "http://127.0.0.1:8000",
    "JWTEX_VAR_DIR": str(ROOT / "var"),
    "DJANGO_DEBUG": None,  # on outside production mode, off in it
    "DJANGO_SECRET_KEY": "django-insecure-jwtex-development-only",
    "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost,[::1],testserver",
    "JWTEX_KEY_ENCRYPTION_KEYS": "",  # development: generated under JWTEX_VAR_DIR
    "JWTEX_HSTS_SECONDS": 31_536_000,
    "JWTEX_STATIC_ROOT": None,  # JWTEX_VAR_DIR/static
    "DATABASE_URL": None,  # SQLite under JWTEX_VAR_DIR
    "CACHE_URL": "",  # per-process memory
    "CELERY_BROKER_URL": "filesystem://",  # under JWTEX_VAR_DIR/celery-broker
    "CELERY_TASK_ALWAYS_EAGER": False,
    # The exchange and its upstreams (docs/errors.md#rate-limits, docs/errors.md#fetch-budgets).
    "JWTEX_ALLOW_INSECURE_ISSUERS": False,
    "JWTEX_RATE_LIMIT_PER_ADDRESS": 600,
    "JWTEX_TRUSTED_PROXY_COUNT": 0,
    "JWTEX_REQUEST_FETCH_BUDGET": 2.0,
    "JWTEX_CONFIG_RECHECK_SECONDS": 1.5,
    "JWTEX_AUDIT_SPOOL_DIR": "",  # JWTEX_VAR_DIR/audit-spool
    "JWTEX_MAPPER_ALLOWED_HOSTS": "",
    "JWTEX_ALLOWED_UPSTREAM_ISSUERS": "",  # any issuer (docs/operators.md#allowed-upstream-issuers)
    "JWTEX_PUBLISH_TARGET": "",  # no published issuer documents (docs/endpoints.md#published-issuer-url)
    # Benchmark-only (docs/environment.md#benchmark-only-variables): never honoured in production mode.
    "JWTEX_BENCH_ABLATE": "",
    "JWTEX_BENCH_TIMELINE": False,
    # Operations.
    "JWTEX_METRICS_TOKEN": "",
    "PROMETHEUS_MULTIPROC_DIR": "",  # make serve: JWTEX_VAR_DIR/metrics
    "JWTEX_LOG_FORMAT": "json",
    "JWTEX_LOG_LEVEL": "INFO",
    # make serve's server (jwtex_site/serve.py).
    "HOST": "0.0.0.0",
    "PORT": "8000",
    "WEB_CONCURRENCY": os.cpu_count() or 1,
    "JWTEX_SERVER_THREADS": 8,
    "JWTEX_SERVER": "granian",
    "JWTEX_ACCESS_LOG": "1",
    # The admin (docs/operators.md).
    "JWTEX_LOGIN_MAX_FAILURES": 5,
    "JWTEX_LOGIN_LOCKOUT_SECONDS": 900,
    "JWTEX_CI_ACTION": "",
    "JWTEX_CI_COMPONENT": "",
    "JWTEX_ADMIN_LOCAL_LOGIN": True,
    "JWTEX_ADMIN_OIDC_ISSUER": "",
    "JWTEX_ADMIN_OIDC_CLIENT_ID": "",
    "JWTEX_ADMIN_OIDC_CLIENT_SECRET": "",
    "JWTEX_ADMIN_OIDC_PRIVATE_KEY_FILE": "",
    "JWTEX_ADMIN_OIDC_PRIVATE_KEY_ID": "",
    "JWTEX_ADMIN_OIDC_SCOPES": "openid email profile",
    "JWTEX_ADMIN_OIDC_ROLES_CLAIM": "groups",
    "JWTEX_ADMIN_OIDC_ROLES_PREFIX": "jwtex:",
    "JWTEX_ADMIN_OIDC_SUPERUSER_VALUE": "jwtex:superuser",
    "JWTEX_ADMIN_OIDC_ROLES_EXCLUSIVE": False,
    "JWTEX_ADMIN_OIDC_USERNAME_CLAIM": "preferred_username",
    "JWTEX_ADMIN_OIDC_NAME": "",
}

# Text values an empty variable sets as it is (elsewhere, empty is unset).
EMPTY_KEPT = frozenset(
    {
        "JWTEX_PUBLIC_URL",
        "DJANGO_ALLOWED_HOSTS",
        "JWTEX_ADMIN_OIDC_SCOPES",
        "JWTEX_ADMIN_OIDC_ROLES_CLAIM",
        "JWTEX_ADMIN_OIDC_ROLES_PREFIX",
        "JWTEX_ADMIN_OIDC_SUPERUSER_VALUE",
        "JWTEX_ADMIN_OIDC_USERNAME_CLAIM",
    }
)

_TRUE = frozenset({"1", "true", "yes", "on"})


class BadVariable(ValueError):
    """A variable's value cannot be used (the settings raise it as ImproperlyConfigured)."""


def _raw(name: str, environ: Mapping[str, str] | None) -> str | None:
    if name not in DEFAULTS:
        raise KeyError(f"{name} is not a variable jwtex reads (add it to DEFAULTS)")
    value = (os.environ if environ is None else environ).get(name)
    if value == "" and name not in EMPTY_KEPT:
        return None
    return value


def given(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``name`` is set (to something, or to nothing where nothing means something)."""
    return _raw(name, environ) is not None


def text(name: str, environ: Mapping[str, str] | None = None) -> str:
    value = _raw(name, environ)
    if value is not None:
        return value
    default = DEFAULTS[name]
    return "" if default is None else str(default)


def flag(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """``1``, ``true``, ``yes``, ``on`` (any case, spaces around) are on; anything else set is off."""
    value = _raw(name, environ)
    return bool(DEFAULTS[name]) if value is None else value.strip().lower() in _TRUE


def whole(name: str, environ: Mapping[str, str] | None = None) -> int:
    value = _raw(name, environ)
    try:
        return int(DEFAULTS[name] if value is None else value)
    except ValueError:
        raise BadVariable(f"{name} must be a whole number, not {value!r}") from None


def number(name: str, environ: Mapping[str, str] | None = None) -> float:
    value = _raw(name, environ)
    try:
        return float(DEFAULTS[name] if value is None else value)
    except ValueError:
        raise BadVariable(f"{name} must be a number, not {value!r}") from None


def names(name: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """A comma-separated list, each item stripped, empty items left out."""
    return [item.strip() for item in text(name, environ).split(",") if item.strip()]


def var_dir(environ: Mapping[str, str] | None = None) -> Path:
    return Path(text("JWTEX_VAR_DIR", environ))


def log_format(environ: Mapping[str, str] | None = None) -> str:
    value = text("JWTEX_LOG_FORMAT", environ).strip().lower()
    if value not in {"json", "text"}:
        raise BadVariable("JWTEX_LOG_FORMAT must be json or text")
    return value


def access_log(environ: Mapping[str, str] | None = None) -> bool:
    """The servers' access lines: on unless ``JWTEX_ACCESS_LOG=0``."""
    return text("JWTEX_ACCESS_LOG", environ) != "0"


def snapshot() -> dict[str, str]:
    """A copy of this process's environment, for the processes a launcher starts."""
    return dict(os.environ)


def export(name: str, value: str, *, only_if_unset: bool = False) -> None:
    """Set ``name`` for this process and the processes it starts (a launcher handing its choice on)."""
    if name not in DEFAULTS:
        raise KeyError(f"{name} is not a variable jwtex reads (add it to DEFAULTS)")
    environ: MutableMapping[str, str] = os.environ
    if only_if_unset:
        environ.setdefault(name, value)
    else:
        environ[name] = value
