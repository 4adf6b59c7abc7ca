"""Each error of docs/errors.md#codes-and-statuses through each endpoint: status *and* error code, never a token."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import urlencode

import jwt
import pytest

from exchange.models import ExchangeRecord, Issuer, Rule

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"


def raw(client, token, slug="acme", issuer_id=None, content_type="application/jwt"):
    url = f"/t/{slug}/exchange" + (f"?issuerId={issuer_id}" if issuer_id else "")
    return client.post(url, data=token, content_type=content_type)


FORM = "application/x-www-form-urlencoded"


def post_form(client, path, form):
    return client.post(path, data=urlencode(form), content_type=FORM)


def rfc8693(client, token, slug="acme", **extra):
    form = {"grant_type": GRANT, "subject_token": token, "subject_token_type": JWT_TYPE, **extra}
    return post_form(client, f"/t/{slug}/token", form)


def api(client, token, slug="acme", **extra):
    return client.post(
        f"/api/v1/t/{slug}/exchange",
        data=json.dumps({"subject_token": token, **extra}),
        content_type="application/json",
    )


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["error"] == code
    assert isinstance(body["error_description"], str) and body["error_description"]
    assert "token" not in body and "access_token" not in body
    return body


# --- success shapes -------------------------------------------------------------------------


def test_raw_success_is_the_bare_token(client, upstream, allow_rule, signing_key):
    response = raw(client, upstream.mint(), issuer_id="ci")
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/jwt"
    token = response.content.decode()
    assert token.count(".") == 2 and not token.endswith("\n")
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "ES256", "kid": signing_key.kid, "typ": "JWT"}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == "http://127.0.0.1:8000/t/acme"
    assert claims["aud"] == "sts.amazonaws.com"
    assert claims["sub"] == "repo:octo-org/octo-repo:ref:refs/heads/main"
    assert claims["https://aws.amazon.com/tags"] == {
        "principal_tags": {
            "repository": ["octo-org/octo-repo"],
            "ref": ["refs/heads/main"],
            "actor": ["octocat"],
        },
        "transitive_tag_keys": ["repository"],
    }


def test_raw_without_issuer_id_selects_issuer_by_iss(client, upstream, allow_rule):
    assert raw(client, upstream.mint()).status_code == 200


def test_rfc8693_success_shape(client, upstream, allow_rule):
    response = rfc8693(client, upstream.mint())
    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "issued_token_type", "token_type", "expires_in"}
    assert body["issued_token_type"] == JWT_TYPE and body["token_type"] == "N_A" and body["expires_in"] == 900


def test_api_success_shape(client, upstream, allow_rule, signing_key):
    response = api(client, upstream.mint(), issuer_id="ci")
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"token", "token_type", "expires_in", "expires_at", "kid"}
    assert body["kid"] == signing_key.kid and body["expires_in"] == 900
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert body["expires_at"] == datetime.fromtimestamp(claims["exp"], UTC).isoformat().replace("+00:00", "Z")


def test_requested_audience_allowed_by_rule(client, upstream, allow_rule):
    allow_rule.audiences = ["vault.example"]
    allow_rule.save()
    response = api(client, upstream.mint(), audience="vault.example")
    assert response.status_code == 200, response.content
    assert jwt.decode(response.json()["token"], options={"verify_signature": False})["aud"] == "vault.example"
    response = rfc8693(client, upstream.mint(), audience="vault.example")
    assert response.status_code == 200, response.content


# --- errors through every endpoint ------------------------------------------------------------

ENDPOINTS = ["raw", "rfc8693", "api"]


def send(endpoint, client, token, **kwargs):
    return {"raw": raw, "rfc8693": rfc8693, "api": api}[endpoint](client, token, **kwargs)


def expect(endpoint, response, status, code):
    """RFC 8693 turns token and policy refusals into 400 invalid_request (§2.2.2)."""
    if endpoint == "rfc8693" and status in (400, 401, 403):
        status, code = 400, ("invalid_target" if code == "invalid_target" else "invalid_request")
    elif code == "invalid_target":
        status, code = 403, "access_denied"
    return assert_error(response, status, code)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_malformed_token_is_invalid_request(endpoint, client, allow_rule):
    expect(endpoint, send(endpoint, client, "not-a-jwt"), 400, "invalid_request")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_bad_signature_is_invalid_token(endpoint, client, upstream, allow_rule):
    token = upstream.mint()
    head, payload, sig = token.split(".")
    tampered = f"{head}.{payload}.{('A' if sig[0] != 'A' else 'B')}{sig[1:]}"
    expect(endpoint, send(endpoint, client, tampered), 401, "invalid_token")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_expired_token_is_invalid_token(endpoint, client, upstream, allow_rule):
    expect(endpoint, send(endpoint, client, upstream.mint(iat=1000, nbf=1000, exp=2000)), 401, "invalid_token")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_wrong_audience_is_invalid_token(endpoint, client, upstream, allow_rule):
    expect(endpoint, send(endpoint, client, upstream.mint(aud="someone-else")), 401, "invalid_token")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_unknown_issuer_is_invalid_token(endpoint, client, upstream, allow_rule):
    expect(endpoint, send(endpoint, client, upstream.mint(iss="https://evil.test")), 401, "invalid_token")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_unknown_kid_is_invalid_token(endpoint, client, upstream, allow_rule):
    token = upstream.mint(headers={"kid": "not-published"})
    expect(endpoint, send(endpoint, client, token), 401, "invalid_token")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_no_matching_rule_is_access_denied(endpoint, client, upstream, allow_rule):
    expect(endpoint, send(endpoint, client, upstream.mint(ref="refs/heads/feature")), 403, "access_denied")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_deny_rule_is_access_denied(endpoint, client, tenant, issuer, upstream, allow_rule):
    deny = Rule.objects.create(
        tenant=tenant, position=1, name="deny octocat", when="claims.actor == 'octocat'", effect="deny"
    )
    deny.issuers.add(issuer)
    expect(endpoint, send(endpoint, client, upstream.mint()), 403, "access_denied")
    # The record names the rule that decided, a deny rule too (docs/operations.md#what-a-record-holds).
    record = ExchangeRecord.objects.get()
    assert record.rule_name == "deny octocat"  # by name: it outlives the rule


def test_records_name_the_allow_rule_whose_output_was_refused(client, upstream, allow_rule):
    assert_error(raw(client, upstream.mint(actor="x" * 300)), 403, "access_denied")  # tag value over 256
    assert_error(api(client, upstream.mint(), audience="not-allowed.example"), 403, "access_denied")
    assert_error(raw(client, upstream.mint(ref="refs/heads/feature")), 403, "access_denied")
    rules = [r.rule_name for r in ExchangeRecord.objects.order_by("id")]
    assert rules == [allow_rule.name, allow_rule.name, ""]


@pytest.mark.parametrize("endpoint", ["raw", "api"])  # RFC 8693 has no issuer parameter
def test_pinned_issuer_with_another_iss_is_refused_before_any_key_lookup(
    endpoint, client, monkeypatch, upstream, other_upstream, allow_rule
):
    def no_keys(**kwargs):
        raise AssertionError("no key lookup or fetch for a token whose iss is not the pinned issuer's")

    monkeypatch.setattr("exchange.services.exchange.issuer_keys_get", no_keys)
    response = send(endpoint, client, other_upstream.mint(), issuer_id="ci")
    body = expect(endpoint, response, 401, "invalid_token")
    assert body["error_description"] == "The token's issuer does not match issuer 'ci'."


@pytest.mark.parametrize("endpoint", ["rfc8693", "api"])
def test_audience_not_allowed(endpoint, client, upstream, allow_rule):
    expect(endpoint, send(endpoint, client, upstream.mint(), audience="not-allowed.example"), 403, "invalid_target")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_invalid_rule_output_is_access_denied(endpoint, client, upstream, allow_rule):
    allow_rule.session_tags = {"repository": "claims.repository + '#bad'"}
    allow_rule.transitive_tag_keys = []
    allow_rule.save()
    body = expect(endpoint, send(endpoint, client, upstream.mint()), 403, "access_denied")
    if endpoint != "rfc8693":
        assert "repository" in body["error_description"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_unknown_tenant_is_not_found(endpoint, client, upstream, allow_rule):
    assert_error(send(endpoint, client, upstream.mint(), slug="nope"), 404, "not_found")


def test_disabled_tenant_is_not_found_everywhere(client, tenant, upstream, allow_rule):
    tenant.enabled = False
    tenant.save()
    for path in (
        "/t/acme/.well-known/openid-configuration",
        "/t/acme/.well-known/jwks.json",
        "/t/acme/.well-known/jwks",
    ):
        assert_error(client.get(path), 404, "not_found")
    for endpoint in ENDPOINTS:
        assert_error(send(endpoint, client, upstream.mint()), 404, "not_found")


@pytest.mark.parametrize("endpoint", ["raw", "api"])
def test_unknown_issuer_id_is_not_found(endpoint, client, upstream, allow_rule):
    assert_error(send(endpoint, client, upstream.mint(), issuer_id="nope"), 404, "not_found")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_oversized_token_is_413(endpoint, client, upstream, allow_rule):
    token = upstream.mint(padding="x" * 20000)
    response = send(endpoint, client, token)
    assert response.status_code == 413, response.content
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_tenant_rate_limit_is_429(endpoint, client, tenant, upstream, allow_rule):
    tenant.rate_limit_per_minute = 2
    tenant.save()
    for _ in range(2):
        assert send(endpoint, client, upstream.mint()).status_code == 200
    response = send(endpoint, client, upstream.mint())
    assert_error(response, 429, "too_many_requests")
    assert int(response["Retry-After"]) >= 1


def test_address_rate_limit_is_429(client, settings, upstream, allow_rule):
    settings.JWTEX_RATE_LIMIT_PER_ADDRESS = 1
    assert raw(client, upstream.mint()).status_code == 200
    assert_error(raw(client, upstream.mint()), 429, "too_many_requests")
    # Another address is not limited by the first one's count.
    response = client.post(
        "/t/acme/exchange", data=upstream.mint(), content_type="application/jwt", REMOTE_ADDR="10.9.8.7"
    )
    assert response.status_code == 200


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_upstream_keys_unavailable_is_503(endpoint, client, settings, tenant, upstream, allow_rule):
    settings.JWTEX_ALLOW_INSECURE_ISSUERS = True
    Issuer.objects.filter(tenant=tenant).delete()
    down = Issuer.objects.create(
        tenant=tenant,
        issuer_id="down",
        issuer=upstream.issuer,
        audiences=[upstream.audience],
        jwks_uri="http://127.0.0.1:9/jwks",  # discard port: nothing listens
    )
    allow_rule.issuers.add(down)
    expect(endpoint, send(endpoint, client, upstream.mint()), 503, "temporarily_unavailable")


# --- wire-format specifics ----------------------------------------------------------------------


def test_raw_refuses_form_and_json_bodies(client, upstream, allow_rule):
    token = upstream.mint()
    assert_error(raw(client, token, content_type="application/json"), 400, "invalid_request")
    assert_error(raw(client, json.dumps({"token": token}), content_type="application/json"), 400, "invalid_request")
    assert_error(client.post("/t/acme/exchange", data={"token": token}), 400, "invalid_request")  # multipart
    assert_error(raw(client, urlencode({"token": token}), content_type=FORM), 400, "invalid_request")
    assert_error(raw(client, b""), 400, "invalid_request")
    assert not ExchangeRecord.objects.filter(decision="allowed").exists()


@pytest.mark.parametrize("content_type", [FORM, "application/jwt", "text/plain", "application/octet-stream", ""])
def test_raw_accepts_the_bare_token_whatever_its_label(client, upstream, allow_rule, content_type):
    """`curl --data-binary "$jwt"` (the original jwtex usage) sends it labelled as a form."""
    response = raw(client, upstream.mint(), content_type=content_type)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/jwt"


def test_raw_refuses_surrounding_whitespace(client, upstream, allow_rule):
    for token in (upstream.mint() + "\n", upstream.mint() + "\r\n", " " + upstream.mint()):
        body = assert_error(raw(client, token), 400, "invalid_request")
        assert body["error_description"] == (
            "The token is malformed: it has surrounding whitespace, e.g. a trailing newline."
        )


@pytest.mark.parametrize(
    "form, code",
    [
        ({"subject_token": "x", "subject_token_type": JWT_TYPE}, "invalid_request"),
        (
            {"grant_type": "client_credentials", "subject_token": "x", "subject_token_type": JWT_TYPE},
            "unsupported_grant_type",
        ),
        ({"grant_type": GRANT, "subject_token_type": JWT_TYPE}, "invalid_request"),
        ({"grant_type": GRANT, "subject_token": "x"}, "invalid_request"),
        (
            {"grant_type": GRANT, "subject_token": "x", "subject_token_type": "urn:ietf:params:oauth:token-type:saml2"},
            "invalid_request",
        ),
        (
            {
                "grant_type": GRANT,
                "subject_token": "x",
                "subject_token_type": JWT_TYPE,
                "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
            },
            "invalid_request",
        ),
    ],
)
def test_rfc8693_request_errors(client, allow_rule, form, code):
    assert_error(post_form(client, "/t/acme/token", form), 400, code)


def test_rfc8693_refuses_multipart(client, upstream, allow_rule):
    form = {"grant_type": GRANT, "subject_token": upstream.mint(), "subject_token_type": JWT_TYPE}
    assert_error(client.post("/t/acme/token", data=form), 400, "invalid_request")


def test_rfc8693_refuses_json_body(client, upstream, allow_rule):
    response = client.post("/t/acme/token", data=json.dumps({"grant_type": GRANT}), content_type="application/json")
    assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize(
    "body, content_type",
    [
        ("{not json", "application/json"),
        ("[]", "application/json"),
        ('{"subject_token": 5}', "application/json"),
        ("{}", "application/json"),
        ('{"subject_token": "a.b.c", "extra": 1}', "application/json"),
        ("subject_token=a.b.c", "application/x-www-form-urlencoded"),
    ],
)
def test_api_request_errors(client, allow_rule, body, content_type):
    response = client.post("/api/v1/t/acme/exchange", data=body, content_type=content_type)
    assert_error(response, 400, "invalid_request")


def test_every_attempt_is_audited_without_raw_tokens(client, upstream, allow_rule):
    good, bad = upstream.mint(), upstream.mint(ref="refs/heads/feature")
    assert raw(client, good).status_code == 200
    assert raw(client, bad).status_code == 403
    records = list(ExchangeRecord.objects.order_by("id"))
    assert [r.decision for r in records] == ["allowed", "denied"]
    allowed, denied = records
    assert allowed.rule_name == "octo-org main" and allowed.issuer_ref == "ci" and allowed.issued_kid
    assert allowed.client_address == "127.0.0.1" and allowed.upstream_iss == upstream.issuer
    assert denied.error_code == "access_denied" and denied.status_code == 403 and denied.reason
    dumped = json.dumps([list(ExchangeRecord.objects.values())], default=str)
    for token in (good, bad):
        assert token not in dumped and token.split(".")[2] not in dumped


def test_discovery_and_jwks_documents(client, tenant, signing_key):
    response = client.get("/t/acme/.well-known/openid-configuration")
    assert response.status_code == 200
    assert "max-age=" in response["Cache-Control"]
    doc = response.json()
    assert doc["issuer"] == "http://127.0.0.1:8000/t/acme"
    assert doc["id_token_signing_alg_values_supported"] == ["ES256"]
    for path in ("/t/acme/.well-known/jwks.json", "/t/acme/.well-known/jwks"):
        jwks = client.get(path).json()
        assert [k["kid"] for k in jwks["keys"]] == [signing_key.kid]
        assert set(jwks["keys"][0]) == {"kty", "crv", "x", "y", "kid", "alg", "use"}


def test_openapi_schema_and_docs(client):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/t/{slug}/exchange" in schema.content
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    # Swagger UI from our own static files (the browser test checks every request it makes).
    html = docs.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in html
    assert "cdn." not in html and "@latest" not in html


@pytest.mark.parametrize(
    "method, path",
    [
        ("get", "/t/nope/exchange"),
        ("get", "/t/nope/token"),
        ("get", "/t/acme/no-such-thing"),
        ("post", "/t/acme/.well-known/nothing"),
        ("get", "/t/nope/.well-known/jwks.json"),
    ],
)
def test_every_path_under_an_unknown_tenant_or_unknown_path_is_json_404(client, tenant, method, path):
    assert_error(getattr(client, method)(path), 404, "not_found")


def test_wrong_method_on_a_known_tenant_is_405(client, tenant):
    response = client.get("/t/acme/exchange")
    assert response.status_code == 405 and response["Allow"] == "POST"
