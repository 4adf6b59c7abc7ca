"""Signing keys held in AWS KMS, end to end against moto's server on loopback (real boto3 calls):
a KMS tenant's keys, tokens signed through KMS and verified from the served JWKS by PyJWT and by
jose (npm), KMS unavailable in every way → 503 and nothing issued, config as code and the admin."""

from __future__ import annotations

import base64
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from typing import ClassVar
from urllib.parse import urlencode

import jwt
import pytest
import yaml
from botocore.retries.standard import ExponentialBackoff
from cryptography.hazmat.primitives.serialization import load_der_public_key
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from exchange.core.jwk import jwk_thumbprint
from exchange.keys import SigningKeyUnavailable
from exchange.models import ExchangeRecord, Issuer, KeyState, Rule, SigningKey
from tenants.models import Tenant
from tests.conftest import make_tenant
from tests.kms import ACCOUNT, REGION, kms_unreachable

ISSUER_URL = "http://127.0.0.1:8000/t/acme"  # JWTEX_PUBLIC_URL of the tests


def kms_tenant(slug: str = "acme", *, algorithm: str = "ES256", **fields):
    return make_tenant(slug, key_backend="aws-kms", kms_region=REGION, signing_algorithm=algorithm, **fields)


def allow_everything(tenant, upstream, **issuer_fields) -> Issuer:
    issuer = Issuer.objects.create(
        tenant=tenant,
        issuer_id="ci",
        issuer=upstream.issuer,
        audiences=[upstream.audience],
        static_jwks=upstream.jwks,
        **issuer_fields,
    )
    rule = Rule.objects.create(
        tenant=tenant,
        name="all",
        when="true",
        effect="allow",
        session_tags={"repository": "claims.repository", "actor": "claims.actor"},
    )
    rule.issuers.add(issuer)
    return issuer


def exchange(client, upstream, slug: str = "acme", **claims):
    return client.post(f"/t/{slug}/exchange", data=upstream.mint(**claims), content_type="application/jwt")


def served_jwks(client, slug: str = "acme") -> dict:
    return client.get(f"/t/{slug}/.well-known/jwks.json").json()


def verify_with_pyjwt(token: str, jwks: dict) -> dict:
    """As a relying party does: the key by kid from the served JWKS, never from the token."""
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    return jwt.decode(token, key.key, algorithms=["ES256", "RS256"], audience="sts.amazonaws.com", issuer=ISSUER_URL)


# --- keys --------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm, key_spec", [("ES256", "ECC_NIST_P256"), ("RS256", "RSA_2048")])
def test_a_kms_tenant_is_born_with_a_tagged_kms_key_and_publishes_its_public_key(db, kms, client, algorithm, key_spec):
    tenant = kms_tenant(algorithm=algorithm)
    key = SigningKey.objects.get(tenant=tenant)
    assert (key.state, key.backend, key.algorithm) == (KeyState.ACTIVE, "aws-kms", algorithm)
    assert key.kms_key_id.startswith(f"arn:aws:kms:{REGION}:{ACCOUNT}:key/")
    assert bytes(key.private_key_encrypted) == b""  # the private key never left KMS
    assert key.kid == jwk_thumbprint(key.public_jwk) == key.public_jwk["kid"]  # RFC 7638, like a local key
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key.public_jwk)
    aws = kms.client()
    metadata = aws.describe_key(KeyId=key.kms_key_id)["KeyMetadata"]
    assert (metadata["KeySpec"], metadata["KeyUsage"], metadata["KeyState"]) == (key_spec, "SIGN_VERIFY", "Enabled")
    tags = {t["TagKey"]: t["TagValue"] for t in aws.list_resource_tags(KeyId=key.kms_key_id)["Tags"]}
    assert tags == {"jwtex:tenant": "acme", "managed-by": "jwtex"}
    spki = aws.get_public_key(KeyId=key.kms_key_id)["PublicKey"]  # the published JWK is KMS's public key
    assert load_der_public_key(spki).public_numbers() == jwt.PyJWK(key.public_jwk).key.public_numbers()
    assert served_jwks(client)["keys"] == [key.public_jwk]


def test_a_kms_tenant_needs_a_region_and_a_valid_account(db):
    with pytest.raises(ValidationError) as excinfo:
        make_tenant("acme", key_backend="aws-kms")
    assert "kms_region" in excinfo.value.message_dict
    with pytest.raises(ValidationError) as excinfo:
        make_tenant("acme", key_backend="aws-kms", kms_region=REGION, kms_account_id="1234-5678-9012")
    assert "kms_account_id" in excinfo.value.message_dict
    assert not Tenant.objects.exists()


def test_a_key_made_in_another_account_is_refused_and_scheduled_for_deletion(db, kms):
    with pytest.raises(SigningKeyUnavailable, match=f"in account {ACCOUNT}, not the tenant's 111122223333"):
        kms_tenant(kms_account_id="111122223333")
    assert not Tenant.objects.exists()
    (made,) = kms.client().list_keys()["Keys"]
    assert kms.client().describe_key(KeyId=made["KeyArn"])["KeyMetadata"]["KeyState"] == "PendingDeletion"
    assert SigningKey.objects.filter(tenant=kms_tenant(kms_account_id=ACCOUNT)).count() == 1  # the right one works


# --- signing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_a_token_signed_through_kms_verifies_from_the_served_jwks_with_pyjwt_and_jose(
    db, kms, client, upstream, jose, algorithm
):
    tenant = kms_tenant(algorithm=algorithm)
    allow_everything(tenant, upstream)
    response = exchange(client, upstream)
    assert response.status_code == 200, response.content
    token = response.content.decode()
    jwks = served_jwks(client)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": algorithm, "kid": SigningKey.objects.get(tenant=tenant).kid, "typ": "JWT"}
    signature = base64.urlsafe_b64decode(token.rsplit(".", 1)[1] + "==")
    assert len(signature) == (64 if algorithm == "ES256" else 256)  # JWS r||s, not KMS's DER
    claims = verify_with_pyjwt(token, jwks)
    assert claims["https://aws.amazon.com/tags"]["principal_tags"] == {
        "repository": ["octo-org/octo-repo"],
        "actor": ["octocat"],
    }
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    results = jose.verify(
        jwks=jwks,
        tokens=[(token, claims["iat"]), (tampered, claims["iat"])],
        issuer=ISSUER_URL,
        audience="sts.amazonaws.com",
    )
    assert results[0]["ok"] and results[0]["payload"] == claims and results[0]["header"] == header
    assert not results[1]["ok"] and results[1]["error"] == "ERR_JWS_SIGNATURE_VERIFICATION_FAILED"
    record = ExchangeRecord.objects.get(tenant=tenant)
    assert (record.decision, record.issued_kid) == ("allowed", header["kid"])


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_a_token_whose_signing_input_exceeds_kms_raw_limit_is_signed_as_a_digest(db, kms, client, upstream, algorithm):
    # KMS Sign takes at most 4,096 bytes as RAW (moto here refuses more, as AWS does): such a
    # token goes as its SHA-256 digest, MessageType DIGEST, and is the same signature.
    tenant = kms_tenant(algorithm=algorithm)
    allow_everything(tenant, upstream)
    Rule.objects.filter(tenant=tenant).update(session_tags={f"t{i}": "claims.workflow" for i in range(30)})
    response = exchange(client, upstream, workflow="w" * 200)
    assert response.status_code == 200, response.content
    token = response.content.decode()
    assert len(token.rsplit(".", 1)[0]) > 4096
    assert len(verify_with_pyjwt(token, served_jwks(client))["https://aws.amazon.com/tags"]["principal_tags"]) == 30


# --- KMS unavailable: 503, never a 500, and nothing issued --------------------------------------


def assert_unavailable(response, tenant, *reasons: str) -> None:
    assert response.status_code == 503, response.content
    body = response.json()
    assert body["error"] == "temporarily_unavailable"
    assert "KMS" not in body["error_description"] and "arn:" not in response.content.decode()
    record = ExchangeRecord.objects.filter(tenant=tenant).order_by("-created_at", "-id").first()
    assert (record.decision, record.status_code, record.error_code) == ("denied", 503, "temporarily_unavailable")
    assert record.issued_jti == "" and record.issued_kid == "" and any(reason in record.reason for reason in reasons)


@pytest.fixture
def kms_exchange(db, kms, upstream):
    tenant = kms_tenant()
    allow_everything(tenant, upstream, replay_protection=True)
    return tenant


def test_kms_unreachable_answers_503_on_every_endpoint_and_uses_up_no_one_time_token(
    kms_exchange, client, upstream, monkeypatch, kms
):
    kms_unreachable(monkeypatch)  # connection refused
    subject = upstream.mint()
    assert_unavailable(
        client.post("/t/acme/exchange", data=subject, content_type="application/jwt"),
        kms_exchange,
        "AWS KMS Sign: EndpointConnectionError",
    )
    assert_unavailable(
        client.post("/api/v1/t/acme/exchange", {"subject_token": upstream.mint()}, content_type="application/json"),
        kms_exchange,
        "EndpointConnectionError",
    )
    response = client.post(
        "/t/acme/token",
        urlencode(
            {
                "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "subject_token": upstream.mint(),
                "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            }
        ),
        content_type="application/x-www-form-urlencoded",
    )
    assert_unavailable(response, kms_exchange, "EndpointConnectionError")
    # KMS is back: the very same one-time upstream token is still good (only a granted token uses it up).
    kms_unreachable(monkeypatch, kms.endpoint)
    response = client.post("/t/acme/exchange", data=subject, content_type="application/jwt")
    assert response.status_code == 200 and verify_with_pyjwt(response.content.decode(), served_jwks(client))


def test_access_denied_by_iam_answers_503(kms_exchange, client, upstream, monkeypatch, kms):
    for name, value in kms.user_without("kms:Sign").items():
        monkeypatch.setenv(name, value)
    kms_unreachable(monkeypatch, kms.endpoint)  # a fresh client with these credentials
    with kms.iam_enforced():
        # moto writes its IAM refusal as XML, which KMS's JSON protocol reads as "403"; AWS itself
        # says AccessDeniedException (test_every_kms_refusal_answers_503 meets that one).
        assert_unavailable(
            exchange(client, upstream), kms_exchange, "AWS KMS Sign: AccessDeniedException", "AWS KMS Sign: 403"
        )
        assert exchange(client, upstream).status_code == 503  # and again: nothing was cached as good


@pytest.mark.parametrize(
    "action, reason",
    [
        ("disable_key", "DisabledException"),
        ("schedule_key_deletion", "KMSInvalidStateException"),
    ],
)
def test_a_key_disabled_or_deleted_in_aws_answers_503(kms_exchange, client, upstream, kms, action, reason):
    key = SigningKey.objects.get(tenant=kms_exchange)
    assert exchange(client, upstream).status_code == 200
    getattr(kms.client(), action)(KeyId=key.kms_key_id)
    assert_unavailable(exchange(client, upstream), kms_exchange, reason)
    if action == "disable_key":  # enabled again: signing resumes without a restart
        kms.client().enable_key(KeyId=key.kms_key_id)
        assert exchange(client, upstream).status_code == 200


class _FailingKms(BaseHTTPRequestHandler):
    """Answers every KMS call with one error, as AWS's JSON protocol writes them."""

    error = ("ThrottlingException", 400)
    calls: ClassVar[list[str]] = []

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).calls.append(self.headers.get("X-Amz-Target", ""))
        body = json.dumps({"__type": self.error[0], "message": "no"}).encode()
        self.send_response(self.error[1])
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize(
    "error, attempts",
    [
        (("ThrottlingException", 400), 2),  # retried once (bounded), then 503
        (("AccessDeniedException", 400), 1),
        (("KMSInternalException", 500), 2),
        (("KeyUnavailableException", 500), 2),
    ],
)
def test_every_kms_refusal_answers_503(kms_exchange, client, upstream, monkeypatch, error, attempts):
    # The attempts are counted, not waited for: botocore's jittered pause before its retry (up
    # to 1 s after a throttling) is not jwtex's to test.
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0)
    handler = type("Handler", (_FailingKms,), {"error": error, "calls": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # shutdown() waits for serve_forever's next look at it: every 0.5 s by default.
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    try:
        kms_unreachable(monkeypatch, f"http://127.0.0.1:{server.server_address[1]}")
        assert_unavailable(exchange(client, upstream), kms_exchange, f"AWS KMS Sign: {error[0]}")
    finally:
        server.shutdown()
    assert handler.calls == ["TrentService.Sign"] * attempts


def test_without_credentials_kms_answers_503(kms_exchange, client, upstream, monkeypatch, kms):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    kms_unreachable(monkeypatch, kms.endpoint)
    assert_unavailable(exchange(client, upstream), kms_exchange, "AWS KMS Sign: NoCredentialsError")


def test_a_kms_tenant_that_kms_cannot_make_a_key_for_is_not_created(db, kms, monkeypatch):
    kms_unreachable(monkeypatch)
    with pytest.raises(SigningKeyUnavailable, match="CreateKey in eu-west-1 failed: EndpointConnectionError"):
        kms_tenant()
    assert not Tenant.objects.exists() and not SigningKey.objects.exists()


# --- configuration as code ---------------------------------------------------------------------

DOCUMENT = {
    "tenants": [
        {
            "slug": "acme",
            "name": "Acme",
            "key_backend": "aws-kms",
            "kms_region": REGION,
            "kms_account_id": ACCOUNT,
            "issuers": [],
            "rules": [],
        }
    ]
}


def apply(document, **kwargs) -> str:
    out, err = StringIO(), StringIO()
    call_command("jwtex_apply", "-", stdin=StringIO(yaml.safe_dump(document)), stdout=out, stderr=err, **kwargs)
    return out.getvalue() + err.getvalue()


def export() -> str:
    out = StringIO()
    call_command("jwtex_export", stdout=out)
    return out.getvalue()


def test_apply_sets_the_backend_and_export_shows_it_without_key_material(db, kms):
    apply(DOCUMENT)
    key = SigningKey.objects.get(tenant__slug="acme")
    assert key.backend == "aws-kms" and key.kms_key_id
    text = export()
    exported = yaml.safe_load(text)["tenants"][0]
    assert (exported["key_backend"], exported["kms_region"], exported["kms_account_id"]) == ("aws-kms", REGION, ACCOUNT)
    # No key, ARN, kid or public key: keys are state, never configuration
    # (docs/configuration-file.md#what-is-never-in-a-file).
    for absent in ("arn:", key.kms_key_id.rsplit("/", 1)[1], key.kid, key.public_jwk["x"], "kms_key_id"):
        assert absent not in text
    assert "no changes" in apply(yaml.safe_load(text))  # export → apply → export is identical
    assert export() == text


def test_apply_refuses_kms_without_region_and_names_the_place(db, kms):
    document = {"tenants": [{**DOCUMENT["tenants"][0], "kms_region": ""}]}
    with pytest.raises(CommandError):
        apply(document)
    document = {"tenants": [{**DOCUMENT["tenants"][0], "key_backend": "hsm"}]}
    err = StringIO()
    with pytest.raises(CommandError):
        call_command("jwtex_apply", "-", stdin=StringIO(yaml.safe_dump(document)), stdout=StringIO(), stderr=err)
    assert "tenants[acme].key_backend" in err.getvalue()
    assert not Tenant.objects.exists()


def test_apply_when_kms_cannot_make_the_key_changes_nothing(db, kms, monkeypatch):
    kms_unreachable(monkeypatch)
    err = StringIO()
    with pytest.raises(CommandError, match="nothing was changed"):
        call_command("jwtex_apply", "-", stdin=StringIO(yaml.safe_dump(DOCUMENT)), stdout=StringIO(), stderr=err)
    assert "tenants[acme]: The tenant's AWS KMS key could not be made" in err.getvalue()
    assert not Tenant.objects.exists()


def test_switching_a_local_tenant_to_kms_changes_the_next_key_only(db, kms, client, upstream):
    from exchange.keys import signing_key_rotate

    tenant = make_tenant("acme")
    allow_everything(tenant, upstream)
    local = SigningKey.objects.get(tenant=tenant)
    apply(
        {
            "tenants": [
                {
                    **DOCUMENT["tenants"][0],
                    "issuers": [
                        {"id": "ci", "issuer": upstream.issuer, "audiences": [upstream.audience], "jwks": upstream.jwks}
                    ],
                    "rules": [{"name": "all", "issuers": ["ci"], "when": "true", "effect": "allow"}],
                }
            ]
        }
    )
    assert jwt.get_unverified_header(exchange(client, upstream).content.decode())["kid"] == local.kid  # still local
    upcoming = signing_key_rotate(tenant_id=tenant.pk, now=local.created_at, force=True).created[0]
    assert SigningKey.objects.get(kid=upcoming).backend == "aws-kms"
    result = signing_key_rotate(tenant_id=tenant.pk, now=local.created_at + timedelta(hours=1))
    assert result.activated == upcoming
    token = exchange(client, upstream).content.decode()
    assert jwt.get_unverified_header(token)["kid"] == upcoming
    assert verify_with_pyjwt(token, served_jwks(client))  # both keys published, the KMS one signs


# --- the admin ---------------------------------------------------------------------------------

TENANT_POST = {
    "slug": "initech",
    "name": "Initech",
    "enabled": "on",
    "default_audience": "sts.amazonaws.com",
    "max_token_lifetime": 3600,
    "signing_algorithm": "ES256",
    "rate_limit_per_minute": 6000,
    "key_rotation_interval": 2592000,
    "key_prepublish_window": 86400,
    "audit_retention_days": 90,
    "key_backend": "aws-kms",
    "kms_region": REGION,
}


def test_the_admin_tenant_form_offers_the_backend_and_creates_a_kms_tenant(db, kms, admin_client_for):
    client = admin_client_for(role="superuser")
    page = client.get(reverse("admin:tenants_tenant_add")).content.decode()
    assert 'name="key_backend"' in page and 'value="aws-kms"' in page and 'name="kms_region"' in page
    assert "never leaves it" in page
    response = client.post(reverse("admin:tenants_tenant_add"), TENANT_POST)
    assert response.status_code == 302, response.context["adminform"].form.errors
    key = SigningKey.objects.get(tenant__slug="initech")
    assert key.backend == "aws-kms" and key.kms_key_id
    page = client.get(reverse("admin:exchange_signingkey_change", args=[key.pk])).content.decode()
    assert key.kms_key_id in page and "held in AWS KMS" in page


def test_the_admin_says_why_when_kms_cannot_make_the_first_key(db, kms, admin_client_for, monkeypatch):
    client = admin_client_for(role="superuser")
    kms_unreachable(monkeypatch)
    response = client.post(reverse("admin:tenants_tenant_add"), TENANT_POST, follow=True)
    assert response.status_code == 200
    assert "The tenant was not created: The tenant&#x27;s AWS KMS key could not be made" in response.content.decode()
    assert not Tenant.objects.filter(slug="initech").exists()


def test_the_admin_needs_a_region_for_kms(db, admin_client_for):
    client = admin_client_for(role="superuser")
    response = client.post(reverse("admin:tenants_tenant_add"), {**TENANT_POST, "kms_region": ""})
    assert response.status_code == 200
    assert "kms_region" in response.context["adminform"].form.errors
    assert not Tenant.objects.filter(slug="initech").exists()


def test_rotate_now_when_kms_cannot_make_the_key_says_so(db, kms, admin_client_for, monkeypatch):
    tenant = kms_tenant()
    client = admin_client_for(tenant, "owner")
    kms_unreachable(monkeypatch)
    response = client.post(reverse("admin:exchange_signingkey_rotate", args=[tenant.pk]), follow=True)
    assert response.status_code == 200
    assert "Nothing changed: The tenant&#x27;s AWS KMS key could not be made" in response.content.decode()
    assert SigningKey.objects.filter(tenant=tenant).count() == 1


def test_another_tenants_kms_key_is_not_shown(db, kms, admin_client_for):
    kms_tenant("acme")
    other = kms_tenant("globex")
    client = admin_client_for(Tenant.objects.get(slug="acme"), "owner")
    theirs = SigningKey.objects.get(tenant=other)
    assert client.get(reverse("admin:exchange_signingkey_change", args=[theirs.pk])).status_code in (302, 403, 404)
    assert theirs.kms_key_id not in client.get(reverse("admin:exchange_signingkey_changelist")).content.decode()


def test_a_kms_tenants_mapper_bearer_is_signed_through_kms_and_verifies_from_its_jwks(db, kms, client):
    # The mapper's bearer (docs/mapper.md#the-request) is signed by the tenant's active key like its tokens: for a
    # KMS tenant one Sign call, never a private key jwtex does not have.
    from exchange.runtime import tenant_runtime_get
    from exchange.services.mapper import mapper_bearer

    kms_tenant()
    bearer = mapper_bearer(
        tenant_runtime_get(slug="acme"), url="https://mapper.example/map", issuer_id="ci", now=1_900_000_000
    )
    key = jwt.PyJWKSet.from_dict(served_jwks(client))[jwt.get_unverified_header(bearer)["kid"]]
    claims = jwt.decode(
        bearer,
        key.key,
        algorithms=["ES256"],
        audience="https://mapper.example/map",
        issuer=ISSUER_URL,
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert claims["sub"] == "ci" and claims["exp"] - claims["iat"] == 60
