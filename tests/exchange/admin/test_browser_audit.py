"""The audit log in a real browser at 1,400 px (docs/operations.md#audit): every column fits, the reason of a denial
is on the list, and the page is called "Audit log" in its title and breadcrumb."""

from __future__ import annotations

import uuid

import pytest

from tests.exchange.admin.test_browser import log_in_as_member, page, shot  # noqa: F401 - fixtures

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _records(tenant):
    from django.utils import timezone

    from exchange.models import ExchangeRecord

    now = timezone.now()
    long_sub = "repo:octo-org/a-repository-with-a-rather-long-name:environment:production-eu-west-1"
    ExchangeRecord.objects.bulk_create(
        [
            ExchangeRecord(
                tenant=tenant,
                created_at=now,
                endpoint="raw",
                decision="denied",
                status_code=403,
                error_code="access_denied",
                issuer_ref="github-actions-production",
                upstream_sub=long_sub,
                reason="No rule allows this exchange: rule 'octo-org main' requires claims.ref == "
                "'refs/heads/main', and the token's ref is 'refs/heads/feature/a-long-branch-name'.",
                rule_name="",
            ),
            ExchangeRecord(
                tenant=tenant,
                created_at=now,
                endpoint="raw",
                decision="allowed",
                status_code=200,
                issuer_ref="github-actions-production",
                upstream_sub=long_sub,
                issued_sub=long_sub,
                rule_name="octo-org main, deployments from the main branch",
                issued_jti=uuid.uuid4().hex,
            ),
        ]
    )


def test_the_audit_log_fits_1400_px_with_its_reason_column(page, live_server, tenant, django_user_model):
    _records(tenant)
    log_in_as_member(page, live_server, django_user_model, tenant, "ada", role="auditor")
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(f"{live_server.url}/admin/exchange/exchangerecord/?tenant__id__exact={tenant.pk}")
    page.wait_for_selector("#result_list")
    shot(page, "60-audit-log-1400")
    assert page.title().startswith("Audit log")
    assert page.inner_text("h1") == "Audit log"
    assert page.inner_text(".breadcrumbs").strip().endswith("Audit log")
    headers = [h.strip().lower() for h in page.locator("#result_list thead th").all_inner_texts()]
    assert "reason" in headers and "issued jti" in headers, headers
    assert "requires claims.ref" in page.inner_text("#result_list tbody")
    _fits(page)
    page.goto(f"{live_server.url}/admin/exchange/exchangerecord/")  # all the user's tenants: a tenant column too
    page.wait_for_selector("#result_list")
    shot(page, "61-audit-log-1400-all-tenants")
    assert "tenant" in [h.strip().lower() for h in page.locator("#result_list thead th").all_inner_texts()]
    _fits(page)


def _fits(page):
    """Every column inside the list's box (Django scrolls it sideways when it is wider) and the window."""
    hidden = page.evaluate("""() => {
        const box = document.querySelector('.results').getBoundingClientRect();
        return [...document.querySelectorAll('#result_list thead th')]
            .filter(th => th.getBoundingClientRect().right > Math.min(box.right, innerWidth) + 0.5)
            .map(th => th.innerText);
    }""")
    assert hidden == [], hidden
    spilled = page.evaluate("""() => [...document.querySelectorAll('#result_list th, #result_list td')]
        .filter(cell => cell.scrollWidth > cell.clientWidth + 1).map(cell => cell.className + ': ' + cell.innerText)""")
    assert spilled == [], spilled  # no value drawn over its neighbour
    assert page.evaluate(
        "(() => { const r = document.querySelector('.results'); return r.scrollWidth <= r.clientWidth; })()"
    )
