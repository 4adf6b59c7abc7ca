"""The console says what happened, not what will: the simulator's badge, candidate pages marked
as candidates, the audit log under one name with its reason, a candidate report that has seen
nothing saying so, and denials in sentences (docs/operators.md#the-admin-today)."""

from __future__ import annotations

import time

from django.urls import reverse


def _simulate(client, tenant, token):
    response = client.post(
        reverse("admin:exchange_rule_simulate"), {"tenant": tenant.pk, "mode": "token", "token": token}
    )
    assert response.status_code == 200
    html = response.content.decode()
    return html[html.index('id="simulation-result"') :]


def test_the_simulator_calls_a_token_verified_only_once_it_is(admin_client_for, tenant, issuer, allow_rule, upstream):
    client = admin_client_for(tenant, "operator")

    garbage = _simulate(client, tenant, "not-a-token")
    assert "verified token" not in garbage and "were checked" not in garbage
    assert "malformed token" in garbage

    expired = _simulate(client, tenant, upstream.mint(iat=1000, nbf=1000, exp=1300))
    assert "verified token" not in expired and "and passed" not in expired
    assert "token not verified" in expired and "(as the token states them, not verified)" in expired

    good = _simulate(client, tenant, upstream.mint())
    assert "verified token" in good and "and passed" in good and "allowed" in good


def test_typed_in_claims_are_an_unverified_simulation(admin_client_for, tenant, issuer, allow_rule):
    response = admin_client_for(tenant, "operator").post(
        reverse("admin:exchange_rule_simulate"),
        {
            "tenant": tenant.pk,
            "issuer": issuer.pk,
            "mode": "claims",
            "claims": f'{{"sub": "x", "exp": {int(time.time() + 60)}}}',
        },
    )
    html = response.content.decode()
    assert "unverified simulation" in html and "verified token" not in html


def _candidate_rule(tenant, issuer):
    from exchange.models import Rule

    rule = Rule.objects.create(
        tenant=tenant, position=1, name="octo-org candidate", when="true", effect="allow", shadow=True
    )
    rule.issuers.add(issuer)
    return rule


def _top(html: str) -> str:
    """The page down to the form's first field: what an operator sees before scrolling."""
    return html[: html.index("<fieldset")]


def test_a_candidate_rule_page_says_so_at_the_top(admin_client_for, tenant, issuer, allow_rule):
    candidate = _candidate_rule(tenant, issuer)
    client = admin_client_for(tenant, "operator")
    html = client.get(reverse("admin:exchange_rule_change", args=[candidate.pk])).content.decode()
    top = _top(html)
    assert "<title>octo-org candidate | Change a candidate rule" in top and "<h1>Change a candidate rule</h1>" in top
    assert 'id="candidate-banner"' in top and "not a\n  live rule" in top
    breadcrumbs = top[top.index('class="breadcrumbs"') :][:600]
    assert reverse("admin:exchange_rule_candidate", args=[tenant.pk]) in breadcrumbs
    assert "octo-org candidate (candidate)" in breadcrumbs
    assert "jwtex-candidate" in top[top.index("<body") :][:200]  # the distinct style

    live = _top(client.get(reverse("admin:exchange_rule_change", args=[allow_rule.pk])).content.decode())
    assert 'id="candidate-banner"' not in live and "<h1>Change rule</h1>" in live
    assert "jwtex-candidate" not in live[live.index("<body") :][:200]

    add = _top(client.get(reverse("admin:exchange_rule_add") + f"?tenant={tenant.pk}&shadow=1").content.decode())
    assert "<h1>Add a candidate rule</h1>" in add and 'id="candidate-banner"' in add

    listed = client.get(reverse("admin:exchange_rule_changelist") + f"?tenant__id__exact={tenant.pk}&shadow__exact=1")
    assert "<h1>Candidate rules (not live): select one to change</h1>" in listed.content.decode()

    auditor = _top(
        admin_client_for(tenant, "auditor")
        .get(reverse("admin:exchange_rule_change", args=[candidate.pk]))
        .content.decode()
    )
    assert "<h1>A candidate rule</h1>" in auditor and 'id="candidate-banner"' in auditor


def test_a_new_candidate_report_says_it_has_seen_nothing(admin_client_for, tenant, issuer, allow_rule):
    from django.utils import timezone

    from exchange.models import ExchangeRecord

    client = admin_client_for(tenant, "operator")
    # Traffic before the candidate existed: not something the candidate saw.
    ExchangeRecord.objects.create(
        tenant=tenant,
        created_at=timezone.now(),
        endpoint="raw",
        decision="allowed",
        status_code=200,
        rule_name=allow_rule.name,
    )
    client.post(reverse("admin:exchange_rule_candidate_action", args=[tenant.pk, "start"]))
    html = client.get(reverse("admin:exchange_rule_candidate", args=[tenant.pk])).content.decode()
    cell = html[html.index('id="shadow-none"') :][:400]
    assert "as the live rules did" not in html
    assert "no exchange has come since the candidate set started" in cell and "decided none" in cell
    assert "0 exchanges decided differently" in html

    ExchangeRecord.objects.create(
        tenant=tenant,
        created_at=timezone.now(),
        endpoint="raw",
        decision="allowed",
        status_code=200,
        rule_name=allow_rule.name,
    )
    html = client.get(reverse("admin:exchange_rule_candidate", args=[tenant.pk])).content.decode()
    cell = html[html.index('id="shadow-none"') :][:500]
    assert "No difference: exchanges have come since the candidate set started" in cell


def test_an_unterminated_string_in_a_condition_is_called_that(admin_client_for, tenant, issuer):
    from tests.exchange.admin.test_pages import rule_data

    response = admin_client_for(tenant, "operator").post(
        reverse("admin:exchange_rule_add"), rule_data(tenant, issuer, when="claims.ref == 'refs/heads/main")
    )
    [message] = response.context["adminform"].form.errors["when"]
    assert "token recognition" not in message and "''" not in message
    assert "line 1, column 15" in message and "Unterminated string" in message


def test_issuers_and_keys_are_named_by_their_names_not_slugs(admin_client_for, tenant, issuer, signing_key):
    client = admin_client_for(tenant, "owner")
    html = client.get(reverse("admin:exchange_issuer_change", args=[issuer.pk])).content.decode()
    breadcrumbs = html[html.index('class="breadcrumbs"') :][:600]
    assert "ci of Acme Corp" in breadcrumbs and "acme/ci" not in html
    response = client.post(reverse("admin:exchange_issuer_fetch_keys", args=[issuer.pk]), follow=True)
    assert any(str(m).startswith("Issuer ci of Acme Corp: ") for m in response.context["messages"])
    keys = client.get(reverse("admin:exchange_signingkey_change", args=[signing_key.pk])).content.decode()
    assert f"{signing_key.kid[:12]}… of Acme Corp" in keys and f"acme/{signing_key.kid[:12]}" not in keys


def test_a_replay_counts_exchanges_in_words(admin_client_for, tenant, issuer, allow_rule):
    tenant.keep_upstream_claims = True
    tenant.save()
    html = (
        admin_client_for(tenant, "operator")
        .get(reverse("admin:exchange_rule_candidate", args=[tenant.pk]) + "?replay=10")
        .content.decode()
    )
    assert "0 exchanges replayed" in html and "(s)" not in html


def test_the_overview_says_which_refusals_its_denied_count_leaves_out(admin_client_for, tenant, client):
    assert client.post(f"/t/{tenant.slug}/exchange", b"", content_type="application/jwt").status_code == 400
    html = (
        admin_client_for(tenant, "auditor")
        .get(reverse("admin:tenants_tenant_overview", args=[tenant.pk]))
        .content.decode()
    )
    assert '<div class="jwtex-big" id="denied-24h">0</div>' in html  # refused before its token: not a record
    card = html[html.index('id="denied-24h"') : html.index('id="denied-24h"') + 1200]
    note = " ".join(card[card.index('id="denied-not-counted"') :].split())
    for said in (
        "Not counted here",
        "empty, oversized or unreadable body",
        "content type or method",
        "rate-limited",
        "jwtex_requests_refused_total",
    ):
        assert said in note, said
