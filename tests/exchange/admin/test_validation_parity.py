"""The admin, its presets and jwtex_apply judge an issuer by one rule (docs/configuration-file.md#validation)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from exchange.config.apply import config_apply
from exchange.config.schema import ConfigError
from exchange.models import Issuer

pytestmark = pytest.mark.django_db

URLS = [
    "https://token.actions.githubusercontent.com",
    "http://10.0.0.1/internal",
    "http://gitlab.internal",
    "https://10.0.0.1/internal",
    "https://127.0.0.1:8443",
    "https://[::1]/x",
    "https://169.254.169.254/latest",
    "https://localhost/oidc",
    "https://user:pw@issuer.example",
    "https://issuer.example/?q=1",
    "ftp://issuer.example",
    "https://issuer.example:99999",
]  # (surrounding spaces: the admin's text box trims what a person types; apply refuses them)


def admin_verdict(client, tenant, url: str) -> str | None:
    response = client.post(
        reverse("admin:exchange_issuer_add"),
        {
            "tenant": tenant.pk,
            "issuer_id": "x",
            "issuer": url,
            "audiences": "aud",
            "algorithms": ["RS256"],
            "enabled": "on",
            "leeway": 60,
            "max_token_age": 86400,
            "jwks_refresh_interval": 3600,
            "jwks_uri": "",
            "static_jwks": "",
        },
    )
    if response.status_code == 302:
        Issuer.objects.filter(tenant=tenant, issuer_id="x").delete()
        return None
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["issuer"], errors
    return errors["issuer"][0]


def apply_verdict(tenant, url: str) -> str | None:
    document = {
        "tenants": [
            {"slug": tenant.slug, "name": tenant.name, "issuers": [{"id": "x", "issuer": url, "audiences": ["aud"]}]}
        ]
    }
    try:
        config_apply(document=document, now=None, dry_run=True)
    except ConfigError as exc:
        assert [path for path, _ in exc.errors] == [f"tenants[{tenant.slug}].issuers[x].issuer"], exc.errors
        return exc.errors[0][1]
    return None


@pytest.mark.parametrize("insecure", [False, True], ids=["default", "JWTEX_ALLOW_INSECURE_ISSUERS"])
def test_admin_and_apply_accept_and_refuse_the_same_issuer_urls(admin_client_for, tenant, settings, insecure):
    settings.JWTEX_ALLOW_INSECURE_ISSUERS = insecure
    client = admin_client_for(tenant, "operator")
    verdicts = {url: (admin_verdict(client, tenant, url), apply_verdict(tenant, url)) for url in URLS}
    for url, (admin, applied) in verdicts.items():
        assert admin == applied, url
    refused = {url for url, (admin, _) in verdicts.items() if admin}
    always = {
        "https://user:pw@issuer.example",
        "https://issuer.example/?q=1",
        "ftp://issuer.example",
        "https://issuer.example:99999",
    }
    insecure_only = {
        "http://10.0.0.1/internal",
        "http://gitlab.internal",
        "https://10.0.0.1/internal",
        "https://127.0.0.1:8443",
        "https://[::1]/x",
        "https://169.254.169.254/latest",
        "https://localhost/oidc",
    }
    assert refused == (always if insecure else always | insecure_only)
    if not insecure:
        for url in insecure_only:
            assert "JWTEX_ALLOW_INSECURE_ISSUERS" in verdicts[url][0]


def test_the_preset_form_refuses_what_the_issuer_form_refuses(admin_client_for, tenant, settings):
    settings.JWTEX_ALLOW_INSECURE_ISSUERS = False
    client = admin_client_for(tenant, "operator")
    for url in ("http://gitlab.internal", "https://10.0.0.1"):
        response = client.post(
            reverse("admin:exchange_issuer_preset"),
            {"tenant": tenant.pk, "preset": "gitlab-self-managed", "gitlab-self-managed__url": url},
        )
        assert response.status_code == 200
        message = response.context["form"].errors["gitlab-self-managed__url"][0]
        assert message == admin_verdict(client, tenant, url) == apply_verdict(tenant, url)
    settings.JWTEX_ALLOW_INSECURE_ISSUERS = True
    response = client.post(
        reverse("admin:exchange_issuer_preset"),
        {"tenant": tenant.pk, "preset": "gitlab-self-managed", "gitlab-self-managed__url": "http://gitlab.internal"},
    )
    assert response.status_code == 302


ALLOWED = "https://token.actions.githubusercontent.com https://gitlab.example.com/*"


@pytest.mark.parametrize(
    "url, refused",
    [
        ("https://token.actions.githubusercontent.com", False),
        ("https://gitlab.example.com/platform", False),
        ("https://gitlab.example.com.evil.test", True),
        ("https://gitlab.com", True),
        ("https://10.0.0.1/internal", True),  # the URL rule first, then the operators' list
    ],
)
def test_admin_and_apply_refuse_an_issuer_outside_the_operators_list_alike(
    admin_client_for, tenant, settings, url, refused
):
    settings.JWTEX_ALLOWED_UPSTREAM_ISSUERS = ALLOWED
    client = admin_client_for(tenant, "operator")
    admin, applied = admin_verdict(client, tenant, url), apply_verdict(tenant, url)
    assert admin == applied
    assert bool(admin) is refused
    if refused and "10.0.0.1" not in url:
        assert (
            admin.startswith("The issuer is not one this service allows") and "JWTEX_ALLOWED_UPSTREAM_ISSUERS" in admin
        )
    settings.JWTEX_ALLOWED_UPSTREAM_ISSUERS = ""  # unset: any issuer the URL rule accepts, as before
    assert (admin_verdict(client, tenant, url) is None) is ("10.0.0.1" not in url)
