"""jwtex settings, from the environment as jwtex_site/environment.py reads it (docs/environment.md#variables).

Production mode is any run whose JWTEX_PUBLIC_URL host is not loopback; there the
unsafe development defaults are refused before anything starts.
"""

from __future__ import annotations

import ipaddress
import secrets
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from jwtex_site import environment as env, logging as jwtex_logging

BASE_DIR = env.ROOT
VAR_DIR = env.var_dir()

DEV_SECRET_KEY = str(env.DEFAULTS["DJANGO_SECRET_KEY"])


def _is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


JWTEX_PUBLIC_URL = env.text("JWTEX_PUBLIC_URL").rstrip("/")
try:
    _public = urlsplit(JWTEX_PUBLIC_URL)
    _public.port  # noqa: B018 - raises ValueError for a bad port
except ValueError:
    _public = urlsplit("")
# Not an absolute http(s) URL: reported by the jwtex.E009 system check (and treated as
# production, so nothing unsafe is allowed meanwhile).
JWTEX_PUBLIC_URL_VALID = _public.scheme in {"http", "https"} and bool(_public.hostname)
JWTEX_PRODUCTION = not (JWTEX_PUBLIC_URL_VALID and _is_loopback_host(_public.hostname))

DEBUG = env.flag("DJANGO_DEBUG") if env.given("DJANGO_DEBUG") else not JWTEX_PRODUCTION
SECRET_KEY = env.text("DJANGO_SECRET_KEY")
ALLOWED_HOSTS = env.names("DJANGO_ALLOWED_HOSTS")
if JWTEX_PRODUCTION and _public.hostname and _public.hostname not in ALLOWED_HOSTS and "*" not in ALLOWED_HOSTS:
    ALLOWED_HOSTS.append(_public.hostname)

# Signing keys are encrypted at rest under these (first encrypts, all decrypt).
JWTEX_KEY_ENCRYPTION_KEYS = env.names("JWTEX_KEY_ENCRYPTION_KEYS")
JWTEX_KEY_ENCRYPTION_KEYS_GENERATED = False
if not JWTEX_KEY_ENCRYPTION_KEYS and not JWTEX_PRODUCTION:
    _kek_file = VAR_DIR / "key-encryption-key"
    if not _kek_file.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        _kek_file.write_text(secrets.token_urlsafe(32) + "\n")
        _kek_file.chmod(0o600)
    JWTEX_KEY_ENCRYPTION_KEYS = [_kek_file.read_text().strip()]
    # Said once, by the jwtex.W001 system check (make run runs the checks once).
    JWTEX_KEY_ENCRYPTION_KEYS_GENERATED = True

JWTEX_ALLOW_INSECURE_ISSUERS = env.flag("JWTEX_ALLOW_INSECURE_ISSUERS")
# Where tenants' published issuer documents go: file:///srv/issuers or s3://bucket/prefix (docs/endpoints.md).
JWTEX_PUBLISH_TARGET = env.text("JWTEX_PUBLISH_TARGET").strip()
JWTEX_RATE_LIMIT_PER_ADDRESS = env.whole("JWTEX_RATE_LIMIT_PER_ADDRESS")
JWTEX_TRUSTED_PROXY_COUNT = env.whole("JWTEX_TRUSTED_PROXY_COUNT")
# Admin login throttling (jwtex_site/login_throttle.py): failures per address and username
# within the window before the login answers 429; 0 turns it off.
JWTEX_LOGIN_MAX_FAILURES = env.whole("JWTEX_LOGIN_MAX_FAILURES")
JWTEX_LOGIN_LOCKOUT_SECONDS = env.whole("JWTEX_LOGIN_LOCKOUT_SECONDS")
# How long an exchange may wait for its issuer's keys to be fetched (then 503; the fetch goes on).
JWTEX_REQUEST_FETCH_BUDGET = env.number("JWTEX_REQUEST_FETCH_BUDGET")
# Request threads per web process (make serve passes the same variable to granian or gunicorn):
# at most half of them wait on upstream fetches at once (docs/errors.md#bursts), so a slow upstream cannot
# take the threads other tenants need.
JWTEX_SERVER_THREADS = env.whole("JWTEX_SERVER_THREADS")
# How long a web process trusts its tenant snapshots before reading the configuration epoch:
# 1.5 s, so that a change is served everywhere within 2 s (docs/operations.md#several-nodes; the re-check
# happens on the first request after the interval, and rebuilding the snapshot takes a moment too).
JWTEX_CONFIG_RECHECK_SECONDS = env.number("JWTEX_CONFIG_RECHECK_SECONDS")
# Benchmark-only (exchange/ablation.py, bench/http_benchmark.py): per-exchange work switched off, and
# the slowest exchanges' timelines. Honoured only outside production mode; set in production mode, the
# jwtex.E026 check refuses to start.
JWTEX_BENCH_REQUESTED = bool(env.names("JWTEX_BENCH_ABLATE")) or env.flag("JWTEX_BENCH_TIMELINE")
JWTEX_BENCH_ABLATE = () if JWTEX_PRODUCTION else tuple(env.names("JWTEX_BENCH_ABLATE"))
JWTEX_BENCH_TIMELINE = not JWTEX_PRODUCTION and env.flag("JWTEX_BENCH_TIMELINE")
# Where audit records wait while the database cannot take them (default: under JWTEX_VAR_DIR).
JWTEX_AUDIT_SPOOL_DIR = env.text("JWTEX_AUDIT_SPOOL_DIR")
# Mapper webhooks (docs/mapper.md#guards): https host names that may resolve to private addresses (the
# operator's list, never a tenant's), e.g. an in-house mapper behind the firewall.
JWTEX_MAPPER_ALLOWED_HOSTS = [h.lower() for h in env.names("JWTEX_MAPPER_ALLOWED_HOSTS")]
# The upstream issuers tenants may trust (docs/operators.md#allowed-upstream-issuers): exact issuer URLs or
# https://HOST/PATH* patterns, separated by commas or spaces; unset or empty: any issuer the URL rule accepts.
JWTEX_ALLOWED_UPSTREAM_ISSUERS = env.text("JWTEX_ALLOWED_UPSTREAM_ISSUERS")
# Where the operators keep jwtex's CI files, for the admin's CI jobs: the GitHub Action
# (OWNER/REPO@REF, action.yml at the repository's root) and the GitLab CI/CD component
# (HOST/GROUP/PROJECT/jwtex-token@VERSION). Unset: the jobs show placeholders.
JWTEX_CI_ACTION = env.text("JWTEX_CI_ACTION").strip()
JWTEX_CI_COMPONENT = env.text("JWTEX_CI_COMPONENT").strip()
# /metrics answers only with "Authorization: Bearer <this>" when set.
JWTEX_METRICS_TOKEN = env.text("JWTEX_METRICS_TOKEN")
# prometheus-client's multiprocess mode (make serve sets it for its processes): each node's
# /metrics reports the total of all its server processes.
JWTEX_METRICS_DIR = env.text("PROMETHEUS_MULTIPROC_DIR")

# The admin's single sign-on through the organisation's OpenID Connect provider
# (docs/operators.md#single-sign-on; README, "Operators and single sign-on"): on when the issuer, the client id and a
# client secret (or a private key for private_key_jwt) are set; jwtex.E02x checks refuse a half-done configuration.
JWTEX_ADMIN_OIDC_ISSUER = env.text("JWTEX_ADMIN_OIDC_ISSUER").strip()
JWTEX_ADMIN_OIDC_CLIENT_ID = env.text("JWTEX_ADMIN_OIDC_CLIENT_ID").strip()
JWTEX_ADMIN_OIDC_CLIENT_SECRET = env.text("JWTEX_ADMIN_OIDC_CLIENT_SECRET")
JWTEX_ADMIN_OIDC_PRIVATE_KEY_FILE = env.text("JWTEX_ADMIN_OIDC_PRIVATE_KEY_FILE").strip()
JWTEX_ADMIN_OIDC_PRIVATE_KEY_ID = env.text("JWTEX_ADMIN_OIDC_PRIVATE_KEY_ID").strip()
JWTEX_ADMIN_OIDC_SCOPES = " ".join(env.text("JWTEX_ADMIN_OIDC_SCOPES").replace(",", " ").split())
JWTEX_ADMIN_OIDC_ROLES_CLAIM = env.text("JWTEX_ADMIN_OIDC_ROLES_CLAIM").strip()
JWTEX_ADMIN_OIDC_ROLES_PREFIX = env.text("JWTEX_ADMIN_OIDC_ROLES_PREFIX")
JWTEX_ADMIN_OIDC_SUPERUSER_VALUE = env.text("JWTEX_ADMIN_OIDC_SUPERUSER_VALUE").strip()
JWTEX_ADMIN_OIDC_ROLES_EXCLUSIVE = env.flag("JWTEX_ADMIN_OIDC_ROLES_EXCLUSIVE")
JWTEX_ADMIN_OIDC_USERNAME_CLAIM = env.text("JWTEX_ADMIN_OIDC_USERNAME_CLAIM").strip()
JWTEX_ADMIN_OIDC_NAME = env.text("JWTEX_ADMIN_OIDC_NAME").strip()
# JWTEX_ADMIN_LOCAL_LOGIN=0: no passwords at the admin's login, only single sign-on.
JWTEX_ADMIN_LOCAL_LOGIN = env.flag("JWTEX_ADMIN_LOCAL_LOGIN")
# Each backend asks jwtex's settings whether it is on (passwords: JWTEX_ADMIN_LOCAL_LOGIN; sign-on:
# a configured provider), so both can stay listed.
AUTHENTICATION_BACKENDS = ["jwtex_site.sso.backend.LocalPasswordBackend", "jwtex_site.sso.backend.SignOnBackend"]

# Production mode with unsafe settings (DEBUG, a default secret key, no key-encryption keys,
# plain http) is reported by the jwtex.E00x system checks (exchange/checks.py): `manage.py
# check` lists them, and runserver, the WSGI application (make serve) and the Celery worker
# refuse to start while any is present.

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "tenants",
    "exchange",
]

# The exchange, discovery, JWKS, health and metrics endpoints skip the admin's middleware
# (jwtex_site/middleware.py): sessions, CSRF, auth, messages and login throttling are the admin's.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Refuses the admin login after repeated failures (docs/operators.md#login-throttling).
    "jwtex_site.middleware.AdminLoginThrottleMiddleware",
    "jwtex_site.middleware.AdminSessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "jwtex_site.middleware.AdminCsrfViewMiddleware",
    "jwtex_site.middleware.AdminAuthenticationMiddleware",
    # Who made a configuration change, for its revision (docs/operations.md#revisions).
    "jwtex_site.middleware.AdminRevisionActorMiddleware",
    "jwtex_site.middleware.AdminMessageMiddleware",
    # A PermissionDenied in the admin: its styled 403 page and a one-line log, not a traceback.
    "jwtex_site.middleware.AdminForbiddenMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# security.W003 ("CsrfViewMiddleware is not in MIDDLEWARE") is false here: CSRF runs for the admin
# through jwtex_site.middleware.AdminCsrfViewMiddleware, a CsrfViewMiddleware that skips only the
# machines' endpoints (no cookie, no form). Silenced exactly; jwtex.E025 fails if it is ever gone.
SILENCED_SYSTEM_CHECKS = ["security.W003"]

ROOT_URLCONF = "jwtex_site.urls"
WSGI_APPLICATION = "jwtex_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

_default_db = f"sqlite:///{VAR_DIR / 'jwtex.sqlite3'}"
_db_url = env.text("DATABASE_URL") or _default_db
if _db_url.startswith("sqlite:///") and not _db_url.startswith("sqlite:////"):
    # A relative SQLite path is relative to the project, not to the working directory.
    _db_url = f"sqlite:///{BASE_DIR / _db_url[len('sqlite:///') :]}"
# Persistent connections. Not health-checked before each request (that is a round trip per
# exchange): a connection that fails is closed, and every caller of the database answers for
# it (the audit spools, a warm runtime keeps serving, the rest answers 503), so a restarted
# database costs one failed statement per connection, never a 500.
DATABASES = {"default": dj_database_url.parse(_db_url, conn_max_age=60, conn_health_checks=False)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # WAL with synchronous=NORMAL: readers never wait for the writer, and a commit is one
    # write to the log rather than a rollback journal's fsyncs (docs/design/audit-path.md#sqlite).
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A database that does not answer must not hold a request (or an audit batch) for long.
    DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = 3
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHE_URL = env.text("CACHE_URL")
JWTEX_SHARED_CACHE = bool(CACHE_URL)  # /readyz checks the cache only when there is a shared one
if CACHE_URL.startswith(("redis://", "rediss://", "unix://")):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CACHE_URL,
            "KEY_PREFIX": "jwtex",
            "OPTIONS": {"socket_timeout": 2, "socket_connect_timeout": 2},
        }
    }
elif CACHE_URL:
    raise ImproperlyConfigured("CACHE_URL must be a redis:// URL (or unset for per-process memory)")
else:
    # Room for every tenant's and client's rate-limit counter: at the default 300 entries,
    # culling would reset counters and so loosen the limits once a few hundred tenants are busy.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "jwtex",
            "OPTIONS": {"MAX_ENTRIES": 200_000},
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
FORMAT_MODULE_PATH = ["jwtex_site.formats"]
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# The admin's and Swagger UI's assets, collected here by `manage.py collectstatic` (the container
# image does it when it is built, into a directory of its own: the var directory is a volume).
STATIC_ROOT = Path(env.text("JWTEX_STATIC_ROOT") or VAR_DIR / "static")
# Served by the web process itself with WhiteNoise (no proxy or sidecar needed): gzip'd copies
# made at collectstatic, ETag and Last-Modified, under either server of make serve. granian's own
# static route answers more requests a second but compresses nothing, sends no validators and
# serves nothing under gunicorn (bench/static_benchmark.py; README, "The container image").
# Only once collected: without them there is nothing to serve (DEBUG's runserver serves the
# apps' own files). The exchange and the issuer documents never reach it (exchange/api/fast.py).
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
if STATIC_ROOT.is_dir():
    MIDDLEWARE.insert(1, "whitenoise.middleware.WhiteNoiseMiddleware")  # right after SecurityMiddleware

# Security headers; cookies are Secure whenever the public URL is https.
_https = _public.scheme == "https"
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_SECURE = _https
CSRF_COOKIE_SECURE = _https
SESSION_COOKIE_HTTPONLY = True
CSRF_TRUSTED_ORIGINS = [f"{_public.scheme}://{_public.netloc}"]
if _https:
    SECURE_HSTS_SECONDS = env.whole("JWTEX_HSTS_SECONDS")
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "jwtex API",
    "DESCRIPTION": "Exchange CI OIDC tokens for tenant-signed JWTs carrying AWS session tags.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from our own static files (drf-spectacular-sidecar): no page loads anything
    # from another origin (docs/endpoints.md#openapi-schema-and-docs).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "exchange.api.openapi.document_exchange_endpoints",
    ],
}

# Celery: the embedded filesystem broker needs no server (docs/environment.md#development-defaults).
CELERY_BROKER_URL = env.text("CELERY_BROKER_URL")
if CELERY_BROKER_URL == "filesystem://":
    _broker_dir = VAR_DIR / "celery-broker"
    for sub in ("out", "processed", "control"):
        (_broker_dir / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "out"),
        "data_folder_out": str(_broker_dir / "out"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        # Look for new messages (and, between looks, for a shutdown request) 4 times a second, not
        # kombu's once a second: a queued task starts, and Ctrl-C ends the worker, without a wait.
        "polling_interval": 0.25,
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ALWAYS_EAGER = env.flag("CELERY_TASK_ALWAYS_EAGER")
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

try:
    # The one logging configuration: the web processes, the worker and beat here, and make serve's
    # servers, whose own lines (start-up, access, errors) it formats too (jwtex_site/serve.py).
    LOGGING = jwtex_logging.configured()
except env.BadVariable as exc:
    raise ImproperlyConfigured(str(exc)) from None
# Celery (worker and beat) logs through the same configuration (jwtex_site/celery.py).
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
