"""Test settings: the real settings plus django-oidc-provider as an independent upstream issuer."""

from jwtex_site.settings import *  # noqa: F403 - these settings, and what the tests change

INSTALLED_APPS = [*INSTALLED_APPS, "oidc_provider"]  # noqa: F405 - from jwtex_site.settings
ROOT_URLCONF = "tests.urls"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
JWTEX_KEY_ENCRYPTION_KEYS = ["test-key-encryption-key-0123456789abcdef"]
JWTEX_KEY_ENCRYPTION_KEYS_GENERATED = False
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
# Tests decide per test whether loopback/http upstreams are allowed.
JWTEX_ALLOW_INSECURE_ISSUERS = False
JWTEX_CONFIG_RECHECK_SECONDS = 0.0
LOGGING["root"]["level"] = "WARNING"  # noqa: F405 - from jwtex_site.settings

OIDC_GRANT_TYPE_PASSWORD_ENABLE = True
OIDC_IDTOKEN_EXPIRE = 600
LOGIN_URL = "/admin/login/"
OIDC_IDTOKEN_INCLUDE_CLAIMS = True
