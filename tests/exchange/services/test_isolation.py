"""Tenant isolation: one tenant's issuers, rules and keys never serve another tenant."""

from __future__ import annotations

import jwt

from exchange.models import ExchangeRecord, Issuer, Rule, SigningKey


def test_token_for_one_tenants_issuer_is_refused_by_another(client, tenant, other_tenant, upstream, allow_rule):
    token = upstream.mint()
    # globex has no issuer at all: by iss, by issuerId, on every endpoint.
    response = client.post("/t/globex/exchange", data=token, content_type="application/jwt")
    assert response.status_code == 401 and response.json()["error"] == "invalid_token"
    response = client.post("/t/globex/exchange?issuerId=ci", data=token, content_type="application/jwt")
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    assert client.post("/t/acme/exchange", data=token, content_type="application/jwt").status_code == 200
    assert ExchangeRecord.objects.filter(tenant=other_tenant, decision="denied").count() == 2
    assert ExchangeRecord.objects.filter(tenant=tenant, decision="allowed").count() == 1


def test_same_upstream_in_two_tenants_uses_each_tenants_rules_and_key(
    client, tenant, other_tenant, upstream, allow_rule
):
    other_issuer = Issuer.objects.create(
        tenant=other_tenant,
        issuer_id="ci",
        issuer=upstream.issuer,
        audiences=[upstream.audience],
        static_jwks=upstream.jwks,
    )
    deny = Rule.objects.create(tenant=other_tenant, position=1, name="nobody", when="true", effect="deny")
    deny.issuers.add(other_issuer)
    token = upstream.mint()
    assert client.post("/t/globex/exchange", data=token, content_type="application/jwt").status_code == 403
    response = client.post("/t/acme/exchange", data=token, content_type="application/jwt")
    assert response.status_code == 200
    kid = jwt.get_unverified_header(response.content.decode())["kid"]
    assert SigningKey.objects.get(kid=kid).tenant == tenant
    globex_kids = [k["kid"] for k in client.get("/t/globex/.well-known/jwks.json").json()["keys"]]
    assert kid not in globex_kids


def test_rule_naming_another_tenants_issuer_id_does_not_apply(
    client, tenant, other_tenant, upstream, other_upstream, allow_rule
):
    """Rules bind to issuer rows, not to issuer-id strings that another tenant might also use."""
    other_issuer = Issuer.objects.create(
        tenant=other_tenant,
        issuer_id="ci",
        issuer=other_upstream.issuer,
        audiences=[other_upstream.audience],
        static_jwks=other_upstream.jwks,
    )
    response = client.post("/t/acme/exchange", data=other_upstream.mint(), content_type="application/jwt")
    assert response.status_code == 401
    response = client.post("/t/globex/exchange", data=other_upstream.mint(), content_type="application/jwt")
    assert response.status_code == 403  # globex has no rule at all
    assert other_issuer.rules.count() == 0


def test_each_tenant_has_its_own_issuer_url_and_keys(client, tenant, other_tenant):
    acme = client.get("/t/acme/.well-known/openid-configuration").json()
    globex = client.get("/t/globex/.well-known/openid-configuration").json()
    assert acme["issuer"].endswith("/t/acme") and globex["issuer"].endswith("/t/globex")
    acme_kids = {k["kid"] for k in client.get("/t/acme/.well-known/jwks.json").json()["keys"]}
    globex_kids = {k["kid"] for k in client.get("/t/globex/.well-known/jwks.json").json()["keys"]}
    assert acme_kids and globex_kids and not acme_kids & globex_kids
