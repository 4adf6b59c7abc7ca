"""The roles claim's reading, and the private-key JWT that authenticates jwtex at the provider."""

from __future__ import annotations

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from exchange.conf import jwtex_settings
from jwtex_site.sso.provider import client_assertion
from jwtex_site.sso.roles import claim_values, roles_from_claim


def test_claim_values_under_the_prefix_name_tenant_roles_and_the_strongest_counts():
    roles = roles_from_claim(
        [
            "jwtex:acme:auditor",
            "jwtex:acme:owner",
            "jwtex:globex:operator",
            "jwtex:superuser",
            "developers",
            "jwtex:acme",
            "jwtex:globex:root",
            "JWTEX:initech:owner",
            "jwtex:a:b:operator",
        ],
        prefix="jwtex:",
        superuser_value="jwtex:superuser",
    )
    assert roles.tenants == {"acme": "owner", "globex": "operator", "a:b": "operator"}
    assert roles.superuser and roles.any
    assert roles.refused == ("jwtex:acme", "jwtex:globex:root")


def test_an_empty_prefix_and_no_superuser_value():
    roles = roles_from_claim(["acme:operator", "jwtex:superuser"], prefix="", superuser_value="")
    assert roles.tenants == {"acme": "operator"} and not roles.superuser
    assert not roles_from_claim([], prefix="jwtex:", superuser_value="x").any


def test_the_claim_is_a_list_of_strings_or_one_string():
    assert claim_values({"groups": ["a", 1, None, "b"]}, "groups") == ["a", "b"]
    assert claim_values({"groups": "jwtex:acme:owner"}, "groups") == ["jwtex:acme:owner"]
    assert claim_values({"groups": {"a": 1}}, "groups") == [] and claim_values({}, "groups") == []


def test_the_client_assertion_is_for_the_token_endpoint_only_and_lives_a_minute(settings, tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "client.pem"
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    settings.JWTEX_ADMIN_OIDC_CLIENT_ID = "jwtex-admin"
    settings.JWTEX_ADMIN_OIDC_PRIVATE_KEY_FILE = str(path)
    settings.JWTEX_ADMIN_OIDC_PRIVATE_KEY_ID = "k1"
    token = client_assertion(
        sign_on=jwtex_settings.admin_sign_on, token_endpoint="https://idp.test/token", now=1_800_000_000
    )
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": "k1", "typ": "JWT"}
    claims = jwt.decode(
        token,
        key.public_key(),
        algorithms=["ES256"],
        audience="https://idp.test/token",
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims["iss"] == claims["sub"] == "jwtex-admin" and claims["exp"] - claims["iat"] == 60 and claims["jti"]
