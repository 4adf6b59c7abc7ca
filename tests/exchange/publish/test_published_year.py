"""A simulated year of key rotation with a published issuer URL (docs/endpoints.md#published-issuer-url):
at every step every unexpired token verifies from the published documents alone (discovery, then
the JWKS it names, fetched over HTTP from the static site), publishes fail now and then, and no
token is ever signed by a key that the published JWKS had not shown for a full max-age."""

from __future__ import annotations

import json
import random
import shutil
from datetime import timedelta

import jwt

from exchange.core.limits import JWKS_MAX_AGE
from exchange.core.rotation import MAX_PUBLISHED_KEYS
from exchange.keys import signing_key_rotate
from exchange.models import SigningKey
from exchange.publish.service import issuer_publish
from exchange.services.exchange import token_exchange
from tenants.models import Tenant
from tests.exchange.publish.test_publish import AUDIENCE, publishing_tenant
from tests.exchange.test_kms import allow_everything

LIFETIME = timedelta(hours=12)
QUIET = timedelta(days=1)


def published_keys(site, slug: str = "acme") -> tuple[str, dict]:
    """What a relying party given only the published URL finds: the issuer and the JWKS."""
    status, _, body = site.get(f"/{slug}/.well-known/openid-configuration")
    assert status == 200
    discovery = json.loads(body)
    jwks_path = discovery["jwks_uri"].removeprefix(site.url)
    assert jwks_path != discovery["jwks_uri"], "the JWKS must be on the published site"
    status, _, body = site.get(jwks_path)
    assert status == 200
    return discovery["issuer"], json.loads(body)


def test_a_year_of_rotation_with_a_published_issuer(db, static_site, upstream, settings, request):
    tenant = publishing_tenant(
        static_site,
        key_rotation_interval=7 * 86400,
        key_prepublish_window=2 * 3600,
        max_token_lifetime=int(LIFETIME.total_seconds()),
    )
    allow_everything(tenant, upstream)
    tenant.rules.update(lifetime=int(LIFETIME.total_seconds()))
    first = SigningKey.objects.get(tenant=tenant)
    working, broken = f"file://{static_site.root}", "file:///proc/jwtex-cannot-write-here"
    rng = random.Random(21)
    issued: list[tuple[str, int]] = []
    first_seen: dict[str, object] = {}
    now, end = first.created_at, first.created_at + timedelta(days=365)
    activations = failures = 0
    while now < end:
        at = int(now.timestamp())
        result = signing_key_rotate(tenant_id=tenant.pk, now=now, force=rng.random() < 0.03)
        activations += bool(result.activated)
        # As the sweep would; one attempt in six fails (the bucket unreachable, a full disk…).
        failing = now != first.created_at and rng.random() < 1 / 6
        settings.JWTEX_PUBLISH_TARGET = broken if failing else working
        failures += not issuer_publish(tenant_id=tenant.pk, now=now).confirmed
        issuer, jwks = published_keys(static_site)
        assert issuer == tenant.published_issuer_url
        published = {k["kid"] for k in jwks["keys"]}
        assert len(published) <= MAX_PUBLISHED_KEYS
        for kid in published:
            first_seen.setdefault(kid, now)
        issued = [(token, exp) for token, exp in issued if exp > at]
        for token, _ in issued:  # every unexpired token verifies from the published documents alone
            key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
            jwt.decode(
                token,
                key.key,
                algorithms=["ES256"],
                audience=AUDIENCE,
                issuer=issuer,
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        due = Tenant.objects.values_list("keys_next_check_at", flat=True).get(pk=tenant.pk)
        step = timedelta(hours=rng.choice([2, 5, 7, 11]))
        if due is not None and due - now > QUIET:
            step = min(timedelta(days=rng.choice([2, 3, 4])), due - now - step)
        if step < LIFETIME:
            subject = upstream.mint(iat=at, nbf=at, exp=at + 300)
            minted = token_exchange(tenant_slug="acme", subject_token=subject, now=at)
            # Signed by a key the published JWKS has shown for a full max-age (or the first one).
            assert minted.kid in published
            assert minted.kid == first.kid or now - first_seen[minted.kid] >= timedelta(seconds=JWKS_MAX_AGE)
            issued.append((minted.token, minted.expires_at))
        now += step
    assert activations >= 365 // 7 - 3  # it really rotated, all year, failures and all
    assert failures >= 20
    # And the last tokens, by another verifier that is given only the published URL (where node is:
    # the year itself needs only PyJWT).
    if not (shutil.which("node") and shutil.which("npm")):
        return
    verified = request.getfixturevalue("jose").verify_remote(
        issuer=tenant.published_issuer_url, audience=AUDIENCE, tokens=[(token, exp - 60) for token, exp in issued]
    )
    assert issued and all(r["ok"] for r in verified["results"])
