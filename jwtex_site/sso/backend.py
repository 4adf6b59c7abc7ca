"""The admin's authentication backends: local passwords (unless turned off) and single sign-on.

``SignOnBackend`` is mozilla-django-oidc's backend with jwtex's parts: the endpoints from the
provider's discovery document, the client authenticated by its secret or a private-key JWT, the
ID token verified by jwtex's verifier (jwtex_site/sso/provider.py) and the account made to match
the roles claim (jwtex_site/sso/accounts.py). The user info endpoint is never asked: roles come
from the signed ID token only. Nothing is read from the provider until a sign-in comes back.
"""

from __future__ import annotations

from urllib.parse import quote

import requests
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.utils import timezone
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from exchange.conf import jwtex_settings

from .accounts import sign_on_account
from .provider import HTTP_TIMEOUT, SignOnRefused, client_assertion, id_token_verify, provider_metadata
from .tokens import id_token_hint_store

CALLBACK_URL_NAME = "jwtex_sso_callback"


class LocalPasswordBackend(ModelBackend):
    """Django's username and password, while ``JWTEX_ADMIN_LOCAL_LOGIN`` is on. Off, it neither
    signs anyone in nor keeps a password session alive."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if not jwtex_settings.admin_local_login:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)

    def get_user(self, user_id):
        if not jwtex_settings.admin_local_login:
            return None
        return super().get_user(user_id)


class NoAdminAccess(Exception):
    """A verified identity whose claim gives it no role in jwtex: no staff session."""

    def __init__(self, result) -> None:
        super().__init__("no jwtex role")
        self.result = result


class SignOnBackend(OIDCAuthenticationBackend):
    def __init__(self, *args, **kwargs):  # mozilla's reads its settings here; ours, at sign-in
        self.UserModel = get_user_model()

    def authenticate(self, request, **kwargs):
        sign_on = jwtex_settings.admin_sign_on
        # Only the callback's call (it passes the nonce): never a password form's.
        if request is None or "nonce" not in kwargs or not sign_on.configured:
            return None
        self.sign_on = sign_on
        self.metadata = provider_metadata(sign_on=sign_on)
        self.OIDC_RP_CLIENT_ID = sign_on.client_id
        self.OIDC_RP_CLIENT_SECRET = sign_on.client_secret
        self.OIDC_OP_TOKEN_ENDPOINT = self.metadata.token_endpoint
        return super().authenticate(request, **kwargs)

    def get_settings(self, attr, *args):  # what mozilla-django-oidc's authenticate() asks for
        if attr == "OIDC_AUTHENTICATION_CALLBACK_URL":
            return CALLBACK_URL_NAME
        return {"OIDC_STORE_ACCESS_TOKEN": False, "OIDC_STORE_ID_TOKEN": False}.get(attr, args[0] if args else None)

    def get_token(self, payload):
        """The token request (RFC 6749 §4.1.3) with the code and PKCE verifier, the client
        authenticated by ``private_key_jwt`` or its secret (``client_secret_post`` where the
        provider offers it, else ``client_secret_basic``, RFC 6749 §2.3.1)."""
        data = {k: v for k, v in payload.items() if k != "client_secret"}
        auth = None
        if self.sign_on.private_key_file:
            data["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
            data["client_assertion"] = client_assertion(
                sign_on=self.sign_on, token_endpoint=self.metadata.token_endpoint, now=timezone.now().timestamp()
            )
        elif "client_secret_post" in self.metadata.token_auth_methods:
            data["client_secret"] = self.sign_on.client_secret
        else:
            auth = (quote(self.sign_on.client_id, safe=""), quote(self.sign_on.client_secret, safe=""))
        try:
            response = requests.post(self.metadata.token_endpoint, data=data, auth=auth, timeout=HTTP_TIMEOUT)
        except requests.RequestException as exc:
            raise SignOnRefused(
                f"The identity provider's token endpoint could not be reached ({type(exc).__name__})."
            ) from None
        if response.status_code != 200:
            try:
                error = str(response.json().get("error", ""))[:100]
            except ValueError:
                error = ""
            raise SignOnRefused(
                f"The identity provider refused the sign-in code (HTTP {response.status_code} {error})."
            )
        try:
            answer = response.json()
        except ValueError:
            raise SignOnRefused("The identity provider's token answer is not JSON.") from None
        if not isinstance(answer, dict):
            raise SignOnRefused("The identity provider's token answer is not a JSON object.")
        return answer

    def verify_token(self, token, **kwargs):
        return id_token_verify(
            token=token, nonce=kwargs.get("nonce"), sign_on=self.sign_on, now=timezone.now().timestamp()
        )

    def store_tokens(self, access_token, id_token):
        # Only for RP-initiated logout's id_token_hint, and encrypted: no token in clear at rest.
        if self.metadata.end_session_endpoint:
            id_token_hint_store(self.request.session, id_token)

    def get_or_create_user(self, access_token, id_token, payload):
        result = sign_on_account(claims=payload, sign_on=self.sign_on, now=timezone.now())
        if not result.access:
            raise NoAdminAccess(result)
        return result.user
