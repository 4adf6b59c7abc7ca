"""System checks (``manage.py check``): a production configuration must be safe (docs/environment.md#production-mode).

Production mode is any run whose ``JWTEX_PUBLIC_URL`` host is not loopback. Each concern is one
short check with its own id (django-axes style); ``runserver``, the WSGI application and the
Celery worker refuse to start while any error is reported (``refuse_unsafe_start``).
"""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register, run_checks
from django.core.exceptions import ImproperlyConfigured

from .conf import jwtex_settings


class Messages:
    PUBLIC_URL = "JWTEX_PUBLIC_URL is not an absolute http(s) URL."
    DEBUG = "DJANGO_DEBUG is on in production mode."
    SECRET_KEY = "DJANGO_SECRET_KEY is unset, the default, or shorter than 32 characters."
    KEY_ENCRYPTION_KEYS = "JWTEX_KEY_ENCRYPTION_KEYS is not set: signing keys would not be encrypted at rest."
    HTTPS = "JWTEX_PUBLIC_URL is not https in production mode."
    SECURE_COOKIES = "Session and CSRF cookies are not Secure in production mode."
    INSECURE_ISSUERS = "JWTEX_ALLOW_INSECURE_ISSUERS is on in production mode."
    SECURITY_HEADERS = "Security headers are off in production mode: {missing}."
    SESSION_COOKIE = "The session cookie is not HttpOnly and SameSite in production mode."
    DEV_KEY = "Signing keys are encrypted with a development key generated under var/."
    PER_PROCESS_CACHE = (
        "The cache is per process: rate limits, one-time upstream tokens and admin login throttling do not hold "
        "across web processes."
    )
    LOGIN_THROTTLE = "Admin login throttling is off."


class Hints:
    PUBLIC_URL = "Set JWTEX_PUBLIC_URL to the service's external base URL, e.g. https://jwtex.example.com."
    DEBUG = "Unset DJANGO_DEBUG (production mode is any JWTEX_PUBLIC_URL whose host is not loopback)."
    SECRET_KEY = "Set DJANGO_SECRET_KEY to a long random string: python3 -c 'import secrets; print(secrets.token_urlsafe(50))'."
    KEY_ENCRYPTION_KEYS = (
        "Set JWTEX_KEY_ENCRYPTION_KEYS (comma-separated; the first encrypts): "
        "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'."
    )
    HTTPS = "AWS trusts only https issuers: set JWTEX_PUBLIC_URL=https://…"
    SECURE_COOKIES = "Set SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True."
    INSECURE_ISSUERS = "It is for development and tests only: unset it."
    SECURITY_HEADERS = "Keep SecurityMiddleware, XFrameOptionsMiddleware, SECURE_HSTS_SECONDS and SECURE_CONTENT_TYPE_NOSNIFF."
    SESSION_COOKIE = "Set SESSION_COOKIE_HTTPONLY = True and SESSION_COOKIE_SAMESITE = 'Lax' or 'Strict'."
    DEV_KEY = "Set JWTEX_KEY_ENCRYPTION_KEYS before holding real keys; never run like this in production."
    PER_PROCESS_CACHE = "Set CACHE_URL=redis://… (the README's production set-up)."
    LOGIN_THROTTLE = "Keep LoginThrottleMiddleware and JWTEX_LOGIN_MAX_FAILURES > 0."


class Codes:
    PUBLIC_URL = "jwtex.E009"
    DEBUG = "jwtex.E001"
    SECRET_KEY = "jwtex.E002"
    KEY_ENCRYPTION_KEYS = "jwtex.E003"
    HTTPS = "jwtex.E004"
    SECURE_COOKIES = "jwtex.E005"
    INSECURE_ISSUERS = "jwtex.E006"
    SECURITY_HEADERS = "jwtex.E007"
    SESSION_COOKIE = "jwtex.E008"
    DEV_KEY = "jwtex.W001"
    PER_PROCESS_CACHE = "jwtex.W002"
    LOGIN_THROTTLE = "jwtex.W003"


_SECURITY_MIDDLEWARE = "django.middleware.security.SecurityMiddleware"
_FRAME_MIDDLEWARE = "django.middleware.clickjacking.XFrameOptionsMiddleware"
_LOGIN_THROTTLE_MIDDLEWARE = "jwtex_site.middleware.AdminLoginThrottleMiddleware"
_PER_PROCESS_CACHES = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
    "django.core.cache.backends.filebased.FileBasedCache",
)


def _production() -> bool:
    return jwtex_settings.production


def _problem(kind, name: str, **fmt) -> list:
    return [kind(getattr(Messages, name).format(**fmt), hint=getattr(Hints, name), id=getattr(Codes, name))]


@register(Tags.security)
def check_public_url(app_configs, **kwargs):
    return [] if jwtex_settings.public_url_valid else _problem(Error, "PUBLIC_URL")


@register(Tags.security)
def check_debug(app_configs, **kwargs):
    return _problem(Error, "DEBUG") if _production() and settings.DEBUG else []


@register(Tags.security)
def check_secret_key(app_configs, **kwargs):
    weak = settings.SECRET_KEY.startswith("django-insecure") or len(settings.SECRET_KEY) < 32
    return _problem(Error, "SECRET_KEY") if _production() and weak else []


@register(Tags.security)
def check_key_encryption_keys(app_configs, **kwargs):
    if not _production():
        return _problem(Warning, "DEV_KEY") if jwtex_settings.key_encryption_keys_generated else []
    missing = not jwtex_settings.key_encryption_keys or jwtex_settings.key_encryption_keys_generated
    return _problem(Error, "KEY_ENCRYPTION_KEYS") if missing else []


@register(Tags.security)
def check_https(app_configs, **kwargs):
    plain = jwtex_settings.public_url_valid and not jwtex_settings.public_url.startswith("https://")
    return _problem(Error, "HTTPS") if _production() and plain else []


@register(Tags.security)
def check_secure_cookies(app_configs, **kwargs):
    secure = settings.SESSION_COOKIE_SECURE and settings.CSRF_COOKIE_SECURE
    return _problem(Error, "SECURE_COOKIES") if _production() and not secure else []


@register(Tags.security)
def check_insecure_issuers(app_configs, **kwargs):
    return _problem(Error, "INSECURE_ISSUERS") if _production() and jwtex_settings.allow_insecure_issuers else []


@register(Tags.security)
def check_security_headers(app_configs, **kwargs):
    if not _production():
        return []
    middleware = list(settings.MIDDLEWARE)
    missing = []
    if _SECURITY_MIDDLEWARE not in middleware:
        missing.append("SecurityMiddleware")
    if not settings.SECURE_HSTS_SECONDS:
        missing.append("HSTS (SECURE_HSTS_SECONDS)")
    if not settings.SECURE_CONTENT_TYPE_NOSNIFF:
        missing.append("X-Content-Type-Options: nosniff")
    if _FRAME_MIDDLEWARE not in middleware or settings.X_FRAME_OPTIONS != "DENY":
        missing.append("X-Frame-Options: DENY")
    return _problem(Error, "SECURITY_HEADERS", missing=", ".join(missing)) if missing else []


@register(Tags.security)
def check_session_cookie(app_configs, **kwargs):
    samesite = settings.SESSION_COOKIE_SAMESITE
    unsafe = not settings.SESSION_COOKIE_HTTPONLY or samesite in (None, "None", False)
    return _problem(Error, "SESSION_COOKIE") if _production() and unsafe else []


@register(Tags.security)
def check_shared_cache(app_configs, **kwargs):
    backend = settings.CACHES.get("default", {}).get("BACKEND", "")
    return _problem(Warning, "PER_PROCESS_CACHE") if _production() and backend in _PER_PROCESS_CACHES else []


@register(Tags.security)
def check_login_throttle(app_configs, **kwargs):
    off = _LOGIN_THROTTLE_MIDDLEWARE not in settings.MIDDLEWARE or jwtex_settings.login_max_failures <= 0
    return _problem(Warning, "LOGIN_THROTTLE") if _production() and off else []


def refuse_unsafe_start(what: str) -> None:
    """Raise ``ImproperlyConfigured`` naming every jwtex error check that fails: the WSGI
    application and the Celery worker call this before they serve anything."""
    errors = [m for m in run_checks(tags=[Tags.security]) if m.is_serious() and (m.id or "").startswith("jwtex.")]
    if errors:
        lines = "\n".join(f"  ({m.id}) {m.msg} HINT: {m.hint}" for m in errors)
        raise ImproperlyConfigured(f"Refusing to start the {what} with an unsafe configuration:\n{lines}")
