"""System checks (``manage.py check``): a production configuration must be safe (docs/environment.md#production-mode).

Production mode is any run whose ``JWTEX_PUBLIC_URL`` host is not loopback. Each concern is one
short check with its own id (django-axes style); ``runserver``, the WSGI application and the
Celery worker refuse to start while any error is reported (``startup_checks_enforce``).
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register, run_checks
from django.core.exceptions import ImproperlyConfigured
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.module_loading import import_string

from .ablation import PIECES
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
    BENCH = "A benchmark-only setting (JWTEX_BENCH_ABLATE, JWTEX_BENCH_TIMELINE) is set in production mode."
    BENCH_ON = "Benchmark mode: {pieces} switched off for every exchange (exchange/ablation.py)."
    BENCH_UNKNOWN = "JWTEX_BENCH_ABLATE names no such piece of work: {unknown}."
    ADMIN_CSRF = (
        "The admin has no CSRF protection: no CsrfViewMiddleware (or jwtex's AdminCsrfViewMiddleware) in MIDDLEWARE."
    )
    SSO_PARTIAL = "Admin single sign-on is half configured: {missing} {verb} missing."
    SSO_NOBODY = "JWTEX_ADMIN_LOCAL_LOGIN is off and single sign-on is not configured: nobody can log in to the admin."
    SSO_HTTPS = "JWTEX_ADMIN_OIDC_ISSUER is not https in production mode."
    SSO_KEY = "JWTEX_ADMIN_OIDC_PRIVATE_KEY_FILE is not a readable PEM RSA or EC P-256 private key: {problem}."
    SSO_ROLES_CLAIM = "JWTEX_ADMIN_OIDC_ROLES_CLAIM is empty: single sign-on could give nobody a role."
    RULE_COST = (
        "Rule {rule!r} of tenant {tenant!r} is over its cost budget: {why}. It denies every exchange that reaches it."
    )
    ALLOWED_ISSUERS = "JWTEX_ALLOWED_UPSTREAM_ISSUERS has entries that match nothing: {problems}."
    ISSUER_REFUSED = (
        "Tenant {tenant!r} trusts {count} upstream issuer(s) outside JWTEX_ALLOWED_UPSTREAM_ISSUERS, "
        "refused at every exchange: {issuers}."
    )


class Hints:
    PUBLIC_URL = "Set JWTEX_PUBLIC_URL to the service's external base URL, e.g. https://jwtex.example.com."
    DEBUG = "Unset DJANGO_DEBUG (production mode is any JWTEX_PUBLIC_URL whose host is not loopback)."
    SECRET_KEY = (
        "Set DJANGO_SECRET_KEY to a long random string: python3 -c 'import secrets; print(secrets.token_urlsafe(50))'."
    )
    KEY_ENCRYPTION_KEYS = (
        "Set JWTEX_KEY_ENCRYPTION_KEYS (comma-separated; the first encrypts): "
        "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'."
    )
    HTTPS = "AWS trusts only https issuers: set JWTEX_PUBLIC_URL=https://…"
    SECURE_COOKIES = "Set SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True."
    INSECURE_ISSUERS = "It is for development and tests only: unset it."
    SECURITY_HEADERS = (
        "Keep SecurityMiddleware, XFrameOptionsMiddleware, SECURE_HSTS_SECONDS and SECURE_CONTENT_TYPE_NOSNIFF."
    )
    SESSION_COOKIE = "Set SESSION_COOKIE_HTTPONLY = True and SESSION_COOKIE_SAMESITE = 'Lax' or 'Strict'."
    DEV_KEY = "Set JWTEX_KEY_ENCRYPTION_KEYS before holding real keys; never run like this in production."
    PER_PROCESS_CACHE = "Set CACHE_URL=redis://… (the README's production set-up)."
    LOGIN_THROTTLE = "Keep LoginThrottleMiddleware and JWTEX_LOGIN_MAX_FAILURES > 0."
    BENCH = "They are for bench/http_benchmark.py on a loopback JWTEX_PUBLIC_URL only: unset them."
    BENCH_ON = "Audit, logs, metrics or limits may be missing: never serve real exchanges like this."
    BENCH_UNKNOWN = f"Name some of: {', '.join(PIECES)}."
    ADMIN_CSRF = "Keep jwtex_site.middleware.AdminCsrfViewMiddleware in MIDDLEWARE (jwtex_site/settings.py)."
    SSO_PARTIAL = (
        "Set JWTEX_ADMIN_OIDC_ISSUER, JWTEX_ADMIN_OIDC_CLIENT_ID and JWTEX_ADMIN_OIDC_CLIENT_SECRET (or "
        'JWTEX_ADMIN_OIDC_PRIVATE_KEY_FILE) together, or none of them (README, "Operators and single sign-on").'
    )
    SSO_NOBODY = "Configure single sign-on, or unset JWTEX_ADMIN_LOCAL_LOGIN."
    SSO_HTTPS = "The provider's answers sign people in: JWTEX_ADMIN_OIDC_ISSUER=https://…"
    SSO_KEY = (
        "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out admin-oidc.pem (register its public key)."
    )
    SSO_ROLES_CLAIM = "Unset it for the default (groups), or name the ID token claim that holds the roles."
    RULE_COST = (
        "It was saved before rules had a cost budget; jwtex never changes it. Open it in the admin (saving "
        "shows where its cost is) and simplify it, or delete it."
    )
    ALLOWED_ISSUERS = (
        "Write exact issuer URLs or https://HOST/PATH* patterns (docs/operators.md#allowed-upstream-issuers)."
    )
    ISSUER_REFUSED = (
        "Add them to the list if they are to be trusted, or remove them from the tenant (admin or "
        "jwtex_apply) — saving either is refused until then."
    )


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
    BENCH = "jwtex.E026"
    BENCH_ON = "jwtex.W005"
    BENCH_UNKNOWN = "jwtex.E027"
    ADMIN_CSRF = "jwtex.E025"
    SSO_PARTIAL = "jwtex.E020"
    SSO_NOBODY = "jwtex.E021"
    SSO_HTTPS = "jwtex.E022"
    SSO_KEY = "jwtex.E023"
    SSO_ROLES_CLAIM = "jwtex.E024"
    RULE_COST = "jwtex.W004"
    ALLOWED_ISSUERS = "jwtex.E010"
    ISSUER_REFUSED = "jwtex.W010"


_SECURITY_MIDDLEWARE = "django.middleware.security.SecurityMiddleware"
_FRAME_MIDDLEWARE = "django.middleware.clickjacking.XFrameOptionsMiddleware"
_LOGIN_THROTTLE_MIDDLEWARE = "jwtex_site.middleware.AdminLoginThrottleMiddleware"
_CSRF_MIDDLEWARE = ("jwtex_site.middleware.AdminCsrfViewMiddleware", "django.middleware.csrf.CsrfViewMiddleware")
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
def check_bench_switches(app_configs, **kwargs):
    """The benchmark's switches (exchange/ablation.py): refused in production mode, loud elsewhere."""
    if _production():
        requested = jwtex_settings.bench_requested or jwtex_settings.bench_ablate or jwtex_settings.bench_timeline
        return _problem(Error, "BENCH") if requested else []
    unknown = sorted(set(jwtex_settings.bench_ablate) - PIECES.keys())
    if unknown:
        return _problem(Error, "BENCH_UNKNOWN", unknown=", ".join(unknown))
    return (
        _problem(Warning, "BENCH_ON", pieces=", ".join(jwtex_settings.bench_ablate))
        if jwtex_settings.bench_ablate
        else []
    )


@register(Tags.security)
def check_login_throttle(app_configs, **kwargs):
    off = _LOGIN_THROTTLE_MIDDLEWARE not in settings.MIDDLEWARE or jwtex_settings.login_max_failures <= 0
    return _problem(Warning, "LOGIN_THROTTLE") if _production() and off else []


@register(Tags.security)
def check_admin_csrf(app_configs, **kwargs):
    """Django's security.W003 is silenced (jwtex_site/settings.py): the admin's CSRF protection is
    jwtex's AdminCsrfViewMiddleware, a CsrfViewMiddleware for every path but the machines' (which
    take no cookie and no form). This check is what W003 was: it fails if that protection is gone."""
    for path in settings.MIDDLEWARE:
        if path in _CSRF_MIDDLEWARE:
            return []
        if "csrf" not in path.lower():
            continue  # not imported: the checks also run before the apps are ready (the Celery worker's)
        try:
            middleware = import_string(path)
        except Exception:  # noqa: BLE001 - what cannot be imported protects nothing
            continue
        if isinstance(middleware, type) and issubclass(middleware, CsrfViewMiddleware):
            return []
    return _problem(Error, "ADMIN_CSRF")


@register(Tags.security)
def check_admin_sign_on(app_configs, **kwargs):
    sign_on = jwtex_settings.admin_sign_on
    given = {
        "JWTEX_ADMIN_OIDC_ISSUER": sign_on.issuer,
        "JWTEX_ADMIN_OIDC_CLIENT_ID": sign_on.client_id,
        "JWTEX_ADMIN_OIDC_CLIENT_SECRET or JWTEX_ADMIN_OIDC_PRIVATE_KEY_FILE": (
            sign_on.client_secret or sign_on.private_key_file
        ),
    }
    missing = [name for name, value in given.items() if not value]
    if missing and len(missing) < len(given):
        verb = "is" if len(missing) == 1 else "are"
        return _problem(Error, "SSO_PARTIAL", missing=" and ".join(missing), verb=verb)
    if not sign_on.configured:
        return [] if jwtex_settings.admin_local_login else _problem(Error, "SSO_NOBODY")
    problems = []
    if _production() and not sign_on.issuer.startswith("https://"):
        problems += _problem(Error, "SSO_HTTPS")
    if not sign_on.roles_claim:
        problems += _problem(Error, "SSO_ROLES_CLAIM")
    if sign_on.private_key_file:
        problem = _private_key_problem(sign_on.private_key_file)
        if problem:
            problems += _problem(Error, "SSO_KEY", problem=problem)
    return problems


def _private_key_problem(path: str) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as exc:
        return f"cannot read it ({exc.strerror or type(exc).__name__})"
    except (ValueError, TypeError):
        return "not an unencrypted PEM private key"
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048:
        return ""
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1":
        return ""
    return "neither RSA (2048 bits or more) nor EC P-256"


@register(Tags.database)
def check_rule_costs(app_configs, databases=None, **kwargs):
    """Every saved rule (live or candidate) over the cost budget rules have now
    (docs/rules.md#rule-cost-budget): saved before the budget existed, it is reported here and
    denied when reached, never changed. A database check (it reads and costs every rule):
    ``manage.py check --database default`` and ``migrate`` run it."""
    if not databases:
        return []
    from django.db import DatabaseError

    from .core.rules.budget import rule_cost
    from .core.rules.spec import rule_spec_check
    from .models import Rule

    found = []
    try:
        rules = list(Rule.objects.select_related("tenant").order_by("tenant__slug", "shadow", "position", "id"))
    except DatabaseError:  # no tables yet (before migrate): nothing is saved
        return []
    for rule in rules:
        problems, expressions = rule_spec_check(rule.spec())
        why = None if problems else rule_cost(expressions).over_budget
        if why:
            found.extend(_problem(Warning, "RULE_COST", rule=rule.name, tenant=rule.tenant.slug, why=why))
    return found


@register(Tags.security)
def check_allowed_upstream_issuers(app_configs, **kwargs):
    """A malformed entry of the operators' list matches nothing (a mistake narrows, never widens);
    said here, in any mode, so that it is seen before it refuses a tenant's issuer."""
    allowlist = jwtex_settings.allowed_upstream_issuers
    if allowlist is None or not allowlist.problems:
        return []
    return _problem(Error, "ALLOWED_ISSUERS", problems="; ".join(allowlist.problems))


@register("jwtex_issuers")
def check_issuers_outside_the_list(app_configs, **kwargs):
    """Every tenant's issuers that JWTEX_ALLOWED_UPSTREAM_ISSUERS refuses (docs/operators.md#allowed-upstream-issuers):
    saved before the list changed, they are refused at exchange time. A plain ``manage.py check``
    runs it (not the start-up checks: a start does not depend on reading the tenants)."""
    if jwtex_settings.allowed_upstream_issuers is None:
        return []
    from django.db import DatabaseError

    from .models import Issuer

    refused: dict[str, list[str]] = {}
    try:
        for slug, issuer_id, url in Issuer.objects.order_by("tenant__slug", "issuer_id").values_list(
            "tenant__slug", "issuer_id", "issuer"
        ):
            if jwtex_settings.upstream_issuer_problem(url):
                refused.setdefault(slug, []).append(f"{issuer_id} ({url})")
    except DatabaseError:  # no tables yet (before migrate): nothing is saved
        return []
    return [
        message
        for slug, issuers in refused.items()
        for message in _problem(Warning, "ISSUER_REFUSED", tenant=slug, count=len(issuers), issuers=", ".join(issuers))
    ]


def startup_checks_enforce(what: str) -> None:
    """Raise ``ImproperlyConfigured`` naming every jwtex error check that fails: the WSGI
    application and the Celery worker call this before they serve anything."""
    errors = [m for m in run_checks(tags=[Tags.security]) if m.is_serious() and (m.id or "").startswith("jwtex.")]
    if errors:
        lines = "\n".join(f"  ({m.id}) {m.msg} HINT: {m.hint}" for m in errors)
        raise ImproperlyConfigured(f"Refusing to start the {what} with an unsafe configuration:\n{lines}")
