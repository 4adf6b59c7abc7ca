"""System checks (``manage.py check``): a production configuration must be safe (SPEC §1).

Production mode is any run whose ``JWTEX_PUBLIC_URL`` host is not loopback. The settings
module already refuses to start with the worst of these; the checks also catch a settings
file (or override) that loosens them afterwards.
"""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

_SECURITY_MIDDLEWARE = "django.middleware.security.SecurityMiddleware"
_FRAME_MIDDLEWARE = "django.middleware.clickjacking.XFrameOptionsMiddleware"
_LOGIN_THROTTLE_MIDDLEWARE = "jwtex_site.login_throttle.LoginThrottleMiddleware"
_PER_PROCESS_CACHES = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
    "django.core.cache.backends.filebased.FileBasedCache",
)


def _security_header_problems() -> list[str]:
    middleware = list(getattr(settings, "MIDDLEWARE", []))
    missing = []
    if _SECURITY_MIDDLEWARE not in middleware:
        missing.append("SecurityMiddleware")
    if not getattr(settings, "SECURE_HSTS_SECONDS", 0):
        missing.append("HSTS (SECURE_HSTS_SECONDS)")
    if not getattr(settings, "SECURE_CONTENT_TYPE_NOSNIFF", False):
        missing.append("X-Content-Type-Options: nosniff")
    if _FRAME_MIDDLEWARE not in middleware or getattr(settings, "X_FRAME_OPTIONS", "DENY") != "DENY":
        missing.append("X-Frame-Options: DENY")
    return missing


@register(Tags.security, deploy=False)
def check_production_settings(app_configs, **kwargs):
    problems = []
    production = getattr(settings, "JWTEX_PRODUCTION", False)
    if production:
        if settings.DEBUG:
            problems.append(Error("DEBUG is on in production mode.", id="jwtex.E001"))
        if settings.SECRET_KEY.startswith("django-insecure") or len(settings.SECRET_KEY) < 32:
            problems.append(Error("DJANGO_SECRET_KEY is a default or too short.", id="jwtex.E002"))
        if not settings.JWTEX_KEY_ENCRYPTION_KEYS or settings.JWTEX_KEY_ENCRYPTION_KEYS_GENERATED:
            problems.append(Error("JWTEX_KEY_ENCRYPTION_KEYS is not set.", id="jwtex.E003"))
        if not settings.JWTEX_PUBLIC_URL.startswith("https://"):
            problems.append(Error("JWTEX_PUBLIC_URL must be https in production mode.", id="jwtex.E004"))
        if not (settings.SESSION_COOKIE_SECURE and settings.CSRF_COOKIE_SECURE):
            problems.append(Error("Session and CSRF cookies must be Secure in production mode.", id="jwtex.E005"))
        if getattr(settings, "JWTEX_ALLOW_INSECURE_ISSUERS", False):
            problems.append(
                Error("JWTEX_ALLOW_INSECURE_ISSUERS must be off in production mode.", id="jwtex.E006")
            )
        missing = _security_header_problems()
        if missing:
            problems.append(
                Error("Security headers are off in production mode: " + ", ".join(missing) + ".", id="jwtex.E007")
            )
        if not getattr(settings, "SESSION_COOKIE_HTTPONLY", True) or getattr(settings, "SESSION_COOKIE_SAMESITE", "Lax") in (
            None,
            "None",
            False,
        ):
            problems.append(
                Error(
                    "The session cookie must be HttpOnly and SameSite in production mode.",
                    hint="Set SESSION_COOKIE_HTTPONLY = True and SESSION_COOKIE_SAMESITE = 'Lax' or 'Strict'.",
                    id="jwtex.E008",
                )
            )
        backend = settings.CACHES.get("default", {}).get("BACKEND", "")
        if backend in _PER_PROCESS_CACHES:
            problems.append(
                Warning(
                    "The cache is per process: rate limits, one-time upstream tokens and admin login "
                    "throttling do not hold across web processes.",
                    hint="Set CACHE_URL=redis://… (the README's production set-up).",
                    id="jwtex.W002",
                )
            )
        if _LOGIN_THROTTLE_MIDDLEWARE not in settings.MIDDLEWARE or getattr(settings, "JWTEX_LOGIN_MAX_FAILURES", 5) <= 0:
            problems.append(Warning("Admin login throttling is off.", id="jwtex.W003"))
    elif getattr(settings, "JWTEX_KEY_ENCRYPTION_KEYS_GENERATED", False):
        problems.append(
            Warning(
                "Signing keys are encrypted with a development key generated under var/.",
                hint="Set JWTEX_KEY_ENCRYPTION_KEYS before holding real keys.",
                id="jwtex.W001",
            )
        )
    return problems
