"""The candidate (shadow) rule set in a real browser (docs/operations.md#shadow-rules): an operator starts a candidate
from the live rules, tightens it, watches its report over real exchanges, and promotes it."""

from __future__ import annotations

import pytest

from tests.exchange.admin.test_browser import exchange, log_in_as_member, page, shot  # noqa: F401 - fixtures

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_operator_tries_a_candidate_in_shadow_then_promotes_it(
    page,
    live_server,
    tenant,
    issuer,
    allow_rule,
    upstream,
    django_user_model,
):
    from exchange.models import ExchangeRecord, Rule

    base = live_server.url
    log_in_as_member(page, live_server, django_user_model, tenant, "grace")

    page.goto(f"{base}/admin/exchange/rule/candidate/{tenant.pk}/")
    page.wait_for_selector("#no-candidate")
    page.click("#candidate-start")
    page.wait_for_selector("#candidate-rules")
    candidate = Rule.objects.get(tenant=tenant, shadow=True)
    page.goto(f"{base}/admin/exchange/rule/{candidate.pk}/change/")
    page.wait_for_selector("#candidate-note")
    # Said at the top, where the operator looks first: the title, the breadcrumb and a banner.
    assert page.inner_text("h1") == "Change a candidate rule" and "Candidate rules" in page.inner_text(".breadcrumbs")
    assert page.locator("#candidate-banner").bounding_box()["y"] < 250
    shot(page, "39-candidate-rule")
    page.fill(
        "#id_when",
        "claims.repository_owner == 'octo-org' && claims.ref == 'refs/heads/main' && claims.actor != 'octocat'",
    )
    page.click("input[name=_save]")
    page.wait_for_selector("#result_list")

    assert exchange(live_server, tenant, issuer.issuer_id, upstream.mint()) == 200  # octocat: live allows
    assert exchange(live_server, tenant, issuer.issuer_id, upstream.mint(actor="hubot")) == 200
    assert ExchangeRecord.objects.filter(shadow__isnull=False).count() == 1  # only octocat's would change

    page.goto(f"{base}/admin/exchange/rule/candidate/{tenant.pk}/")
    page.wait_for_selector("#shadow-report")
    assert "would now deny: 1" in page.inner_text("#shadow-report")
    page.click("#kind-deny")
    page.wait_for_selector("#shadow-records")
    assert page.locator("#shadow-records tbody tr").count() == 1
    assert "octo-org main" in page.inner_text("#shadow-records")
    shot(page, "40-shadow-report")

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#candidate-promote")
    page.wait_for_selector(".messagelist")
    assert "Promoted" in page.inner_text(".messagelist")
    shot(page, "41-shadow-promoted")
    assert exchange(live_server, tenant, issuer.issuer_id, upstream.mint()) == 403  # the candidate decides now
    assert exchange(live_server, tenant, issuer.issuer_id, upstream.mint(actor="hubot")) == 200
