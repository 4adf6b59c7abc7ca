"""System checks of the admin's sign-in: CSRF protection, and single sign-on half configured."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.checks import run_checks

from tests.security.test_production_safety import PRODUCTION_ENV, production_run


def _ids() -> set[str]:
    return {m.id for m in run_checks(tags=["security"]) if m.id.startswith("jwtex.") and m.is_serious()}


def test_check_deploy_in_production_does_not_warn_of_missing_csrf_middleware(tmp_path):
    # CSRF runs for the admin through AdminCsrfViewMiddleware: Django's W003 was a false alarm.
    result = production_run(["manage.py", "check", "--deploy"], PRODUCTION_ENV, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    assert "security.W003" not in result.stdout + result.stderr
    assert "CsrfViewMiddleware" not in result.stdout + result.stderr


def test_the_admin_without_csrf_protection_fails_the_checks(settings):
    assert "jwtex.E025" not in _ids()
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if "Csrf" not in m]
    assert "jwtex.E025" in _ids()
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "django.middleware.csrf.CsrfViewMiddleware"]  # Django's own counts
    assert "jwtex.E025" not in _ids()


@pytest.mark.parametrize(
    "values, expected",
    [
        (
            {"JWTEX_ADMIN_OIDC_ISSUER": "https://idp.example.com"},
            "JWTEX_ADMIN_OIDC_CLIENT_ID and JWTEX_ADMIN_OIDC_CLIENT_SECRET",
        ),
        (
            {"JWTEX_ADMIN_OIDC_CLIENT_ID": "jwtex", "JWTEX_ADMIN_OIDC_CLIENT_SECRET": "s"},
            "JWTEX_ADMIN_OIDC_ISSUER is missing",
        ),
        (
            {"JWTEX_ADMIN_OIDC_ISSUER": "https://idp.example.com", "JWTEX_ADMIN_OIDC_CLIENT_ID": "jwtex"},
            "JWTEX_ADMIN_OIDC_CLIENT_SECRET or JWTEX_ADMIN_OIDC_PRIVATE_KEY_FILE is missing",
        ),
    ],
)
def test_half_configured_sign_on_is_an_error_naming_what_is_missing(settings, values, expected):
    for name, value in values.items():
        setattr(settings, name, value)
    messages = [m for m in run_checks(tags=["security"]) if m.id == "jwtex.E020"]
    assert len(messages) == 1 and expected in messages[0].msg and messages[0].is_serious()


def test_local_login_off_without_sign_on_is_an_error(settings):
    settings.JWTEX_ADMIN_LOCAL_LOGIN = False
    assert "jwtex.E021" in _ids()
    settings.JWTEX_ADMIN_OIDC_ISSUER, settings.JWTEX_ADMIN_OIDC_CLIENT_ID = "https://idp.example.com", "jwtex"
    settings.JWTEX_ADMIN_OIDC_CLIENT_SECRET = "s3cret"
    assert _ids() & {"jwtex.E020", "jwtex.E021"} == set()


def test_sign_on_in_production_needs_an_https_issuer_a_roles_claim_and_a_usable_key(settings, tmp_path):
    settings.JWTEX_PRODUCTION = True
    settings.JWTEX_ADMIN_OIDC_ISSUER, settings.JWTEX_ADMIN_OIDC_CLIENT_ID = "http://idp.example.com", "jwtex"
    settings.JWTEX_ADMIN_OIDC_PRIVATE_KEY_FILE = str(tmp_path / "missing.pem")
    settings.JWTEX_ADMIN_OIDC_ROLES_CLAIM = ""
    assert {"jwtex.E022", "jwtex.E023", "jwtex.E024"} <= _ids()
    key = tmp_path / "key.pem"
    key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    settings.JWTEX_ADMIN_OIDC_PRIVATE_KEY_FILE = str(key)
    settings.JWTEX_ADMIN_OIDC_ISSUER = "https://idp.example.com"
    settings.JWTEX_ADMIN_OIDC_ROLES_CLAIM = "groups"
    assert _ids() & {"jwtex.E022", "jwtex.E023", "jwtex.E024"} == set()
