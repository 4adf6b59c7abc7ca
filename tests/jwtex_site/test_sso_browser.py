"""Single sign-on in headless Chromium (as tests/exchange/admin/test_browser.py drives the admin):
the login page's button, the provider's own login form, the admin; sign-out at both ends; the
"no access" page; the login page with passwords turned off. Screenshots in test-artifacts/browser/."""

from __future__ import annotations

import pytest

from tenants.models import Membership
from tests.conftest import make_tenant
from tests.exchange.admin.test_browser import page, shot  # noqa: F401 - the browser fixture

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _sign_in_at_the_provider(page, username: str) -> None:
    page.click("#jwtex-sso-button")
    page.wait_for_selector("#idp-username")
    page.fill("#idp-username", username)
    page.fill("#idp-password", "idp-password")
    page.click("#idp-submit")


def test_an_operator_signs_in_with_the_identity_provider_and_out_again(page, live_server, idp, settings):
    make_tenant("acme", name="Acme Corp"), make_tenant("globex")
    idp.user("olivia", "jwtex:acme:operator", "staff")
    base = live_server.url

    page.goto(f"{base}/admin/")
    assert page.inner_text("#jwtex-sso-button") == "Sign in with Test IdP"
    assert page.locator("#id_password").count() == 1  # passwords too, by default
    shot(page, "sso-01-login")
    _sign_in_at_the_provider(page, "olivia")
    page.wait_for_selector("#jwtex-tenants")
    assert page.url == f"{base}/admin/"
    assert "Acme Corp (acme)" in page.inner_text("#jwtex-tenants") and "globex" not in page.inner_text("#jwtex-tenants")
    assert [(m.tenant.slug, m.role, m.source) for m in Membership.objects.all()] == [("acme", "operator", "idp")]
    shot(page, "sso-02-signed-in")

    # Sign-out ends jwtex's session and the provider's: back at the login page, and the next
    # sign-in asks the provider's password again.
    page.click("#logout-form button")
    page.wait_for_url(f"{base}/admin/login/")
    page.goto(f"{base}/admin/")
    assert page.url.startswith(f"{base}/admin/login/")
    page.click("#jwtex-sso-button")
    page.wait_for_selector("#idp-username")
    shot(page, "sso-03-signed-out-at-the-provider")

    # Someone with no jwtex group: a page that says so, and no admin.
    idp.user("pete", "staff")
    page.goto(f"{base}/admin/login/")
    _sign_in_at_the_provider(page, "pete")
    page.wait_for_selector("#jwtex-no-access")
    assert "gives you no role in jwtex" in page.inner_text("#jwtex-no-access")
    shot(page, "sso-04-no-access")
    page.goto(f"{base}/admin/")
    assert page.url.startswith(f"{base}/admin/login/")

    # Passwords turned off: the provider's button only.
    settings.JWTEX_ADMIN_LOCAL_LOGIN = False
    page.goto(f"{base}/admin/login/")
    assert page.locator("#id_password").count() == 0 and page.locator("#login-form").count() == 0
    assert page.locator("#jwtex-sso-button").count() == 1
    shot(page, "sso-05-passwords-off")
