"""End to end against an independently written OIDC issuer.

django-oidc-provider, served by pytest-django's live server, plays the CI platform: jwtex
fetches its discovery document and JWKS over HTTP, exchanges an id_token it issued, and
the emitted token is then verified *only* through jwtex's own served discovery and JWKS.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from exchange.models import ExchangeRecord, Issuer, Rule
from tests.aws_acceptance import sts_problems
from tests.conftest import make_tenant, runtime_clear

pytestmark = pytest.mark.django_db(transaction=True)


def _http(method: str, url: str, data: bytes | None = None, headers: dict | None = None):
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.fixture
def oidc_upstream(live_server, django_user_model):
    """A real OIDC provider with an RSA key, a confidential client and a user."""
    from oidc_provider.models import Client, ResponseType, RSAKey

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    RSAKey.objects.create(
        key=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ).decode()
    )
    client = Client.objects.create(
        name="ci",
        client_id="jwtex-audience",
        client_secret="s3cret",
        client_type="confidential",
        jwt_alg="RS256",
        _redirect_uris="http://localhost/cb",
        _scope="openid email",
    )
    code, _ = ResponseType.objects.get_or_create(value="code", defaults={"description": "code"})
    client.response_types.add(code)
    user = django_user_model.objects.create_user(username="builder", password="pw-builder", email="b@example.test")
    issuer = f"{live_server.url}/upstream"

    def id_token() -> str:
        form = urllib.parse.urlencode(
            {
                "grant_type": "password",
                "username": "builder",
                "password": "pw-builder",
                "client_id": client.client_id,
                "client_secret": client.client_secret,
                "scope": "openid email",
            }
        ).encode()
        status, _, body = _http("POST", f"{issuer}/token", form, {"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 200, body
        return json.loads(body)["id_token"]

    return {"issuer": issuer, "client_id": client.client_id, "user": user, "id_token": id_token}


@pytest.fixture
def jwtex_tenant(settings, live_server, oidc_upstream):
    settings.JWTEX_PUBLIC_URL = live_server.url
    settings.JWTEX_ALLOW_INSECURE_ISSUERS = True  # the live server is plain http on loopback
    runtime_clear()
    tenant = make_tenant("acme", name="Acme Corp")
    upstream = Issuer.objects.create(
        tenant=tenant, issuer_id="oidc", issuer=oidc_upstream["issuer"], audiences=[oidc_upstream["client_id"]]
    )
    rule = Rule.objects.create(
        tenant=tenant,
        position=10,
        name="builders",
        when=f"claims.sub == '{oidc_upstream['user'].pk}'",
        effect="allow",
        session_tags={"user": "claims.sub", "source": "issuer"},
        transitive_tag_keys=["source"],
        claims={"email": "claims.email"},
        source_identity="aws_source_identity(claims.email)",  # CloudTrail's "who" (docs/rules.md#source-identity)
    )
    rule.issuers.add(upstream)
    yield tenant
    runtime_clear()


def _verify_through_discovery(token: str, issuer_url: str) -> dict:
    status, headers, body = _http("GET", f"{issuer_url}/.well-known/openid-configuration")
    assert status == 200
    assert "max-age=" in headers["Cache-Control"]
    discovery = json.loads(body)
    assert discovery["issuer"] == issuer_url
    assert discovery["jwks_uri"] == f"{issuer_url}/.well-known/jwks.json"
    assert discovery["token_endpoint"] == f"{issuer_url}/token"
    assert discovery["response_types_supported"] == ["id_token"]
    assert discovery["subject_types_supported"] == ["public"]
    assert discovery["grant_types_supported"] == ["urn:ietf:params:oauth:grant-type:token-exchange"]

    status, _, body = _http("GET", discovery["jwks_uri"])
    assert status == 200
    jwks = json.loads(body)
    for key in jwks["keys"]:
        assert {"kty", "kid", "alg", "use"} <= set(key) and key["use"] == "sig"
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key), "private members must never be published"
    assert set(discovery["id_token_signing_alg_values_supported"]) == {k["alg"] for k in jwks["keys"]}

    header = jwt.get_unverified_header(token)
    assert header["typ"] == "JWT"
    signing_key = jwt.PyJWKClient(discovery["jwks_uri"]).get_signing_key(header["kid"])
    return jwt.decode(
        token,
        signing_key.key,
        algorithms=discovery["id_token_signing_alg_values_supported"],
        audience="sts.amazonaws.com",
        issuer=discovery["issuer"],
        options={"require": ["iss", "sub", "aud", "iat", "nbf", "exp", "jti"]},
    )


def test_raw_exchange_with_real_upstream_verifies_through_served_jwks(live_server, oidc_upstream, jwtex_tenant):
    upstream_token = oidc_upstream["id_token"]()
    status, headers, body = _http(
        "POST",
        f"{live_server.url}/t/acme/exchange?issuerId=oidc",
        upstream_token.encode(),
        {"Content-Type": "application/jwt"},
    )
    assert status == 200, body
    assert headers["Content-Type"] == "application/jwt"
    assert not body.endswith(b"\n")
    claims = _verify_through_discovery(body.decode(), f"{live_server.url}/t/acme")
    user_id = str(oidc_upstream["user"].pk)
    assert claims["sub"] == user_id
    assert claims["email"] == "b@example.test"
    assert claims["https://aws.amazon.com/tags"] == {
        "principal_tags": {"user": [user_id], "source": ["oidc"]},
        "transitive_tag_keys": ["source"],
    }
    assert claims["exp"] - claims["iat"] == 900
    assert claims["https://aws.amazon.com/source_identity"] == "b@example.test"
    assert sts_problems(body.decode()) == []

    # jwtex learnt the upstream's keys over HTTP and remembered them.
    issuer = Issuer.objects.get(tenant=jwtex_tenant, issuer_id="oidc")
    assert issuer.jwks and issuer.jwks_fetched_at is not None
    record = ExchangeRecord.objects.get(tenant=jwtex_tenant)
    assert record.decision == "allowed" and record.issued_jti == claims["jti"]
    assert record.upstream_iss == oidc_upstream["issuer"] and record.upstream_sub == user_id


def test_the_original_jwtex_curl_command(live_server, oidc_upstream, jwtex_tenant, tmp_path):
    """The drop-in usage, byte for byte: `curl -s --data-binary "$jwt" "$URL/t/acme/exchange?issuerId=…"`."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed (apt-get install curl)")
    jwt_text = oidc_upstream["id_token"]()
    result = subprocess.run(
        [curl, "-s", "--data-binary", jwt_text, f"{live_server.url}/t/acme/exchange?issuerId=oidc"],
        capture_output=True,
        timeout=30,
        check=True,
    )
    token = result.stdout.decode()
    claims = _verify_through_discovery(token, f"{live_server.url}/t/acme")
    assert claims["sub"] == str(oidc_upstream["user"].pk)


def test_rfc8693_and_json_api_with_real_upstream(live_server, oidc_upstream, jwtex_tenant):
    form = urllib.parse.urlencode(
        {
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "subject_token": oidc_upstream["id_token"](),
            "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
        }
    ).encode()
    status, headers, body = _http(
        "POST", f"{live_server.url}/t/acme/token", form, {"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert status == 200, body
    assert headers["Cache-Control"] == "no-store"
    answer = json.loads(body)
    assert answer["issued_token_type"] == "urn:ietf:params:oauth:token-type:jwt"
    assert answer["token_type"] == "N_A" and answer["expires_in"] == 900
    _verify_through_discovery(answer["access_token"], f"{live_server.url}/t/acme")

    payload = json.dumps({"subject_token": oidc_upstream["id_token"](), "issuer_id": "oidc"}).encode()
    status, _, body = _http(
        "POST", f"{live_server.url}/api/v1/t/acme/exchange", payload, {"Content-Type": "application/json"}
    )
    assert status == 200, body
    answer = json.loads(body)
    claims = _verify_through_discovery(answer["token"], f"{live_server.url}/t/acme")
    assert claims["iss"] == f"{live_server.url}/t/acme"
    assert answer["kid"] == jwt.get_unverified_header(answer["token"])["kid"]
    assert answer["expires_in"] == 900
    assert answer["expires_at"].endswith("Z")


def test_token_of_real_upstream_is_refused_when_no_rule_matches(live_server, oidc_upstream, jwtex_tenant):
    Rule.objects.filter(tenant=jwtex_tenant).update(when="claims.sub == 'somebody else'")
    Issuer.objects.get(tenant=jwtex_tenant).save()  # bump the tenant's config version (update() bypasses signals)
    status, _, body = _http(
        "POST",
        f"{live_server.url}/t/acme/exchange",
        oidc_upstream["id_token"]().encode(),
        {"Content-Type": "text/plain"},
    )
    assert status == 403, body
    assert json.loads(body)["error"] == "access_denied"
    assert ExchangeRecord.objects.get(tenant=jwtex_tenant).decision == "denied"
