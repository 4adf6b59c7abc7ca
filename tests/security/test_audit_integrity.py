"""Every attempt leaves its audit row (docs/operations.md#audit), whatever an attacker puts in the token or the
request: hostile values must not make the insert fail (an attempt that is not audited is an
attacker's win), and the row never holds the raw token."""

from __future__ import annotations

import json

import pytest

from exchange.models import ExchangeRecord

from . import jose
from .endpoints import ENDPOINTS, assert_refused, send

pytestmark = pytest.mark.usefixtures("exchangeable")

HOSTILE = {
    "NUL": "repo:octo-org/octo-repo\u0000injected",
    "only NUL": "\u0000",
    "control characters": "\u0001\u0007\u001b[31m\r\n",
    "very long": "s" * 2500,
    "bidi override": "\u202egnp.exe",
    "non-BMP": "\U0001f600" * 10,
}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("case", list(HOSTILE))
def test_refused_attempt_with_hostile_claim_values_is_audited(endpoint, case, client, upstream):
    value = HOSTILE[case]
    claims = upstream.claims(sub=value, jti=value, iss=upstream.issuer, aud=[upstream.audience, value])
    header = {"alg": "RS256", "kid": upstream.rsa_kid}
    token = jose.signed(header, claims, rsa_key=upstream.rsa_key)
    h, p, s = token.split(".")
    # Flip a bit of the last byte: replacing it with a constant left the signature intact
    # whenever it already was that byte (1 in 256 — a flake this test once had).
    signature = jose.unb64u(s)
    forged = f"{h}.{p}.{jose.b64u(signature[:-1] + bytes([signature[-1] ^ 1]))}"
    assert forged != token
    assert_refused(endpoint, send(endpoint, client, forged), 401, "invalid_token")
    record = ExchangeRecord.objects.get()
    assert record.decision == "denied" and record.error_code == "invalid_token"
    assert "\x00" not in record.upstream_sub and "\x00" not in record.upstream_jti
    assert "\x00" not in json.dumps(record.upstream_aud)
    assert forged not in json.dumps(list(ExchangeRecord.objects.values()), default=str)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_allowed_exchange_copying_hostile_claims_is_audited(endpoint, client, upstream, allow_rule):
    # A validly signed token whose claims carry a NUL, copied by the rule into the new token.
    allow_rule.claims = {"workflow": "claims.workflow"}
    allow_rule.save()
    token = upstream.mint(sub="repo:octo-org/octo-repo\u0000x", workflow="deploy\u0000evil")
    response = send(endpoint, client, token)
    assert response.status_code == 200, response.content
    record = ExchangeRecord.objects.get()
    assert record.decision == "allowed"
    assert "\x00" not in record.issued_sub and "\x00" not in json.dumps(record.issued_claims)


@pytest.mark.parametrize("forwarded", ["junk", "1.2.3.4, not-an-address", "", "::ffff:10.0.0.1", "10.0.0.1:5555"])
def test_unparseable_client_address_is_audited_without_it(forwarded, client, settings, upstream):
    settings.JWTEX_TRUSTED_PROXY_COUNT = 1
    response = client.post(
        "/t/acme/exchange", data=upstream.mint(), content_type="application/jwt", HTTP_X_FORWARDED_FOR=forwarded
    )
    assert response.status_code == 200, response.content
    record = ExchangeRecord.objects.get()
    # Not an address: the socket address is used instead (never the junk).
    assert record.client_address in {"127.0.0.1", "::ffff:10.0.0.1", "::ffff:a00:1"}
