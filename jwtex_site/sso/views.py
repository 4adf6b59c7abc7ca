"""The admin's login, logout and single sign-on pages (docs/operators.md#single-sign-on).

The sign-in is mozilla-django-oidc's authorization code flow, always with PKCE (S256) and a nonce,
``state`` kept per sign-in in the session and dropped once used: ``SignOnStartView`` sends the
browser to the provider, ``SignOnCallbackView`` takes it back. What can go wrong ends on a page
that says what happened (the reason is logged too), never on a bare error or in a staff session.
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from django.contrib import admin, auth
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from exchange.api.params import client_address
from exchange.conf import jwtex_settings

from .backend import CALLBACK_URL_NAME, NoAdminAccess
from .provider import SignOnRefused, provider_metadata
from .tokens import id_token_hint_pop

logger = logging.getLogger("jwtex.sso")

SIGNED_ON = "jwtex_signed_on"  # in the session of an account signed in through the provider


def _page(request, template: str, status: int, **context) -> TemplateResponse:
    sign_on = jwtex_settings.admin_sign_on
    return TemplateResponse(
        request,
        template,
        {**admin.site.each_context(request), "sign_on": sign_on, "sign_on_url": reverse("jwtex_sso_start"), **context},
        status=status,
    )


def _refused(request, reason: str, status: int = 403) -> TemplateResponse:
    logger.warning("sign-on refused: %s", reason, extra={"jwtex": {"client_address": client_address(request) or "-"}})
    return _page(request, "jwtex/sso_failed.html", status, title="Sign-in failed", reason=reason)


class SignOnStartView(OIDCAuthenticationRequestView):
    def __init__(self, *args, **kwargs):  # mozilla's reads its settings here; ours, per request
        super(OIDCAuthenticationRequestView, self).__init__(*args, **kwargs)

    def get_settings(self, attr, *args):
        sign_on = jwtex_settings.admin_sign_on
        scopes = sign_on.scopes.split()
        values = {
            "OIDC_RP_SCOPES": " ".join(scopes if "openid" in scopes else ["openid", *scopes]),
            "OIDC_USE_NONCE": True,
            "OIDC_USE_PKCE": True,
            "OIDC_PKCE_CODE_CHALLENGE_METHOD": "S256",
            "OIDC_AUTHENTICATION_CALLBACK_URL": CALLBACK_URL_NAME,
            "OIDC_REDIRECT_ALLOWED_HOSTS": [],
            "OIDC_AUTH_REQUEST_EXTRA_PARAMS": {},
        }
        return values[attr] if attr in values else (args[0] if args else None)

    def get(self, request):
        sign_on = jwtex_settings.admin_sign_on
        if not sign_on.configured:
            raise Http404("Single sign-on is not configured.")
        try:
            self.OIDC_OP_AUTH_ENDPOINT = provider_metadata(sign_on=sign_on).authorization_endpoint
        except SignOnRefused as exc:
            return _refused(request, exc.reason, status=502)
        self.OIDC_RP_CLIENT_ID = sign_on.client_id
        return super().get(request)


class SignOnCallbackView(OIDCAuthenticationCallbackView):
    def get_settings(self, attr, *args):
        if attr == "LOGIN_REDIRECT_URL":
            return "admin:index"
        return args[0] if args else None

    def get(self, request):
        if not jwtex_settings.admin_sign_on.configured:
            raise Http404("Single sign-on is not configured.")
        if "code" in request.GET and request.GET.get("state") not in request.session.get("oidc_states", {}):
            return _refused(
                request,
                "This sign-in's state is not one this browser started (forged, or already used). Start again.",
                status=400,
            )
        try:
            return super().get(request)
        except SignOnRefused as exc:
            return _refused(request, exc.reason)
        except NoAdminAccess as exc:
            id_token_hint_pop(request.session)
            result = exc.result
            logger.warning("sign-on: no jwtex role", extra={"jwtex": {"username": result.user.get_username()}})
            return _page(
                request,
                "jwtex/sso_no_access.html",
                403,
                title="No access to jwtex",
                account=result.user,
                unknown_tenants=result.unknown_tenants,
                active=result.user.is_active,
            )

    def login_success(self):
        response = super().login_success()
        self.request.session[SIGNED_ON] = True
        return response

    def login_failure(self):
        error = self.request.GET.get("error", "")
        if error:
            description = self.request.GET.get("error_description", "")[:300]
            return _refused(self.request, f"The identity provider answered {error[:100]!r}. {description}".strip())
        return _refused(self.request, "The identity provider's answer was incomplete (no code or state).", status=400)


def admin_login_view(request, **kwargs):
    """The admin's login page with single sign-on beside (or, with local login off, instead of)
    the password form; with local login off a posted password is refused before it is read."""
    sign_on = jwtex_settings.admin_sign_on
    local = jwtex_settings.admin_local_login
    context = {
        "sign_on": sign_on if sign_on.configured else None,
        "sign_on_url": reverse("jwtex_sso_start") + "?" + urlencode({"next": request.GET.get("next", "")}),
        "local_login": local,
    }
    if request.method == "POST" and not local:
        logger.warning(
            "admin password login refused: local login is off",
            extra={"jwtex": {"client_address": client_address(request) or "-"}},
        )
        return TemplateResponse(
            request,
            "admin/login.html",
            {
                **admin.site.each_context(request),
                **context,
                "title": "Log in",
                "app_path": request.get_full_path(),
                "jwtex_refused": "Passwords are turned off here: sign in with single sign-on.",
            },
            status=403,
        )
    return admin.site.login(request, extra_context=context)


def admin_logout_view(request, **kwargs):
    """Ends the jwtex session, and the provider's too where it offers RP-initiated logout
    (its ``end_session_endpoint``, OpenID Connect RP-Initiated Logout 1.0)."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    signed_on = bool(request.session.get(SIGNED_ON))
    hint = id_token_hint_pop(request.session)
    sign_on = jwtex_settings.admin_sign_on
    if not (signed_on and sign_on.configured):
        return admin.site.logout(request)
    auth.logout(request)
    try:
        end_session = provider_metadata(sign_on=sign_on).end_session_endpoint
    except SignOnRefused as exc:
        logger.warning("sign-out: the provider's session is left as it is: %s", exc.reason)
        end_session = ""
    if not end_session:
        return admin.site.logout(request)
    params = {
        "client_id": sign_on.client_id,
        "post_logout_redirect_uri": request.build_absolute_uri(reverse("admin:login")),
    }
    if hint:
        params["id_token_hint"] = hint
    return HttpResponseRedirect(f"{end_session}{'&' if '?' in end_session else '?'}{urlencode(params)}")
