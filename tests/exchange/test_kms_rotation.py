"""The key lifecycle with AWS KMS keys (moto's server, real boto3 calls): a simulated year of
rotation in which every unexpired token verifies through the served JWKS at every step and every
retired key is scheduled for deletion in KMS; revocation; deletions KMS did not accept, retried."""

from __future__ import annotations

import random
from datetime import timedelta

import jwt
import pytest

from exchange.core.limits import JWKS_MAX_AGE
from exchange.core.rotation import MAX_PUBLISHED_KEYS
from exchange.keys import signing_key_revoke, signing_key_rotate
from exchange.models import KeyState, SigningKey
from exchange.services.exchange import token_exchange
from tenants.models import Tenant
from tests.exchange.test_kms import (
    allow_everything,
    exchange,
    kms_tenant,
    served_jwks,
    verify_with_pyjwt,
)
from tests.kms import kms_unreachable

ISSUER_URL = "http://127.0.0.1:8000/t/acme"


def kms_state(kms, key: SigningKey) -> str:
    return kms.client().describe_key(KeyId=key.kms_key_id)["KeyMetadata"]["KeyState"]


LIFETIME = timedelta(hours=12)
# Nothing of a tenant's keys changes before its next key check (keys_next_check_at, on which the
# sweep rotates it): from a retirement to the next pre-publication, that is days away.
QUIET = timedelta(days=1)


@pytest.mark.parametrize("algorithm, days", [("ES256", 365), ("RS256", 35)])
def test_a_year_of_kms_rotation_keeps_every_unexpired_token_verifiable(db, kms, client, upstream, algorithm, days):
    # 7-day keys, published 2 h before they sign, 12-hour tokens (the local backend's test, on KMS):
    # a year of them with ES256, five weeks (four rotations or more) with RS256.
    tenant = kms_tenant(
        algorithm=algorithm,
        key_rotation_interval=7 * 86400,
        key_prepublish_window=2 * 3600,
        max_token_lifetime=int(LIFETIME.total_seconds()),
    )
    allow_everything(tenant, upstream)
    tenant.rules.update(lifetime=int(LIFETIME.total_seconds()))
    first = SigningKey.objects.get(tenant=tenant)
    rng = random.Random(11)
    issued: list[tuple[str, int]] = []  # (token, exp) of every token issued, while unexpired
    first_seen: dict[str, object] = {}
    now, end = first.created_at, first.created_at + timedelta(days=days)
    activations = handovers = 0
    # Every step rotates (now and then with the operator's "rotate now"), reads the served JWKS
    # and verifies every unexpired token against it. Within QUIET of the tenant's next key check
    # the clock moves 2–11 h a step, less than a token lives, so each step's token is verified at
    # the next: through every pre-publication, activation and retirement (each up to 11 h late).
    # Through the quiet days between it strides two to four days, landing 2–11 h before the check
    # at the latest; a token is exchanged at every step whose next one comes before it expires
    # (a stride's token could not be verified by any later step).
    while now < end:
        at = int(now.timestamp())
        result = signing_key_rotate(tenant_id=tenant.pk, now=now, force=rng.random() < 0.03)
        activations += bool(result.activated)
        for kid in result.retired:  # its last token has expired: KMS will delete it, it cannot sign
            assert kms_state(kms, SigningKey.objects.get(kid=kid)) == "PendingDeletion"
        jwks = served_jwks(client)
        published = {k["kid"] for k in jwks["keys"]}
        assert len(published) <= MAX_PUBLISHED_KEYS
        for kid in published:
            first_seen.setdefault(kid, now)
        issued = [(token, exp) for token, exp in issued if exp > at]
        for token, _ in issued:  # every token not yet expired verifies against the JWKS served now
            key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
            jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience="sts.amazonaws.com",
                issuer=ISSUER_URL,
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        handovers += bool(result.activated and issued)  # the last key's tokens, verified once the next signs
        due = Tenant.objects.values_list("keys_next_check_at", flat=True).get(pk=tenant.pk)
        step = timedelta(hours=rng.choice([2, 5, 7, 11]))
        if due is not None and due - now > QUIET:
            step = min(timedelta(days=rng.choice([2, 3, 4])), due - now - step)
        if step < LIFETIME:
            subject = upstream.mint(iat=at, nbf=at, exp=at + 300)
            minted = token_exchange(tenant_slug="acme", subject_token=subject, now=at)
            # It signs with a key every relying party has seen (or the tenant's very first one).
            assert minted.kid == first.kid or now - first_seen[minted.kid] >= timedelta(seconds=JWKS_MAX_AGE)
            issued.append((minted.token, minted.expires_at))
        now += step
    assert activations >= days // 7 - 1  # it really rotated, all along
    assert handovers >= days // 7 - 1  # and the last key's tokens were verified once the next one signed
    keys = list(SigningKey.objects.filter(tenant=tenant))
    assert all(k.backend == "aws-kms" and bytes(k.private_key_encrypted) == b"" for k in keys)
    for key in keys:
        if key.state == KeyState.RETIRED:
            assert key.kms_deletion_scheduled_at is not None and kms_state(kms, key) == "PendingDeletion"
        else:
            assert key.kms_deletion_scheduled_at is None and kms_state(kms, key) == "Enabled"
    assert sum(k.state == KeyState.RETIRED for k in keys) >= days // 7 - 3


def test_revoking_a_kms_key_deletes_it_and_the_next_key_signs(db, kms, client, upstream):
    tenant = kms_tenant()
    allow_everything(tenant, upstream)
    old = SigningKey.objects.get(tenant=tenant)
    upcoming = signing_key_rotate(tenant_id=tenant.pk, now=old.created_at, force=True).created[0]
    result = signing_key_revoke(tenant=tenant, kid=old.kid, now=old.created_at + timedelta(minutes=1))
    assert result.activated == upcoming
    old.refresh_from_db()
    assert old.state == KeyState.REVOKED and old.kms_deletion_scheduled_at is not None
    assert kms_state(kms, old) == "PendingDeletion"
    assert [k["kid"] for k in served_jwks(client)["keys"]] == [upcoming]
    token = exchange(client, upstream).content.decode()
    assert jwt.get_unverified_header(token)["kid"] == upcoming and verify_with_pyjwt(token, served_jwks(client))


def test_a_revocation_stands_when_kms_cannot_make_the_replacement(db, kms, client, upstream, monkeypatch):
    tenant = kms_tenant()
    allow_everything(tenant, upstream)
    old = SigningKey.objects.get(tenant=tenant)
    kms_unreachable(monkeypatch)
    result = signing_key_revoke(tenant=tenant, kid=old.kid, now=old.created_at)
    assert result.retired == (old.kid,) and not result.created
    assert served_jwks(client)["keys"] == []  # withdrawn at once all the same
    response = exchange(client, upstream)
    assert response.status_code == 503 and response.json()["error"] == "temporarily_unavailable"
    old.refresh_from_db()
    assert old.state == KeyState.REVOKED and old.kms_deletion_scheduled_at is None  # KMS was not reachable
    # KMS is back: the next key check (due within a minute) makes a key and schedules the deletion.
    kms_unreachable(monkeypatch, kms.endpoint)
    tenant.refresh_from_db()
    assert tenant.keys_next_check_at <= old.created_at + timedelta(minutes=1)
    (new,) = signing_key_rotate(tenant_id=tenant.pk, now=tenant.keys_next_check_at).created
    old.refresh_from_db()
    assert old.kms_deletion_scheduled_at is not None and kms_state(kms, old) == "PendingDeletion"
    assert exchange(client, upstream).status_code == 200
    assert [k["kid"] for k in served_jwks(client)["keys"]] == [new]


def test_a_deletion_kms_did_not_accept_is_asked_again_soon(db, kms, monkeypatch):
    tenant = kms_tenant(key_rotation_interval=2 * 86400, key_prepublish_window=3600, max_token_lifetime=3600)
    first = SigningKey.objects.get(tenant=tenant)
    t0 = first.created_at
    signing_key_rotate(tenant_id=tenant.pk, now=t0 + timedelta(days=2) - timedelta(minutes=59))  # publish next
    assert signing_key_rotate(tenant_id=tenant.pk, now=t0 + timedelta(days=2, minutes=1)).activated
    first.refresh_from_db()
    kms_unreachable(monkeypatch)
    assert signing_key_rotate(tenant_id=tenant.pk, now=first.retire_after).retired == (first.kid,)
    first.refresh_from_db()
    tenant.refresh_from_db()
    assert first.state == KeyState.RETIRED and first.kms_deletion_scheduled_at is None
    assert tenant.keys_next_check_at <= first.retire_after + timedelta(minutes=5)
    kms_unreachable(monkeypatch, kms.endpoint)
    assert not signing_key_rotate(tenant_id=tenant.pk, now=tenant.keys_next_check_at).changed
    first.refresh_from_db()
    assert first.kms_deletion_scheduled_at is not None and kms_state(kms, first) == "PendingDeletion"
