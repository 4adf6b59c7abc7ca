"""The test identity provider's URLs: django-oidc-provider, a login form, and ``/control/`` through
which the tests set its users and groups and make it misbehave (a forged nonce, a tampered ID
token, another issuer or audience, an expired token)."""

import base64
import json
import time

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.views import LoginView
from django.http import JsonResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt
from oidc_provider.views import TokenView

TAMPER = {"mode": ""}


def id_token_hook(id_token, user, token, request, **kwargs):
    id_token["preferred_username"] = user.username
    id_token["groups"] = sorted(user.groups.values_list("name", flat=True))
    mode = TAMPER["mode"]
    if mode == "nonce":
        id_token["nonce"] = "a-nonce-this-sign-in-never-sent"
    elif mode == "audience":
        id_token["aud"] = "another-client"
    elif mode == "issuer":
        id_token["iss"] = id_token["iss"] + "/other"
    elif mode == "expired":
        id_token["iat"], id_token["exp"] = int(time.time()) - 7200, int(time.time()) - 3600
    return id_token


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@csrf_exempt
def token_view(request):
    response = TokenView.as_view()(request)
    if TAMPER["mode"] in {"signature", "alg-none"} and response.status_code == 200:
        answer = json.loads(response.content)
        header, payload, signature = answer["id_token"].split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        claims["groups"] = ["jwtex:superuser"]  # what an attacker would write in
        if TAMPER["mode"] == "signature":
            answer["id_token"] = f"{header}.{_b64(claims)}.{signature}"
        else:
            answer["id_token"] = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
        response.content = json.dumps(answer).encode()
    return response


@csrf_exempt
def control(request):
    """{"user": {"username", "password", "email", "groups": [...]}} and/or {"tamper": mode}."""
    command = json.loads(request.body)
    if "tamper" in command:
        TAMPER["mode"] = command["tamper"]
    if "user" in command:
        spec = command["user"]
        user, _ = get_user_model().objects.get_or_create(username=spec["username"])
        user.email = spec.get("email", f"{spec['username']}@example.test")
        user.set_password(spec["password"])
        user.save()
        user.groups.set([Group.objects.get_or_create(name=name)[0] for name in spec.get("groups", [])])
    return JsonResponse({"ok": True})


urlpatterns = [
    path("login/", LoginView.as_view(template_name="idp_login.html")),
    path("control/", control),
    path("token", token_view),
    path("token/", token_view),
    path("", include("oidc_provider.urls", namespace="oidc_provider")),
]
