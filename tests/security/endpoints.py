"""The three exchange endpoints as attack tests use them, and the one assertion every refusal
must pass: the right status and error code, no token in the body, no "allowed" audit row."""

from __future__ import annotations

import json
import re
from urllib.parse import urlencode

GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
FORM = "application/x-www-form-urlencoded"
ENDPOINTS = ("raw", "rfc8693", "api")

# Anything shaped like a compact JWS (our tokens start with a base64url JSON header).
_JWT_SHAPE = re.compile(rb"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def raw(client, token, *, slug="acme", issuer_id=None, content_type="application/jwt", **extra):
    url = f"/t/{slug}/exchange" + (f"?issuerId={issuer_id}" if issuer_id else "")
    data = token.encode("utf-8", "surrogatepass") if isinstance(token, str) else token
    return client.post(url, data=data, content_type=content_type, **extra)


def rfc8693(client, token, *, slug="acme", issuer_id=None, audience=None, **extra):
    # RFC 8693 has no issuer parameter: the issuer is always chosen by the token's iss.
    form = {"grant_type": GRANT, "subject_token": token, "subject_token_type": JWT_TYPE}
    if audience is not None:
        form["audience"] = audience
    return client.post(f"/t/{slug}/token", data=urlencode(form), content_type=FORM, **extra)


def api(client, token, *, slug="acme", issuer_id=None, audience=None, **extra):
    body = {"subject_token": token}
    if issuer_id is not None:
        body["issuer_id"] = issuer_id
    if audience is not None:
        body["audience"] = audience
    return client.post(
        f"/api/v1/t/{slug}/exchange", data=json.dumps(body), content_type="application/json", **extra
    )


def send(endpoint, client, token, **kwargs):
    return {"raw": raw, "rfc8693": rfc8693, "api": api}[endpoint](client, token, **kwargs)


def wire(endpoint: str, status: int, code: str) -> tuple[int, str]:
    """What ``endpoint`` answers for a refusal that the raw/JSON endpoints answer with
    ``status``/``code``: RFC 8693 §2.2.2 makes every refused subject token 400
    invalid_request and a refused audience 400 invalid_target."""
    if endpoint == "rfc8693" and status in (400, 401, 403):
        return 400, ("invalid_target" if code == "invalid_target" else "invalid_request")
    if code == "invalid_target":
        return 403, "access_denied"
    return status, code


def assert_no_token(response) -> None:
    body = response.content
    assert not _JWT_SHAPE.search(body), f"a token-shaped string in a refusal: {body[:200]!r}"
    if response.get("Content-Type", "").startswith("application/json"):
        doc = json.loads(body)
        assert "token" not in doc and "access_token" not in doc


def assert_refused(endpoint: str, response, status: int, code: str, *, context: str = "") -> dict:
    """``status``/``code`` as the raw and JSON endpoints say it (mapped for RFC 8693)."""
    status, code = wire(endpoint, status, code)
    assert response.status_code == status, (context, response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json"), (context, response["Content-Type"])
    body = response.json()
    assert body["error"] == code, (context, body)
    assert isinstance(body.get("error_description"), str) and body["error_description"]
    assert set(body) == {"error", "error_description"}, body
    assert_no_token(response)
    assert response.get("Cache-Control") == "no-store"
    return body


def assert_nothing_allowed() -> None:
    from exchange.models import ExchangeRecord

    allowed = ExchangeRecord.objects.filter(decision="allowed")
    assert not allowed.exists(), list(allowed.values("endpoint", "rule_name", "upstream_sub"))
