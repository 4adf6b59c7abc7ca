"""System checks (``manage.py check``): a production configuration must be safe (SPEC §1)."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register


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
    elif getattr(settings, "JWTEX_KEY_ENCRYPTION_KEYS_GENERATED", False):
        problems.append(
            Warning(
                "Signing keys are encrypted with a development key generated under var/.",
                hint="Set JWTEX_KEY_ENCRYPTION_KEYS before holding real keys.",
                id="jwtex.W001",
            )
        )
    return problems
