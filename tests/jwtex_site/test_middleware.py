"""The admin's middleware runs for the admin only (docs/design/pipeline.md#the-lean-route): the exchange,
discovery and JWKS endpoints run none of sessions, CSRF, auth, messages or login throttling."""

from __future__ import annotations

import pytest
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.middleware.csrf import CsrfViewMiddleware

from jwtex_site.login_throttle import LoginThrottleMiddleware

ADMIN_MIDDLEWARE = [
    (SessionMiddleware, "process_request"),
    (CsrfViewMiddleware, "process_view"),
    (AuthenticationMiddleware, "process_request"),
    (MessageMiddleware, "process_request"),
    (LoginThrottleMiddleware, "__call__"),
]


@pytest.fixture
def counted(monkeypatch):
    calls: list[str] = []
    for cls, name in ADMIN_MIDDLEWARE:
        real = getattr(cls, name)

        def spy(self, *args, _real=real, _name=f"{cls.__name__}.{name}", **kwargs):
            calls.append(_name)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, spy)
    return calls


@pytest.mark.django_db
def test_the_exchange_and_issuer_documents_run_none_of_the_admins_middleware(client, counted, upstream, allow_rule):
    response = client.post("/t/acme/exchange", upstream.mint(), content_type="application/jwt")
    assert response.status_code == 200
    assert client.get("/t/acme/.well-known/jwks.json").status_code == 200
    assert client.get("/t/acme/.well-known/openid-configuration").status_code == 200
    assert counted == []
    assert "Cookie" not in response.get("Vary", "") and not response.cookies
    assert response["X-Content-Type-Options"] == "nosniff"  # security headers still apply


@pytest.mark.django_db
def test_the_admin_runs_all_of_it(client, counted):
    client.get("/admin/login/")
    assert {name.split(".")[0] for name in counted} == {cls.__name__ for cls, _ in ADMIN_MIDDLEWARE}
