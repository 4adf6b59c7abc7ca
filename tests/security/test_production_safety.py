"""Production safety (docs/environment.md#production-mode): the service refuses to start, and ``manage.py check`` fails,
with an unsafe production configuration; security headers are sent; the admin login is
throttled against password guessing."""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
from django.conf import global_settings
from django.contrib.auth import get_user_model
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured

from exchange.checks import startup_checks_enforce

from .endpoints import send

ROOT = Path(__file__).resolve().parents[2]
STRONG_SECRET = "k3y-" + "9f8e7d6c5b4a3210" * 4
PRODUCTION_ENV = {
    "JWTEX_PUBLIC_URL": "https://jwtex.example.com",
    "DJANGO_SECRET_KEY": STRONG_SECRET,
    "JWTEX_KEY_ENCRYPTION_KEYS": "kek-" + "0123456789abcdef" * 2,
    "CACHE_URL": "redis://127.0.0.1:6379/0",  # never connected to: nothing here touches the cache
    "DJANGO_ALLOWED_HOSTS": "jwtex.example.com",
}


def _environment(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The whole environment of a process started with ``env``: nothing of the test run's."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "JWTEX_VAR_DIR": str(tmp_path / "var"),
        "PYTHONPATH": str(ROOT),
        **env,
    }


def production_run(args: list[str], env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=_environment(env, tmp_path), capture_output=True, text=True, timeout=120
    )


SHOW_SETTINGS = (
    "import django, json; from django.conf import settings as s; "
    "print(json.dumps({n: getattr(s, n) for n in ('DEBUG', 'JWTEX_PRODUCTION', 'SECURE_HSTS_SECONDS', "
    "'SECURE_HSTS_INCLUDE_SUBDOMAINS', 'SESSION_COOKIE_SECURE', 'CSRF_COOKIE_SECURE', 'SESSION_COOKIE_HTTPONLY', "
    "'SECURE_CONTENT_TYPE_NOSNIFF', 'X_FRAME_OPTIONS', 'SECURE_PROXY_SSL_HEADER', 'MIDDLEWARE')}))"
)


def test_production_settings_are_secure_by_default(tmp_path):
    result = production_run(
        ["-c", f"import os; os.environ['DJANGO_SETTINGS_MODULE']='jwtex_site.settings'; {SHOW_SETTINGS}"],
        PRODUCTION_ENV,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    import json

    values = json.loads(result.stdout.strip().splitlines()[-1])
    assert values["JWTEX_PRODUCTION"] is True and values["DEBUG"] is False
    assert values["SECURE_HSTS_SECONDS"] >= 31536000 and values["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is True
    assert values["SESSION_COOKIE_SECURE"] and values["CSRF_COOKIE_SECURE"] and values["SESSION_COOKIE_HTTPONLY"]
    assert values["SECURE_CONTENT_TYPE_NOSNIFF"] and values["X_FRAME_OPTIONS"] == "DENY"
    assert values["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert "jwtex_site.middleware.AdminLoginThrottleMiddleware" in values["MIDDLEWARE"]


def test_manage_check_passes_a_safe_production_configuration(tmp_path):
    result = production_run(["manage.py", "check", "--fail-level", "WARNING"], PRODUCTION_ENV, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    assert "no issues" in result.stdout


UNSAFE = [
    ({"DJANGO_DEBUG": "1"}, "jwtex.E001", "DJANGO_DEBUG is on"),
    ({"DJANGO_SECRET_KEY": ""}, "jwtex.E002", "DJANGO_SECRET_KEY is unset"),
    (
        {"DJANGO_SECRET_KEY": "django-insecure-jwtex-development-only"},
        "jwtex.E002",
        "DJANGO_SECRET_KEY is unset, the default",
    ),
    (
        {"DJANGO_SECRET_KEY": "short-secret"},
        "jwtex.E002",
        "DJANGO_SECRET_KEY is unset, the default, or shorter than 32",
    ),
    ({"JWTEX_KEY_ENCRYPTION_KEYS": ""}, "jwtex.E003", "JWTEX_KEY_ENCRYPTION_KEYS is not set"),
    ({"JWTEX_PUBLIC_URL": "http://jwtex.example.com"}, "jwtex.E004", "JWTEX_PUBLIC_URL is not https"),
    ({"JWTEX_PUBLIC_URL": "jwtex.example.com"}, "jwtex.E009", "JWTEX_PUBLIC_URL is not an absolute http(s) URL"),
]
UNSAFE_IDS = ["debug", "no-secret", "default-secret", "short-secret", "no-kek", "http", "not-a-url"]

# The end-to-end runs (a process each) take several of those at once; every one of them is also
# checked alone, against the settings a process with that environment has (below).
TOGETHER = {
    "debug+short-secret+no-kek+http": ["debug", "short-secret", "no-kek", "http"],
    "not-a-url+no-secret": ["not-a-url", "no-secret"],
}


def _together(ids: list[str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """The environment changes of the ``UNSAFE`` entries ``ids`` (none sets what another does),
    and the (code, message) each must be reported with."""
    chosen = [UNSAFE[UNSAFE_IDS.index(i)] for i in ids]
    change = {name: value for entry in chosen for name, value in entry[0].items()}
    assert len(change) == sum(len(entry[0]) for entry in chosen), "two variants set the same variable"
    return change, [(code, message) for _, code, message in chosen]


REPORT_LINES = re.compile(
    r"SystemCheckError: System check identified some issues:|ERRORS:|WARNINGS:|\?: \([\w.]+\) .*|\tHINT: .*"
    r"|System check identified \d+ issues? \(0 silenced\)\.|"
)


@pytest.mark.parametrize("ids", TOGETHER.values(), ids=TOGETHER.keys())
def test_manage_check_reports_unsafe_production_settings_as_system_check_errors(tmp_path, ids):
    # The jwtex.E00x messages, not a traceback (docs/environment.md#system-checks).
    change, expected = _together(ids)
    result = production_run(["manage.py", "check"], {**PRODUCTION_ENV, **change}, tmp_path)
    assert result.returncode != 0
    for code, message in expected:
        assert f"?: ({code}) {message}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "ImproperlyConfigured" not in result.stderr
    # Nothing but Django's report of the checks (a message and its hint each).
    assert all(REPORT_LINES.fullmatch(line) for line in result.stderr.splitlines()), result.stderr


def test_service_refuses_to_serve_with_unsafe_production_settings(tmp_path):
    # The WSGI application (what make serve and gunicorn load) refuses to start.
    change, expected = _together(TOGETHER["debug+short-secret+no-kek+http"])
    result = production_run(["-c", "import jwtex_site.wsgi"], {**PRODUCTION_ENV, **change}, tmp_path)
    assert result.returncode != 0
    assert "Refusing to start the web application with an unsafe configuration" in result.stderr
    for code, message in expected:
        assert f"({code}) {message}" in result.stderr


def test_the_celery_worker_refuses_unsafe_production_settings(tmp_path):
    script = "from jwtex_site.celery import app; from celery.signals import worker_init; worker_init.send(sender=None)"
    result = production_run(["-c", script], {**PRODUCTION_ENV, "DJANGO_DEBUG": "1"}, tmp_path)
    assert result.returncode != 0 and "(jwtex.E001) DJANGO_DEBUG is on" in result.stderr


# --- each environment on its own, as the settings of a process started with it -------------------

# What a process's settings module sets that is this test process's own business (its apps,
# database, URLs, templates and logging, Celery's configuration): never taken over.
PROCESS_OWN = {
    "BASE_DIR",
    "VAR_DIR",
    "INSTALLED_APPS",
    "DATABASES",
    "ROOT_URLCONF",
    "TEMPLATES",
    "LOGGING",
    "STATIC_ROOT",
}


def _as_a_process_with(settings, env: dict[str, str], tmp_path: Path) -> None:
    """Make ``settings`` what ``jwtex_site/settings.py`` makes of ``env`` in a process started as
    ``production_run`` starts one (the module run afresh with exactly that environment), for every setting
    the checks could read: the module's values, and Django's defaults for what it leaves unset
    (e.g. no SECURE_HSTS_SECONDS over plain http)."""
    with mock.patch.dict(os.environ, _environment(env, tmp_path), clear=True):
        module = runpy.run_path(str(ROOT / "jwtex_site" / "settings.py"))
    values = {name: getattr(global_settings, name) for name in dir(global_settings) if name.isupper()}
    values.update((name, value) for name, value in module.items() if name.isupper())
    for name, value in values.items():
        if name in PROCESS_OWN or name.startswith("CELERY_"):
            continue
        if getattr(settings, name, object()) != value:
            setattr(settings, name, value)


@pytest.mark.parametrize("change, code, message", UNSAFE, ids=UNSAFE_IDS)
def test_each_unsafe_production_environment_is_a_system_check_error_and_refuses_to_start(
    settings, tmp_path, change, code, message
):
    _as_a_process_with(settings, {**PRODUCTION_ENV, **change}, tmp_path)
    assert settings.JWTEX_PRODUCTION is True
    reported = [str(m) for m in run_checks() if m.is_serious() and m.id == code]
    # What manage.py check prints for it (Django's own formatting of the message).
    assert any(line.startswith(f"?: ({code}) {message}") for line in reported), reported
    with pytest.raises(ImproperlyConfigured) as refused:
        startup_checks_enforce("web application")
    assert "Refusing to start the web application with an unsafe configuration" in str(refused.value)
    assert f"({code}) {message}" in str(refused.value)


def test_the_safe_production_environment_passes_every_check(settings, tmp_path):
    _as_a_process_with(settings, PRODUCTION_ENV, tmp_path)
    assert settings.JWTEX_PRODUCTION is True and settings.DEBUG is False
    assert [str(m) for m in run_checks() if m.id.startswith("jwtex.")] == []
    startup_checks_enforce("web application")  # does not raise


@pytest.mark.parametrize("debug", ["0", "1"])
@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://localhost:8000"])
def test_loopback_public_url_is_not_production(settings, tmp_path, url, debug):
    # http://127.0.0.1… / http://localhost… is a valid local set-up, DEBUG on or off
    # (docs/environment.md#production-mode).
    # (make run shows manage.py check passing so end to end: http://127.0.0.1:PORT, DEBUG on.)
    _as_a_process_with(settings, {"JWTEX_PUBLIC_URL": url, "DJANGO_DEBUG": debug}, tmp_path)
    assert settings.JWTEX_PRODUCTION is False and settings.DEBUG is (debug == "1")
    messages = run_checks()
    assert [str(m) for m in messages if m.is_serious()] == []
    # No key-encryption keys given: a development key under var/, said as a warning only.
    assert {m.id for m in messages if m.id.startswith("jwtex.")} == {"jwtex.W001"}
    startup_checks_enforce("web application")  # does not raise


# --- the checks themselves, against settings loosened after start-up -----------------------------


@pytest.fixture
def production(settings):
    """Settings of a safe production deployment; each test loosens one thing."""
    settings.JWTEX_PRODUCTION = True
    settings.DEBUG = False
    settings.SECRET_KEY = STRONG_SECRET
    settings.JWTEX_KEY_ENCRYPTION_KEYS = ["kek-0123456789abcdef0123456789abcdef"]
    settings.JWTEX_KEY_ENCRYPTION_KEYS_GENERATED = False
    settings.JWTEX_PUBLIC_URL = "https://jwtex.example.com"
    settings.SESSION_COOKIE_SECURE = True
    settings.CSRF_COOKIE_SECURE = True
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.JWTEX_ALLOW_INSECURE_ISSUERS = False
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:6379/0"}
    }
    return settings


def _ids() -> set[str]:
    return {message.id for message in run_checks(tags=["security"]) if message.id.startswith("jwtex.")}


def test_safe_production_settings_pass_the_checks(production):
    assert _ids() == set()


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("DEBUG", True, "jwtex.E001"),
        ("SECRET_KEY", "django-insecure-" + "x" * 40, "jwtex.E002"),
        ("SECRET_KEY", "too-short", "jwtex.E002"),
        ("JWTEX_KEY_ENCRYPTION_KEYS", [], "jwtex.E003"),
        ("JWTEX_KEY_ENCRYPTION_KEYS_GENERATED", True, "jwtex.E003"),
        ("JWTEX_PUBLIC_URL", "http://jwtex.example.com", "jwtex.E004"),
        ("SESSION_COOKIE_SECURE", False, "jwtex.E005"),
        ("CSRF_COOKIE_SECURE", False, "jwtex.E005"),
        ("JWTEX_ALLOW_INSECURE_ISSUERS", True, "jwtex.E006"),
        ("SECURE_HSTS_SECONDS", 0, "jwtex.E007"),
        ("SECURE_CONTENT_TYPE_NOSNIFF", False, "jwtex.E007"),
        ("X_FRAME_OPTIONS", "SAMEORIGIN", "jwtex.E007"),
        ("SESSION_COOKIE_HTTPONLY", False, "jwtex.E008"),
        ("SESSION_COOKIE_SAMESITE", "None", "jwtex.E008"),
        ("CACHES", {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}, "jwtex.W002"),
        ("JWTEX_LOGIN_MAX_FAILURES", 0, "jwtex.W003"),
    ],
)
def test_system_checks_refuse_unsafe_production_settings(production, name, value, expected):
    setattr(production, name, value)
    assert expected in _ids()
    if expected.startswith("jwtex.E"):
        assert any(m.id == expected and m.is_serious() for m in run_checks(tags=["security"]))


def test_system_checks_refuse_missing_security_middleware(production):
    production.MIDDLEWARE = [
        m
        for m in production.MIDDLEWARE
        if m
        not in ("django.middleware.security.SecurityMiddleware", "jwtex_site.middleware.AdminLoginThrottleMiddleware")
    ]
    assert {"jwtex.E007", "jwtex.W003"} <= _ids()


def test_development_key_is_a_warning_outside_production(settings):
    settings.JWTEX_PRODUCTION = False
    settings.JWTEX_KEY_ENCRYPTION_KEYS_GENERATED = True
    assert _ids() == {"jwtex.W001"}


# --- security headers -----------------------------------------------------------------------------

PAGES = ["/admin/login/", "/api/schema/", "/t/acme/.well-known/jwks.json", "/t/nope/.well-known/jwks.json"]


@pytest.mark.parametrize("path", PAGES)
def test_security_headers_on_every_kind_of_page(client, tenant, path):
    response = client.get(path)
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    # Plain http (the local set-up): no HSTS, which browsers ignore there anyway (RFC 6797 §7.2).
    assert "Strict-Transport-Security" not in response


@pytest.mark.parametrize("endpoint", ["raw", "rfc8693", "api"])
def test_security_headers_on_exchange_answers(client, endpoint, exchangeable, upstream):
    for token in (upstream.mint(), "garbage"):
        response = send(endpoint, client, token)
        assert response["X-Content-Type-Options"] == "nosniff" and response["X-Frame-Options"] == "DENY"
        assert response["Cache-Control"] == "no-store"


def test_hsts_behind_a_tls_terminating_proxy(client, settings, tenant):
    # The production settings for an https public URL (see test_production_settings_are_secure_by_default).
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    for path in ("/admin/login/", "/t/acme/.well-known/jwks.json", "/t/acme/exchange"):
        response = client.get(path, HTTP_X_FORWARDED_PROTO="https")
        assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains", path
    assert "Strict-Transport-Security" not in client.get("/admin/login/")


def test_session_and_csrf_cookies_are_secure_in_production(client, settings, db):
    settings.SESSION_COOKIE_SECURE = True
    settings.CSRF_COOKIE_SECURE = True
    user = get_user_model().objects.create_superuser("root", password="correct horse battery staple")
    response = client.get("/admin/login/")
    csrf = response.cookies["csrftoken"]
    assert csrf["secure"] and csrf["samesite"] == "Lax"
    response = client.post(
        "/admin/login/",
        {"username": user.username, "password": "correct horse battery staple", "next": "/admin/"},
        secure=True,
    )
    assert response.status_code == 302
    session = response.cookies["sessionid"]
    assert session["secure"] and session["httponly"] and session["samesite"] == "Lax"


# --- admin login throttling -----------------------------------------------------------------------

PASSWORD = "correct horse battery staple"


@pytest.fixture
def admin_user(db):
    return get_user_model().objects.create_superuser("operator", password=PASSWORD)


def _login(client, username, password, address="203.0.113.7"):
    return client.post(
        "/admin/login/?next=/admin/",
        {"username": username, "password": password, "next": "/admin/"},
        REMOTE_ADDR=address,
    )


def test_admin_login_is_throttled_after_repeated_failures(client, settings, admin_user):
    settings.JWTEX_LOGIN_MAX_FAILURES = 3
    for _ in range(3):
        response = _login(client, "operator", "guess")
        assert response.status_code == 200 and b"correct username and password" in response.content
    # Locked: even the right password is refused, without being checked.
    response = _login(client, "operator", PASSWORD)
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 900
    assert b"Too many failed login attempts" in response.content
    # The admin's own look, not bare HTML (docs/operators.md#login-throttling).
    assert b"admin/css/base.css" in response.content and b"jwtex administration" in response.content
    assert "_auth_user_id" not in client.session
    # Case does not open a new budget.
    assert _login(client, "OPERATOR", PASSWORD).status_code == 429
    # Another address is not locked out by this one.
    assert _login(client, "operator", PASSWORD, address="198.51.100.20").status_code == 302


def test_admin_login_success_resets_the_count(client, settings, admin_user):
    settings.JWTEX_LOGIN_MAX_FAILURES = 3
    for _ in range(2):
        assert _login(client, "operator", "guess").status_code == 200
    assert _login(client, "operator", PASSWORD).status_code == 302
    client.logout()
    for _ in range(2):
        assert _login(client, "operator", "guess").status_code == 200
    assert _login(client, "operator", PASSWORD).status_code == 302  # not locked: the count restarted


def test_admin_login_throttles_an_address_spraying_usernames(client, settings, admin_user):
    settings.JWTEX_LOGIN_MAX_FAILURES = 3
    settings.JWTEX_LOGIN_MAX_FAILURES_PER_ADDRESS = 5
    for index in range(5):
        assert _login(client, f"user{index}", "guess").status_code == 200
    assert _login(client, "operator", PASSWORD).status_code == 429


def test_admin_login_lock_ends_with_the_window(client, settings, admin_user, monkeypatch):
    import jwtex_site.login_throttle as throttle

    settings.JWTEX_LOGIN_MAX_FAILURES = 2
    settings.JWTEX_LOGIN_LOCKOUT_SECONDS = 600
    clock = [throttle.time.time()]
    monkeypatch.setattr(throttle.time, "time", lambda: clock[0])
    for _ in range(2):
        assert _login(client, "operator", "guess").status_code == 200
    assert _login(client, "operator", PASSWORD).status_code == 429
    clock[0] += 601
    assert _login(client, "operator", PASSWORD).status_code == 302


def test_admin_login_throttling_can_be_turned_off(client, settings, admin_user):
    settings.JWTEX_LOGIN_MAX_FAILURES = 0
    for _ in range(10):
        assert _login(client, "operator", "guess").status_code == 200
    assert _login(client, "operator", PASSWORD).status_code == 302


def test_admin_login_page_itself_is_not_throttled(client, settings, admin_user):
    settings.JWTEX_LOGIN_MAX_FAILURES = 1
    assert _login(client, "operator", "guess").status_code == 200
    assert client.get("/admin/login/", REMOTE_ADDR="203.0.113.7").status_code == 200
