"""Single sign-on for the admin (docs/operators.md#single-sign-on) against a real OpenID Connect
provider: django-oidc-provider in a process of its own (tests/idp/), reached over HTTP the way a browser would —
redirects, the provider's login form, the callback — with a ``requests`` session per browser."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit, urlunsplit

import pytest
import requests
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry

from tenants.models import Membership, MembershipSource, SignOnIdentity
from tests.conftest import make_tenant

pytestmark = pytest.mark.django_db(transaction=True)


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=urlencode({**_query(url), **changes})))


def idp_round_trip(browser: requests.Session, base: str, username: str, password: str = "idp-password") -> str:
    """From jwtex's "Sign in with…" to the callback URL the provider sends the browser back to."""
    start = browser.get(f"{base}/admin/sso/start/?next=/admin/", allow_redirects=False)
    assert start.status_code == 302, start.text[:500]
    authorize = start.headers["Location"]
    params = _query(authorize)
    # Authorization code with PKCE (S256), a state and a nonce (OpenID Connect Core §3.1.2.1, RFC 7636).
    assert params["response_type"] == "code" and params["code_challenge_method"] == "S256"
    assert len(params["code_challenge"]) == 43 and params["state"] and params["nonce"]
    answer = browser.get(authorize, allow_redirects=False)
    location = urljoin(authorize, answer.headers["Location"])
    if "/login/" in urlsplit(location).path:  # not signed in at the provider yet
        form = browser.get(location)
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
        signed = browser.post(
            location,
            allow_redirects=False,
            headers={"Referer": location},
            data={
                "username": username,
                "password": password,
                "csrfmiddlewaretoken": csrf,
                "next": _query(location)["next"],
            },
        )
        assert signed.status_code == 302, "the provider refused the test user's password"
        answer = browser.get(urljoin(location, signed.headers["Location"]), allow_redirects=False)
        location = urljoin(authorize, answer.headers["Location"])
    assert location.startswith(f"{base}/admin/sso/callback/"), location
    return location


def sign_in(base: str, username: str) -> tuple[requests.Session, requests.Response]:
    browser = requests.Session()
    callback = idp_round_trip(browser, base, username)
    return browser, browser.get(callback, allow_redirects=False)


def in_admin(browser: requests.Session, base: str) -> bool:
    return browser.get(f"{base}/admin/", allow_redirects=False).status_code == 200


def roles(username: str) -> dict[str, tuple[str, str]]:
    return {m.tenant.slug: (m.role, m.source) for m in Membership.objects.filter(user__username=username)}


def test_sign_on_makes_memberships_from_the_groups_claim(live_server, idp):
    make_tenant("acme"), make_tenant("globex")
    idp.user(
        "alice",
        "jwtex:acme:operator",
        "jwtex:globex:auditor",
        "jwtex:globex:owner",
        "engineering",
        "jwtex:nosuch:owner",
        "jwtex:acme:admiral",
    )
    browser, response = sign_in(live_server.url, "alice")
    assert response.status_code == 302 and response.headers["Location"] == "/admin/"
    assert in_admin(browser, live_server.url)
    # The stronger of two roles in one tenant; other groups, unknown tenants and roles ignored.
    assert roles("alice") == {"acme": ("operator", "idp"), "globex": ("owner", "idp")}
    identity = SignOnIdentity.objects.get(user__username="alice")
    assert identity.issuer == idp.issuer and identity.last_sign_in_at is not None
    user = identity.user
    assert user.is_staff and not user.is_superuser and not user.has_usable_password()
    assert user.email == "alice@example.test"
    entries = LogEntry.objects.filter(user=user)
    assert sorted(e.action_flag for e in entries) == [ADDITION, ADDITION, CHANGE]  # two roles, admin access
    assert all("sign-on" in e.change_message for e in entries)


def test_a_group_removed_at_the_provider_removes_the_role_at_the_next_sign_in(live_server, idp, django_user_model):
    acme, globex, initech = make_tenant("acme"), make_tenant("globex"), make_tenant("initech")
    idp.user("bob", "jwtex:acme:owner", "jwtex:globex:operator")
    sign_in(live_server.url, "bob")
    bob = django_user_model.objects.get(username="bob")
    Membership.objects.create(user=bob, tenant=initech, role="auditor")  # granted by hand in the admin
    assert roles("bob") == {"acme": ("owner", "idp"), "globex": ("operator", "idp"), "initech": ("auditor", "hand")}

    idp.user("bob", "jwtex:globex:auditor")
    browser, response = sign_in(live_server.url, "bob")
    assert response.status_code == 302 and in_admin(browser, live_server.url)
    assert roles("bob") == {"globex": ("auditor", "idp"), "initech": ("auditor", "hand")}  # hand-made: left alone
    removed = LogEntry.objects.get(user=bob, action_flag=DELETION)
    assert removed.object_repr.startswith("bob @ acme") and "no longer grants" in removed.change_message
    assert LogEntry.objects.filter(user=bob, action_flag=CHANGE, change_message__contains="operator → auditor").exists()
    assert acme.memberships.count() == 0 and globex.memberships.get().role == "auditor"


def test_exclusive_roles_replace_memberships_granted_by_hand(live_server, idp, settings, django_user_model):
    make_tenant("acme"), make_tenant("initech")
    idp.user("carol", "jwtex:acme:auditor")
    sign_in(live_server.url, "carol")
    carol = django_user_model.objects.get(username="carol")
    Membership.objects.create(user=carol, tenant=make_tenant("hooli"), role="owner")
    Membership.objects.filter(user=carol, tenant__slug="acme").update(role="owner", source=MembershipSource.HAND)

    settings.JWTEX_ADMIN_OIDC_ROLES_EXCLUSIVE = True
    sign_in(live_server.url, "carol")
    assert roles("carol") == {"acme": ("auditor", "idp")}


def test_the_superuser_value_makes_a_platform_superuser_and_its_removal_unmakes_it(live_server, idp, django_user_model):
    idp.user("root", "jwtex:superuser")
    browser, _ = sign_in(live_server.url, "root")
    user = django_user_model.objects.get(username="root")
    assert user.is_superuser and user.is_staff and in_admin(browser, live_server.url)

    idp.user("root")
    browser, response = sign_in(live_server.url, "root")
    user.refresh_from_db()
    assert response.status_code == 403 and not user.is_superuser and not user.is_staff
    assert not in_admin(browser, live_server.url)


def test_without_a_jwtex_group_a_clear_no_access_page_and_no_staff_session(live_server, idp, django_user_model):
    make_tenant("acme")
    idp.user("dave", "engineering", "jwtex:nosuch:operator")
    browser, response = sign_in(live_server.url, "dave")
    assert response.status_code == 403
    assert "gives you no role in jwtex" in response.text and "jwtex:TENANT:ROLE" in response.text
    assert "names tenants jwtex does not have: nosuch" in response.text
    assert not in_admin(browser, live_server.url)
    dave = django_user_model.objects.get(username="dave")
    assert not dave.is_staff and not Membership.objects.filter(user=dave).exists()
    again = browser.get(f"{live_server.url}/admin/", allow_redirects=False)
    assert again.headers["Location"].startswith("/admin/login/")


def test_a_local_account_with_the_same_username_is_never_taken_over(live_server, idp, django_user_model):
    local = django_user_model.objects.create_superuser("erin", password="local-password")
    make_tenant("acme")
    idp.user("erin", "jwtex:acme:auditor")
    sign_in(live_server.url, "erin")
    signed = SignOnIdentity.objects.get().user
    assert signed.pk != local.pk and signed.username.startswith("erin~") and not signed.is_superuser
    local.refresh_from_db()
    assert local.is_superuser and not Membership.objects.filter(user=local).exists()


@pytest.mark.parametrize(
    "mode, reason",
    [
        ("nonce", "its nonce is not the one this sign-in sent"),
        ("signature", "signature does not verify with the issuer&#x27;s key"),
        ("alg-none", "signature is empty: it is not signed"),
        ("issuer", "is not this issuer&#x27;s"),
        ("audience", "is none of the issuer&#x27;s accepted audiences: &#x27;jwtex-admin&#x27;"),
        ("expired", "The token expired at"),
    ],
)
def test_a_tampered_id_token_is_refused(live_server, idp, mode, reason, django_user_model):
    make_tenant("acme")
    idp.user("mallory", "jwtex:acme:owner")
    idp.tamper(mode)
    browser, response = sign_in(live_server.url, "mallory")
    assert response.status_code == 403, response.text[:300]
    assert "Sign-in failed" in response.text and "The ID token was refused" in response.text and reason in response.text
    assert not in_admin(browser, live_server.url)
    assert not django_user_model.objects.filter(username__startswith="mallory").exists()


def test_a_tampered_or_replayed_state_is_refused(live_server, idp, django_user_model):
    make_tenant("acme")
    idp.user("trudy", "jwtex:acme:owner")
    browser = requests.Session()
    callback = idp_round_trip(browser, live_server.url, "trudy")
    forged = browser.get(_with_query(callback, state="forged-state"), allow_redirects=False)
    assert forged.status_code == 400 and "state is not one this browser started" in forged.text
    assert not in_admin(browser, live_server.url)
    # Another browser cannot use this browser's callback either (the state lives in its session).
    stranger = requests.Session()
    assert stranger.get(callback, allow_redirects=False).status_code == 400
    assert not in_admin(stranger, live_server.url)

    assert browser.get(callback, allow_redirects=False).status_code == 302  # the real one signs in, once
    assert browser.get(callback, allow_redirects=False).status_code == 400  # its state was dropped on use


def test_sign_out_ends_the_jwtex_session_and_the_providers(live_server, idp):
    make_tenant("acme")
    idp.user("frank", "jwtex:acme:operator")
    browser, _ = sign_in(live_server.url, "frank")
    csrf = browser.get(f"{live_server.url}/admin/").cookies.get("csrftoken") or browser.cookies.get("csrftoken")
    out = browser.post(
        f"{live_server.url}/admin/logout/",
        data={"csrfmiddlewaretoken": csrf},
        headers={"Referer": f"{live_server.url}/admin/"},
        allow_redirects=False,
    )
    assert out.status_code == 302
    end_session = out.headers["Location"]
    assert end_session.startswith(f"{idp.issuer}/end-session")
    params = _query(end_session)
    assert params["client_id"] == "jwtex-admin" and params["id_token_hint"].count(".") == 2
    assert params["post_logout_redirect_uri"] == f"{live_server.url}/admin/login/"
    assert not in_admin(browser, live_server.url)
    back = browser.get(end_session, allow_redirects=False)
    assert back.headers["Location"] == f"{live_server.url}/admin/login/"
    # Signed out at the provider too: the next sign-in asks for the password again.
    start = browser.get(f"{live_server.url}/admin/sso/start/", allow_redirects=False)
    again = browser.get(start.headers["Location"], allow_redirects=False)
    assert "/login/" in again.headers["Location"]


def test_local_login_off_offers_only_the_provider_and_refuses_a_posted_password(
    live_server, idp, settings, django_user_model
):
    django_user_model.objects.create_superuser("admin", password="a-local-password")
    browser = requests.Session()
    page = browser.get(f"{live_server.url}/admin/login/")
    assert 'id="id_password"' in page.text and "Sign in with Test IdP" in page.text  # both, by default

    settings.JWTEX_ADMIN_LOCAL_LOGIN = False
    page = browser.get(f"{live_server.url}/admin/login/?next=/admin/")
    assert 'id="id_password"' not in page.text and "Sign in with Test IdP" in page.text
    assert "/admin/sso/start/?next=%2Fadmin%2F" in page.text
    posted = browser.post(
        f"{live_server.url}/admin/login/",
        headers={"Referer": f"{live_server.url}/admin/login/"},
        data={"username": "admin", "password": "a-local-password", "csrfmiddlewaretoken": browser.cookies["csrftoken"]},
        allow_redirects=False,
    )
    assert posted.status_code == 403 and "Passwords are turned off here" in posted.text
    assert not in_admin(browser, live_server.url)


def test_local_login_off_ends_password_sessions_and_keeps_sign_on_ones(live_server, idp, settings, django_user_model):
    make_tenant("acme")
    django_user_model.objects.create_superuser("admin", password="a-local-password")
    local = requests.Session()
    local.get(f"{live_server.url}/admin/login/")
    local.post(
        f"{live_server.url}/admin/login/",
        headers={"Referer": f"{live_server.url}/admin/login/"},
        data={"username": "admin", "password": "a-local-password", "csrfmiddlewaretoken": local.cookies["csrftoken"]},
    )
    assert in_admin(local, live_server.url)
    idp.user("grace", "jwtex:acme:auditor")
    signed_on, _ = sign_in(live_server.url, "grace")

    settings.JWTEX_ADMIN_LOCAL_LOGIN = False
    assert not in_admin(local, live_server.url)
    assert in_admin(signed_on, live_server.url)
