"""Hostile requests around the token (bodies, forms, parameters, methods): always a clean 4xx in the
JSON error shape (docs/errors.md#error-responses), never a 5xx or Django's HTML error page. Regression
tests for the 500s and HTML 400s found while hardening (docs/errors.md#bad-requests)."""

from __future__ import annotations

import json

import pytest

from .endpoints import FORM, GRANT, JWT_TYPE, assert_nothing_allowed, assert_refused

pytestmark = pytest.mark.usefixtures("exchangeable")

API = "/api/v1/t/acme/exchange"


@pytest.mark.parametrize(
    "body",
    [
        "[" * 10_000 + "]" * 10_000,  # was RecursionError → 500
        '{"subject_token": ' + "[" * 5_000 + "]" * 5_000 + "}",
        '{"x": ' * 2_000 + "1" + "}" * 2_000,
    ],
    ids=["array", "in-member", "objects"],
)
def test_api_deeply_nested_json_body_is_invalid_request(client, body):
    response = client.post(API, data=body, content_type="application/json")
    assert_refused("api", response, 400, "invalid_request")


def test_api_duplicate_member_in_body_is_invalid_request(client, upstream):
    # A proxy that reads the first subject_token and a service that reads the last see two requests.
    body = f'{{"subject_token": "{upstream.mint(ref="refs/heads/feature")}", "subject_token": "{upstream.mint()}"}}'
    response = client.post(API, data=body, content_type="application/json")
    body = assert_refused("api", response, 400, "invalid_request")
    assert "repeats" in body["error_description"]
    assert_nothing_allowed()


@pytest.mark.parametrize(
    "body, content_type",
    [
        (b'{"subject_token": NaN}', "application/json"),
        (b'{"subject_token": "a.b.c"}', "application/json; charset=no-such-charset"),
        (json.dumps({"subject_token": "a.b.c"}).encode("utf-16"), "application/json; charset=utf-16"),
        (b'{"subject_token": "\xff"}', "application/json"),
        (b"\xef\xbb\xbf{}", "application/json"),
        (b"", "application/json"),
        (b"null", "application/json"),
        (b'"a.b.c"', "application/json"),
        (b'{"subject_token": "a.b.c"}', "text/plain"),
        (b'{"subject_token": "a.b.c"}', "application/json-patch+json"),
    ],
)
def test_api_unparseable_body_is_invalid_request(client, body, content_type):
    response = client.generic("POST", API, data=body, content_type=content_type)
    assert_refused("api", response, 400, "invalid_request")


@pytest.mark.parametrize(
    "body, content_type",
    [
        ("&".join(["a=1"] * 1500), FORM),  # over DATA_UPLOAD_MAX_NUMBER_FIELDS: was an HTML 400
        ("&" * 5000, FORM),
        ("grant_type=x".encode("utf-16"), FORM + "; charset=utf-16"),  # was an HTML 400
        (f"grant_type={GRANT}&subject_token=a.b.c&subject_token_type={JWT_TYPE}", FORM + "; charset=no-such-charset"),
        (f"grant_type={GRANT}&subject_token=%ff%fe%00&subject_token_type={JWT_TYPE}", FORM),
        (f"grant_type={GRANT}&subject_token=a.b.c&subject_token=d.e.f&subject_token_type={JWT_TYPE}", FORM),
    ],
    ids=["many-fields", "many-empty-fields", "utf-16", "unknown-charset", "bad-percent", "repeated"],
)
def test_rfc8693_unparseable_form_is_invalid_request(client, body, content_type):
    data = body if isinstance(body, bytes) else body.encode()
    response = client.generic("POST", "/t/acme/token", data=data, content_type=content_type)
    assert response.status_code == 400, response.content
    assert response.json()["error"] in {"invalid_request", "unsupported_grant_type"}


def test_raw_repeated_issuer_id_is_invalid_request(client, upstream):
    # Parameter pollution: ?issuerId=x&issuerId=ci must not be read as whichever comes last.
    response = client.post(
        "/t/acme/exchange?issuerId=nope&issuerId=ci", data=upstream.mint(), content_type="application/jwt"
    )
    assert_refused("raw", response, 400, "invalid_request")
    assert_nothing_allowed()


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
@pytest.mark.parametrize("path", ["/t/acme/exchange", "/t/acme/token", API])
def test_other_methods_are_405_in_the_error_shape(client, method, path):
    response = getattr(client, method)(path)
    assert response.status_code == 405, response.content
    assert response.json()["error"] == "invalid_request"
    assert "POST" in response["Allow"]


@pytest.mark.parametrize("content_length", ["abc", "-5", "1e3", "99999999999999999999"])
@pytest.mark.parametrize("path", ["/t/acme/exchange", "/t/acme/token", API])
def test_bogus_content_length_is_refused(client, path, content_length):
    content_type = {"/t/acme/token": FORM, API: "application/json"}.get(path, "application/jwt")
    response = client.generic("POST", path, data=b"a.b.c", content_type=content_type, CONTENT_LENGTH=content_length)
    assert 400 <= response.status_code < 500, response.content
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize("slug", ["%00", "a" * 5000, "%C3%A9", "..", "ACME", "acme%20"])
def test_strange_tenant_slugs_are_not_found(client, slug, upstream):
    for path in (f"/t/{slug}/exchange", f"/t/{slug}/token", f"/api/v1/t/{slug}/exchange"):
        content_type = (
            "application/jwt"
            if path.endswith("/exchange") and not path.startswith("/api")
            else (FORM if path.endswith("/token") else "application/json")
        )
        response = client.generic("POST", path, data=b"x", content_type=content_type)
        assert response.status_code in (400, 404), (path, response.status_code)
        assert response.json()["error"] in ("not_found", "invalid_request")
    for path in (f"/t/{slug}/.well-known/jwks.json", f"/t/{slug}/.well-known/openid-configuration"):
        response = client.get(path)
        assert response.status_code == 404, (path, response.status_code)
