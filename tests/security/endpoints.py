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
# The pure verifier (exchange.core): every case of the large attack tables runs against it,
# a representative share of them through each real endpoint as well (``routes``).
VERIFIER = "verifier"

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
    return client.post(f"/api/v1/t/{slug}/exchange", data=json.dumps(body), content_type="application/json", **extra)


def verifier(client, token, *, upstream, issuer_id=None, **extra):
    """``jwt_parse`` and ``jwt_verify`` alone (no HTTP, no database), against the
    ``upstream`` fixture's issuer as the exchangeable tenant configures it; the refusal is
    rendered as the raw endpoint renders it."""
    import time

    from django.http import HttpResponse

    from exchange.api.error_responses import error_response
    from exchange.core.compact_jws import jwt_parse
    from exchange.core.errors import ExchangeError
    from exchange.core.jwks import KeySet
    from exchange.core.values import IssuerConfig
    from exchange.core.verification import jwt_verify

    config = IssuerConfig(issuer_id="ci", issuer=upstream.issuer, audiences=(upstream.audience,))
    try:
        jwt_verify(jwt_parse(token), issuer=config, keys=KeySet.from_jwks(upstream.jwks), now=time.time())
    except ExchangeError as error:
        response = error_response(error)
        response.json = lambda: json.loads(response.content)
        return response
    return HttpResponse(b"verified", content_type="text/plain")


def send(endpoint, client, token, **kwargs):
    if endpoint == VERIFIER:
        return verifier(client, token, **kwargs)
    kwargs.pop("upstream", None)
    return {"raw": raw, "rfc8693": rfc8693, "api": api}[endpoint](client, token, **kwargs)


def routes(cases, *, through_endpoints: int = 3):
    """``(endpoint, case)`` pairs: every case against the verifier, and ``through_endpoints``
    cases spread over the table (first, middle, last…) through each real endpoint."""
    cases = list(cases)
    step = max(1, len(cases) // through_endpoints)
    spread = cases[::step][:through_endpoints]
    return [(VERIFIER, case) for case in cases] + [(endpoint, case) for endpoint in ENDPOINTS for case in spread]


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
