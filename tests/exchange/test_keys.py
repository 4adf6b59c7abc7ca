from __future__ import annotations

import json
from datetime import UTC, datetime

import jwt
import pytest

from exchange.core.jwk import jwk_thumbprint
from exchange.keys import (
    KeyDecryptionError,
    signing_key_create,
    signing_key_decrypt,
    signing_key_ensure_active,
    signing_key_load,
    signing_keys_reencrypt,
)
from exchange.models import KeyState, SigningKey
from tests.conftest import make_tenant

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_rfc7638_thumbprint_example():
    # RFC 7638 §3.1: the example RSA key and its thumbprint.
    jwk = {
        "kty": "RSA",
        "n": (  # RFC 7638 §3.1 prints it on several lines too
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjB"
            "ZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8"
            "KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_"
            "xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
        ),
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_key_roundtrip_sign_and_verify(db, algorithm):
    tenant = make_tenant("acme", signing_algorithm=algorithm)
    key = SigningKey.objects.get(tenant=tenant, state=KeyState.ACTIVE)
    assert key.algorithm == algorithm
    assert key.kid == jwk_thumbprint(key.public_jwk) == key.public_jwk["kid"]
    assert key.public_jwk["alg"] == algorithm and key.public_jwk["use"] == "sig"
    assert not {"d", "p", "q"} & set(key.public_jwk)
    signer = signing_key_load(key)
    token = jwt.encode({"sub": "x"}, signer.private_key, algorithm=algorithm, headers={"kid": key.kid})
    public = jwt.PyJWK(key.public_jwk).key
    assert jwt.decode(token, public, algorithms=[algorithm]) == {"sub": "x"}


def test_private_key_is_encrypted_at_rest(db):
    tenant = make_tenant("acme")
    key = SigningKey.objects.get(tenant=tenant)
    blob = bytes(key.private_key_encrypted)
    assert b"PRIVATE KEY" not in blob
    from cryptography.hazmat.primitives import serialization

    der = signing_key_load(key).private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert der not in blob and der[-32:] not in blob


def test_decryption_needs_a_configured_key(db, settings):
    tenant = make_tenant("acme")
    key = SigningKey.objects.get(tenant=tenant)
    settings.JWTEX_KEY_ENCRYPTION_KEYS = ["some-other-key-entirely-0123456789"]
    with pytest.raises(KeyDecryptionError):
        signing_key_decrypt(key.private_key_encrypted)


def test_reencrypt_under_a_new_first_key(db, settings):
    tenant = make_tenant("acme")
    old = settings.JWTEX_KEY_ENCRYPTION_KEYS[0]
    before = bytes(SigningKey.objects.get(tenant=tenant).private_key_encrypted)
    settings.JWTEX_KEY_ENCRYPTION_KEYS = ["the-new-key-encryption-key-abcdef", old]
    assert signing_keys_reencrypt() == 1
    after = SigningKey.objects.get(tenant=tenant)
    assert bytes(after.private_key_encrypted) != before
    settings.JWTEX_KEY_ENCRYPTION_KEYS = ["the-new-key-encryption-key-abcdef"]  # the old key can now go
    assert signing_key_load(after).kid == after.kid


def test_ensure_active_is_idempotent(db):
    tenant = make_tenant("acme")
    first = SigningKey.objects.get(tenant=tenant)
    assert signing_key_ensure_active(tenant=tenant, now=NOW) == first
    assert SigningKey.objects.filter(tenant=tenant).count() == 1


def test_next_key_is_published_but_does_not_sign(db, client):
    tenant = make_tenant("acme")
    active = SigningKey.objects.get(tenant=tenant)
    upcoming = signing_key_create(tenant=tenant, now=NOW, state=KeyState.NEXT)
    kids = [k["kid"] for k in client.get("/t/acme/.well-known/jwks.json").json()["keys"]]
    assert set(kids) == {active.kid, upcoming.kid}
    assert json.loads(client.get("/t/acme/.well-known/openid-configuration").content)["issuer"].endswith("/t/acme")
