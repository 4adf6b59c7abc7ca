"""Operating the published issuer URL (docs/endpoints.md#published-issuer-url): the admin and
jwtex_apply refuse the same URLs, jwtex_publish [--check], the sweep and the task after a rotation,
/metrics and the tenant page, the AWS set-up, and IAM's key-count limit on rows."""

from __future__ import annotations

import html
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from exchange import tasks
from exchange.config.apply import config_apply
from exchange.config.schema import ConfigError
from exchange.keys import signing_key_revoke, signing_key_rotate
from exchange.models import KeyState, SigningKey
from exchange.publish.documents import tenant_jwks
from exchange.publish.service import issuer_publish
from exchange.services.overview import tenant_overview_get
from tests.exchange.admin.test_aws_setup_values import tenant_form
from tests.exchange.api.test_operations import samples
from tests.exchange.publish.test_publish import published_document, publishing_tenant
from tests.exchange.test_tasks import ran, runs_of  # noqa: F401 - fixture


def admin_verdict(client, tenant, url: str) -> str | None:
    response = client.post(
        reverse("admin:tenants_tenant_change", args=[tenant.pk]), tenant_form(tenant, published_issuer_url=url)
    )
    if response.status_code == 302:
        return None
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["published_issuer_url"], errors
    return errors["published_issuer_url"][0]


def apply_verdict(tenant, url: str) -> str | None:
    document = {"tenants": [{"slug": tenant.slug, "name": tenant.name, "published_issuer_url": url}]}
    try:
        config_apply(document=document, now=None, dry_run=True)
    except ConfigError as exc:
        assert [path for path, _ in exc.errors] == [f"tenants[{tenant.slug}].published_issuer_url"], exc.errors
        return exc.errors[0][1]
    return None


def test_admin_and_apply_refuse_the_same_published_urls_with_the_same_words(admin_client_for, static_site, settings):
    publishing_tenant(static_site)  # acme, already publishing to acme/
    globex = publishing_tenant(static_site, "globex")
    client = admin_client_for(globex, "owner")
    for url, refused in [
        ("https://issuers.example.com/globex", None),
        ("https://issuers.example.com", "needs a path"),
        ("ftp://issuers.example.com/globex", "https URL"),
        ("https://issuers.example.com/acme", "Tenant acme already publishes to acme/"),  # another host, same folder
        (f"{static_site.url}/acme", "Tenant acme already publishes to acme/"),
    ]:
        admin, applied = admin_verdict(client, globex, url), apply_verdict(globex, url)
        assert admin == applied, url
        assert (admin is None) if refused is None else (refused in admin), (url, admin)
    globex.refresh_from_db()
    # the one accepted; no refusal changed it
    assert globex.published_issuer_url == "https://issuers.example.com/globex"
    settings.JWTEX_PUBLISH_TARGET = ""
    admin = admin_verdict(client, globex, "https://issuers.example.com/globex-2")
    assert admin == apply_verdict(globex, "https://issuers.example.com/globex-2") and "JWTEX_PUBLISH_TARGET" in admin
    globex.refresh_from_db()
    assert globex.published_issuer_url == "https://issuers.example.com/globex"


def test_apply_refuses_two_tenants_of_one_file_publishing_to_one_folder(db, static_site):
    document = {
        "tenants": [
            {"slug": "a", "name": "A", "published_issuer_url": "https://one.example.com/shared"},
            {"slug": "b", "name": "B", "published_issuer_url": "https://two.example.com/shared"},
        ]
    }
    with pytest.raises(ConfigError) as excinfo:
        config_apply(document=document, now=None, dry_run=True)
    assert excinfo.value.errors == [
        ("tenants[b].published_issuer_url", "Tenant a of this file publishes to the same folder.")
    ]


def test_jwtex_publish_publishes_and_checks(db, static_site, capsys):
    acme = publishing_tenant(static_site)
    with pytest.raises(CommandError) as excinfo:  # nothing published yet: the check fails
        call_command("jwtex_publish", "--check")
    assert excinfo.value.returncode == 1
    assert "acme: NOT CONFIRMED" in capsys.readouterr().out
    call_command("jwtex_publish", "--tenant", "acme")
    kid = SigningKey.objects.get(tenant=acme).kid
    assert f"acme: published and read back at {static_site.url}/acme; live keys: {kid}" in capsys.readouterr().out
    call_command("jwtex_publish", "--check")
    assert "acme: matches what jwtex serves" in capsys.readouterr().out
    with pytest.raises(CommandError, match="unknown tenant"):
        call_command("jwtex_publish", "--tenant", "nobody")


def test_jwtex_publish_refuses_a_tenant_without_a_published_url(db, static_site, tenant):
    with pytest.raises(CommandError, match="no published issuer URL: acme"):
        call_command("jwtex_publish", "--tenant", "acme")


def test_a_rotation_publishes_and_the_sweep_publishes_what_is_due(db, static_site, ran):
    acme, plain = publishing_tenant(static_site), publishing_tenant(static_site, "globex")
    plain.published_issuer_url = ""
    plain.save()
    assert tasks.sweep_issuer_publications.delay().get() == 1  # never published
    assert runs_of(ran, "exchange.publish_tenant_issuer") == [(acme.pk,)]
    assert tasks.sweep_issuer_publications.delay().get() == 0  # confirmed: not due for 15 minutes
    first = SigningKey.objects.get(tenant=acme)
    ran.clear()
    tasks.rotate_tenant_keys.delay(acme.pk, force=True)  # a new next key: published at once
    (upcoming,) = SigningKey.objects.filter(tenant=acme, state=KeyState.NEXT).values_list("kid", flat=True)
    assert runs_of(ran, "exchange.publish_tenant_issuer") == [(acme.pk,)]
    kids = {k["kid"] for k in published_document(static_site, "acme", "jwks.json")[2]["keys"]}
    assert kids == {first.kid, upcoming}
    # A change made where no task follows (the admin's revoke, a command) is due at the next sweep.
    assert tasks.sweep_issuer_publications.delay().get() == 0
    signing_key_revoke(tenant=acme, kid=upcoming, now=timezone.now())
    assert tasks.sweep_issuer_publications.delay().get() == 1
    assert {k["kid"] for k in published_document(static_site, "acme", "jwks.json")[2]["keys"]} == {first.kid}


def test_metrics_and_the_tenant_page_show_what_is_live_and_the_alarm(db, static_site, client, admin_client_for):
    acme = publishing_tenant(static_site)
    now = timezone.now()
    issuer_publish(tenant_id=acme.pk, now=now)
    found = samples(client)
    assert found[("jwtex_issuer_publish_last_success_timestamp_seconds", (("tenant", "acme"),))] == now.timestamp()
    assert found[("jwtex_issuer_published_keys", (("tenant", "acme"),))] == 1
    assert found[("jwtex_issuer_publish_alarm", (("tenant", "acme"),))] == 0
    page = html.unescape(
        admin_client_for(acme, "auditor").get(reverse("admin:tenants_tenant_change", args=[acme.pk])).content.decode()
    )
    assert "Live there: " + SigningKey.objects.get(tenant=acme).kid in page and "ALARM" not in page
    # A next key jwtex serves but could not publish: the alarm, on both.
    signing_key_rotate(tenant_id=acme.pk, now=now, force=True)
    found = samples(client)
    assert found[("jwtex_issuer_publish_alarm", (("tenant", "acme"),))] == 1
    page = html.unescape(
        admin_client_for(acme, "auditor").get(reverse("admin:tenants_tenant_change", args=[acme.pk])).content.decode()
    )
    assert "ALARM: the published key set differs from the one jwtex serves" in page


def test_the_aws_set_up_trusts_the_published_url(db, static_site):
    acme = publishing_tenant(static_site)
    overview = tenant_overview_get(tenant=acme, now=timezone.now())
    assert f"{static_site.url}/acme" in overview.aws.cloudformation
    assert "127.0.0.1:8000/t/acme" not in overview.aws.cloudformation
    assert "http://127.0.0.1:8000/t/acme" in overview.ci.github_actions  # CI jobs exchange at jwtex itself


def test_the_served_and_published_jwks_never_list_more_than_100_keys_of_a_type(db, static_site, client):
    acme = publishing_tenant(static_site)
    active = SigningKey.objects.get(tenant=acme)
    template = {k: v for k, v in active.public_jwk.items() if k != "kid"}
    for i in range(120):  # far more retiring keys than the lifecycle ever leaves
        SigningKey.objects.create(
            tenant=acme,
            kid=f"old-{i:03}",
            algorithm="ES256",
            state=KeyState.RETIRING,
            public_jwk={**template, "kid": f"old-{i:03}"},
            private_key_encrypted=b"",
            created_at=active.created_at - timedelta(days=200 - i),
        )
    assert issuer_publish(tenant_id=acme.pk, now=timezone.now()).confirmed
    served = client.get("/t/acme/.well-known/jwks.json").json()["keys"]
    published = published_document(static_site, "acme", "jwks.json")[2]["keys"]
    assert served == published and len(published) == 100
    kids = [k["kid"] for k in published]
    assert kids[-1] == active.kid and kids[:-1] == [f"old-{i:03}" for i in range(21, 120)]  # the oldest dropped
    assert tenant_jwks(tenant=acme)["keys"] == published


def test_the_published_url_goes_through_apply_and_export(db, static_site):
    from exchange.config.export import config_export

    document = {"tenants": [{"slug": "acme", "name": "Acme", "published_issuer_url": f"{static_site.url}/acme"}]}
    config_apply(document=document, now=timezone.now())
    exported = config_export()
    (acme,) = exported["tenants"]
    assert acme["published_issuer_url"] == f"{static_site.url}/acme"
