"""Revisions in a real browser (docs/operations.md#revisions): an operator's rule edit locks pipelines out, the
revision and its diff show what changed, and a restore (after its confirmation page) brings the
old decision back, seen through a real exchange."""

from __future__ import annotations

import pytest

from tests.exchange.admin.test_browser import exchange, log_in_as_member, page, shot  # noqa: F401 - fixtures

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

BROKEN = "claims.repository_owner == 'octo-org' && claims.ref == 'refs/heads/mian'"  # the typo of the story


def test_an_operator_sees_the_revision_of_a_bad_edit_and_restores_the_one_before(
    page,
    live_server,
    tenant,
    issuer,
    allow_rule,
    upstream,
    django_user_model,
):
    from exchange.models import Revision

    assert exchange(live_server, tenant, issuer.issuer_id, upstream.mint()) == 200
    before = Revision.objects.filter(tenant=tenant).order_by("-number").first()
    base = live_server.url
    log_in_as_member(page, live_server, django_user_model, tenant, "grace")

    page.goto(f"{base}/admin/exchange/rule/{allow_rule.pk}/change/")
    page.fill("#id_when", BROKEN)
    page.click("input[name=_save]")
    page.wait_for_selector("#result_list")
    assert exchange(live_server, tenant, issuer.issuer_id, upstream.mint()) == 403  # main no longer matches

    page.goto(f"{base}/admin/tenants/tenant/{tenant.pk}/overview/")
    page.click("#open-revisions")
    page.wait_for_selector("#revisions")
    latest = page.locator("tr.jwtex-revision").first
    assert latest.get_attribute("data-number") == str(before.number + 1)
    assert "grace" in latest.inner_text()
    latest.locator("a").first.click()
    page.wait_for_selector("#revision-diff")
    diff = page.inner_text("#revision-diff")
    assert "refs/heads/mian" in page.inner_text("#revision-diff .jwtex-diff-add")
    assert "refs/heads/main" in page.inner_text("#revision-diff .jwtex-diff-remove")
    assert "octo-org main" in page.inner_text("#revision-summary"), diff
    shot(page, "42-revision-diff")

    page.goto(f"{base}/admin/tenants/tenant/{tenant.pk}/revisions/{before.number}/")
    page.click("#restore-revision")
    page.wait_for_selector("#restore-diff")
    assert "refs/heads/main" in page.inner_text("#restore-diff .jwtex-diff-add")
    shot(page, "43-revision-restore-confirm")
    assert exchange(live_server, tenant, issuer.issuer_id, upstream.mint()) == 403  # nothing changed yet
    page.click("#confirm")
    page.wait_for_selector(".messagelist")
    shot(page, "44-revision-restored")
    assert exchange(live_server, tenant, issuer.issuer_id, upstream.mint()) == 200  # the old decision is back
    restored = Revision.objects.filter(tenant=tenant).order_by("-number").first()
    assert restored.number == before.number + 2 and restored.document == before.document
