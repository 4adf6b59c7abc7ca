"""JWTEX_ALLOWED_UPSTREAM_ISSUERS at exchange time and in ``manage.py check``
(docs/operators.md#allowed-upstream-issuers): an issuer saved before the list changed is refused
(403, audited, named) before any key is looked up; the check lists every tenant's refused issuers."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from exchange.models import ExchangeRecord, Issuer
from exchange.services.simulator import claims_simulate
from tests.conftest import UPSTREAM_ISSUER, runtime_clear

pytestmark = pytest.mark.django_db


def exchange(client, upstream):
    return client.post("/t/acme/exchange?issuerId=ci", upstream.mint(), content_type="application/jwt")


def test_an_issuer_outside_the_list_is_refused_at_exchange_and_audited(
    client, settings, upstream, issuer, allow_rule, monkeypatch
):
    assert exchange(client, upstream).status_code == 200
    settings.JWTEX_ALLOWED_UPSTREAM_ISSUERS = "https://token.actions.githubusercontent.com https://gitlab.example.com/*"
    runtime_clear()

    def no_keys(**kwargs):
        raise AssertionError("an issuer outside the list is refused before any key lookup")

    monkeypatch.setattr("exchange.services.exchange.issuer_keys_get", no_keys)
    response = exchange(client, upstream)
    assert response.status_code == 403
    assert response.json() == {
        "error": "access_denied",
        "error_description": "Issuer 'ci' is not one this service allows.",
    }
    record = ExchangeRecord.objects.order_by("-id").first()
    assert record.decision == "denied" and record.error_code == "access_denied"
    assert "outside JWTEX_ALLOWED_UPSTREAM_ISSUERS" in record.reason and UPSTREAM_ISSUER in record.reason
    assert record.issued_jti == ""

    settings.JWTEX_ALLOWED_UPSTREAM_ISSUERS = f"{UPSTREAM_ISSUER}/*"  # the pattern covers the host's own issuer
    monkeypatch.undo()
    assert exchange(client, upstream).status_code == 200


def test_the_simulator_says_a_real_exchange_would_be_refused(settings, tenant, issuer, allow_rule):
    settings.JWTEX_ALLOWED_UPSTREAM_ISSUERS = "https://gitlab.example.com/*"
    result = claims_simulate(tenant=tenant, issuer=issuer, claims={"sub": "s"})
    assert any("JWTEX_ALLOWED_UPSTREAM_ISSUERS" in note for note in result.notes)


def check_output(*args) -> str:
    out = io.StringIO()
    call_command("check", *args, stdout=out, stderr=out)
    return out.getvalue()


def test_manage_py_check_lists_the_issuers_the_list_would_refuse(settings, tenant, other_tenant, issuer):
    Issuer.objects.create(
        tenant=other_tenant, issuer_id="gl", issuer="https://gitlab.example.com/group", audiences=["jwtex"]
    )
    Issuer.objects.create(
        tenant=other_tenant, issuer_id="gh", issuer="https://token.actions.githubusercontent.com", audiences=["jwtex"]
    )
    assert "jwtex.W010" not in check_output()  # unset: any issuer
    settings.JWTEX_ALLOWED_UPSTREAM_ISSUERS = "https://gitlab.example.com/*"
    output = check_output()
    assert "(jwtex.W010) Tenant 'acme' trusts 1 upstream issuer(s) outside JWTEX_ALLOWED_UPSTREAM_ISSUERS" in output
    assert f"ci ({UPSTREAM_ISSUER})" in output
    assert f"Tenant '{other_tenant.slug}' trusts 1 upstream issuer(s)" in output
    assert "gh (https://token.actions.githubusercontent.com)" in output and "gl (" not in output


def test_a_malformed_entry_is_an_error_that_names_it(settings):
    settings.JWTEX_ALLOWED_UPSTREAM_ISSUERS = "https://gitlab.example.com*"
    with pytest.raises(Exception) as info:
        check_output()
    assert "jwtex.E010" in str(info.value) and "https://gitlab.example.com*" in str(info.value)


def test_the_background_refresh_never_contacts_an_issuer_outside_the_list(settings, tenant, monkeypatch):
    from django.utils import timezone

    from exchange.upstream import issuer_keys as jwks_module

    issuer = Issuer.objects.create(
        tenant=tenant, issuer_id="gh", issuer="https://token.actions.githubusercontent.com", audiences=["jwtex"]
    )
    contacted = []
    monkeypatch.setattr(
        jwks_module.refresher, "jwks_refresh", lambda current, **kwargs: contacted.append(current.issuer)
    )
    settings.JWTEX_ALLOWED_UPSTREAM_ISSUERS = "https://gitlab.example.com/*"
    assert jwks_module.issuer_jwks_refresh(issuer=issuer, now=timezone.now(), force=True) is False
    assert contacted == []
    settings.JWTEX_ALLOWED_UPSTREAM_ISSUERS = "https://token.actions.githubusercontent.com"
    jwks_module.issuer_jwks_refresh(issuer=issuer, now=timezone.now(), force=True)
    assert contacted == ["https://token.actions.githubusercontent.com"]
