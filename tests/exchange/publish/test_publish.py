"""Publishing a tenant's issuer documents (docs/endpoints.md#published-issuer-url): to a directory
served by a plain HTTP server and to moto's S3 behind a CDN stand-in, each read back, verified by
jose (npm) given only the published URL; failures, back-off and the alarm; the signing guard."""

from __future__ import annotations

import json
from datetime import timedelta

import jwt
import pytest
from django.utils import timezone

from exchange.core.publication import CACHE_CONTROL, publish_backoff
from exchange.keys import signing_key_revoke, signing_key_rotate
from exchange.models import IssuerPublication, KeyState, SigningKey
from exchange.publish.service import issuer_publish
from exchange.publish.status import publication_status_get
from tests.conftest import make_tenant
from tests.exchange.test_kms import allow_everything, exchange

AUDIENCE = "sts.amazonaws.com"


def publishing_tenant(site, slug: str = "acme", **fields):
    return make_tenant(slug, published_issuer_url=f"{site.url}/{slug}", **fields)


def published_document(site, slug: str, name: str) -> tuple[int, dict, dict | None]:
    status, headers, body = site.get(f"/{slug}/.well-known/{name}")
    return status, headers, json.loads(body) if status == 200 else None


def test_a_new_tenant_signs_only_once_its_documents_are_confirmed(db, static_site, client, upstream):
    tenant = publishing_tenant(static_site)
    allow_everything(tenant, upstream)
    # Its first key exists but was never published: no token, whatever else is in order.
    response = exchange(client, upstream)
    assert response.status_code == 503 and response.json()["error"] == "temporarily_unavailable"
    result = issuer_publish(tenant_id=tenant.pk, now=timezone.now())
    key = SigningKey.objects.get(tenant=tenant)
    assert result.confirmed and result.live == (key.kid,)
    token = exchange(client, upstream).content.decode()
    assert jwt.decode(token, options={"verify_signature": False})["iss"] == f"{static_site.url}/acme"


@pytest.mark.parametrize("site_fixture", ["static_site", "s3_site"])
def test_published_documents_verify_tokens_from_the_published_url_alone(
    db, request, client, upstream, jose, site_fixture
):
    site = request.getfixturevalue(site_fixture)
    tenant = publishing_tenant(site)
    allow_everything(tenant, upstream)
    assert issuer_publish(tenant_id=tenant.pk, now=timezone.now()).confirmed
    issuer = f"{site.url}/acme"
    status, headers, discovery = published_document(site, "acme", "openid-configuration")
    assert status == 200 and headers["content-type"] == "application/json" and headers["cache-control"] == CACHE_CONTROL
    assert discovery["issuer"] == issuer and discovery["jwks_uri"] == f"{issuer}/.well-known/jwks.json"
    # Static hosting takes no POST: the token endpoint stays jwtex's own.
    assert discovery["token_endpoint"] == "http://127.0.0.1:8000/t/acme/token"
    # jwtex serves the same documents under /t/acme/ too.
    assert client.get("/t/acme/.well-known/openid-configuration").json() == discovery
    assert client.get("/t/acme/.well-known/jwks.json").json() == published_document(site, "acme", "jwks.json")[2]
    token = exchange(client, upstream).content.decode()
    claims = jwt.decode(token, options={"verify_signature": False})
    tampered = token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB")
    before = len(site.gets)
    verified = jose.verify_remote(
        issuer=issuer, tokens=[(token, claims["iat"]), (tampered, claims["iat"])], audience=AUDIENCE
    )
    assert verified["discovery"]["issuer"] == issuer
    assert verified["results"][0]["ok"] and verified["results"][0]["payload"]["iss"] == issuer
    assert not verified["results"][1]["ok"]
    # jose read both documents from the site (and nothing told it about jwtex).
    assert {"/acme/.well-known/openid-configuration", "/acme/.well-known/jwks.json"} <= set(site.gets[before:])


def test_s3_objects_carry_content_type_cache_control_and_no_public_acl(db, s3_site):
    tenant = publishing_tenant(s3_site)
    assert issuer_publish(tenant_id=tenant.pk, now=timezone.now()).confirmed
    for name in ("openid-configuration", "jwks.json"):
        key = f"prod/acme/.well-known/{name}"
        head = s3_site.s3.head_object(Bucket="jwtex-issuers", Key=key)
        assert head["ContentType"] == "application/json" and head["CacheControl"] == CACHE_CONTROL
        grants = s3_site.s3.get_object_acl(Bucket="jwtex-issuers", Key=key)["Grants"]
        assert all("URI" not in g["Grantee"] for g in grants)  # no AllUsers / AuthenticatedUsers grant


def test_a_failed_publish_never_lets_an_unpublished_key_sign(db, static_site, client, upstream, settings):
    # 2-day keys published 1 h before they sign, 1-hour tokens.
    tenant = publishing_tenant(
        static_site, key_rotation_interval=2 * 86400, key_prepublish_window=3600, max_token_lifetime=3600
    )
    allow_everything(tenant, upstream)
    first = SigningKey.objects.get(tenant=tenant)
    t0 = first.created_at
    assert issuer_publish(tenant_id=tenant.pk, now=t0).confirmed
    created = signing_key_rotate(tenant_id=tenant.pk, now=t0 + timedelta(days=2) - timedelta(minutes=59)).created
    (upcoming,) = created
    settings.JWTEX_PUBLISH_TARGET = "file:///proc/jwtex-cannot-write-here"
    failed = issuer_publish(tenant_id=tenant.pk, now=t0 + timedelta(days=2) - timedelta(minutes=58))
    assert not failed.confirmed and "cannot write" in failed.error and failed.live == (first.kid,)
    # Long past its activation time, at every check, the unconfirmed next key never signs.
    for hours in (1, 2, 24, 24 * 30):
        at = t0 + timedelta(days=2, hours=hours)
        assert signing_key_rotate(tenant_id=tenant.pk, now=at).activated is None
        assert SigningKey.objects.get(kid=upcoming).state == KeyState.NEXT
    token = exchange(client, upstream).content.decode()
    assert jwt.get_unverified_header(token)["kid"] == first.kid
    status = publication_status_get(tenant=tenant)
    assert status.alarm and status.failures == 1 and upcoming not in status.live
    # The target is back: confirmed now, the next key signs a full max-age later, not before.
    settings.JWTEX_PUBLISH_TARGET = f"file://{static_site.root}"
    back = t0 + timedelta(days=40)
    assert issuer_publish(tenant_id=tenant.pk, now=back).live == tuple(sorted([first.kid, upcoming]))
    assert signing_key_rotate(tenant_id=tenant.pk, now=back + timedelta(minutes=59)).activated is None
    assert signing_key_rotate(tenant_id=tenant.pk, now=back + timedelta(hours=1)).activated == upcoming


def test_an_active_key_that_is_not_live_does_not_sign(db, static_site, client, upstream):
    """A revocation whose replacement was never published: the tenant answers 503, never a token
    signed by a key AWS cannot find."""
    tenant = publishing_tenant(static_site)
    allow_everything(tenant, upstream)
    first = SigningKey.objects.get(tenant=tenant)
    assert issuer_publish(tenant_id=tenant.pk, now=first.created_at).confirmed
    result = signing_key_revoke(tenant=tenant, kid=first.kid, now=first.created_at + timedelta(minutes=1))
    (new,) = result.created
    response = exchange(client, upstream)
    assert response.status_code == 503 and response.json()["error"] == "temporarily_unavailable"
    assert issuer_publish(tenant_id=tenant.pk, now=timezone.now()).live == (new,)
    assert jwt.get_unverified_header(exchange(client, upstream).content.decode())["kid"] == new


def test_the_read_back_catches_a_document_changed_behind_jwtex(db, static_site):
    tenant = publishing_tenant(static_site)
    key = SigningKey.objects.get(tenant=tenant)
    now = key.created_at
    assert issuer_publish(tenant_id=tenant.pk, now=now).confirmed
    jwks = static_site.root / "acme" / ".well-known" / "jwks.json"
    jwks.write_text('{"keys": []}')
    checked = issuer_publish(tenant_id=tenant.pk, now=now + timedelta(minutes=15), check_only=True)
    assert not checked.confirmed and ".well-known/jwks.json" in checked.error and checked.live == ()
    assert jwks.read_text() == '{"keys": []}'  # a check writes nothing
    row = IssuerPublication.objects.get(tenant=tenant)
    assert row.failures == 1 and row.next_attempt_at == now + timedelta(minutes=15) + publish_backoff(1)
    assert publication_status_get(tenant=tenant).alarm
    # The next publish puts it right.
    assert issuer_publish(tenant_id=tenant.pk, now=now + timedelta(minutes=16)).live == (key.kid,)
    assert not publication_status_get(tenant=tenant).alarm


def test_failures_back_off_and_a_success_resets_them(db, static_site, settings):
    tenant = publishing_tenant(static_site)
    now = timezone.now()
    settings.JWTEX_PUBLISH_TARGET = ""
    waits = []
    for _ in range(5):
        result = issuer_publish(tenant_id=tenant.pk, now=now)
        assert "JWTEX_PUBLISH_TARGET is not set" in result.error
        row = IssuerPublication.objects.get(tenant=tenant)
        waits.append(row.next_attempt_at - now)
    assert waits == [
        timedelta(seconds=30),
        timedelta(minutes=1),
        timedelta(minutes=2),
        timedelta(minutes=4),
        timedelta(minutes=8),
    ]
    assert publish_backoff(30) == timedelta(minutes=30)
    settings.JWTEX_PUBLISH_TARGET = f"file://{static_site.root}"
    assert issuer_publish(tenant_id=tenant.pk, now=now).confirmed
    row = IssuerPublication.objects.get(tenant=tenant)
    assert row.failures == 0 and row.error == "" and row.next_attempt_at == now + timedelta(minutes=15)


def test_a_tenant_without_a_published_url_is_not_published(db, static_site, tenant):
    assert issuer_publish(tenant_id=tenant.pk, now=timezone.now()).skipped
    assert not IssuerPublication.objects.exists() and not any(static_site.root.iterdir())
    assert publication_status_get(tenant=tenant) is None


def test_a_new_published_url_confirms_nothing_of_the_old_one(db, static_site, client, upstream):
    tenant = publishing_tenant(static_site)
    allow_everything(tenant, upstream)
    assert issuer_publish(tenant_id=tenant.pk, now=timezone.now()).confirmed
    tenant.published_issuer_url = f"{static_site.url}/acme-2"
    tenant.save()
    assert exchange(client, upstream).status_code == 503  # nothing is live at the new URL yet
    assert issuer_publish(tenant_id=tenant.pk, now=timezone.now()).confirmed
    token = exchange(client, upstream).content.decode()
    assert jwt.decode(token, options={"verify_signature": False})["iss"] == f"{static_site.url}/acme-2"
    assert published_document(static_site, "acme-2", "openid-configuration")[2]["issuer"] == f"{static_site.url}/acme-2"


def test_publishing_is_per_tenant(db, static_site):
    acme, globex = publishing_tenant(static_site), publishing_tenant(static_site, "globex")
    issuer_publish(tenant_id=acme.pk, now=timezone.now())
    assert published_document(static_site, "globex", "jwks.json")[0] == 404
    acme_kids = {k["kid"] for k in published_document(static_site, "acme", "jwks.json")[2]["keys"]}
    assert acme_kids == {SigningKey.objects.get(tenant=acme).kid}
    assert SigningKey.objects.get(tenant=globex).kid not in acme_kids
    assert publication_status_get(tenant=globex).live == ()


def test_an_s3_publish_refused_by_iam_is_an_error_that_names_it_and_keeps_what_was_live(
    db, s3_site, settings, monkeypatch, kms
):
    tenant = publishing_tenant(s3_site)
    first = SigningKey.objects.get(tenant=tenant)
    assert issuer_publish(tenant_id=tenant.pk, now=first.created_at).confirmed
    signing_key_rotate(tenant_id=tenant.pk, now=first.created_at, force=True)
    # jwtex's credentials may no longer write the bucket (moto enforcing IAM, as AWS does).
    for name, value in kms.user_without("s3:PutObject").items():
        monkeypatch.setenv(name, value)
    with kms.iam_enforced():
        result = issuer_publish(tenant_id=tenant.pk, now=first.created_at + timedelta(minutes=1))
    assert not result.confirmed and "S3 PutObject" in result.error and "AccessDenied" in result.error
    assert "testing" not in result.error and "AKIA" not in result.error  # never a credential
    assert result.live == (first.kid,)
    status = publication_status_get(tenant=tenant)
    assert status.alarm and status.active_live
    settings.JWTEX_PUBLISH_TARGET = "s3://no-such-bucket/prod"
    missing = issuer_publish(tenant_id=tenant.pk, now=first.created_at + timedelta(minutes=2))
    assert "NoSuchBucket" in missing.error and missing.live == (first.kid,)
