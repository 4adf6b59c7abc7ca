"""The operator's path through the admin in a real browser (docs/operators.md#the-admin-today): headless Chromium from
Debian, driven by Playwright, against pytest-django's live server. Each step saves a
screenshot under test-artifacts/browser/ (git-ignored) for a human to look at.

Needs ``apt-get install chromium chromium-driver`` and the test extras (``playwright``);
Playwright's own browser download is never used.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "browser"
PASSWORD = "correct horse battery staple"

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def page(monkeypatch):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not found at {CHROMIUM}: apt-get install chromium chromium-driver")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]' (playwright)")
    # Playwright's sync API keeps an asyncio loop on this thread; the ORM calls the test makes
    # between browser steps are still plain synchronous calls.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1366, "height": 900})
        page = context.new_page()
        page.set_default_timeout(20_000)
        try:
            yield page
        finally:
            # With Playwright's loop on this thread, asgiref gives the test's ORM calls their own
            # connection; close it here, or dropping a PostgreSQL test database finds it open.
            from django.db import connections

            connections.close_all()
            context.close()
            browser.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def log_in_as_member(page, live_server, django_user_model, tenant, username: str, role: str = "operator"):
    """A staff user with ``role`` in ``tenant``, logged in through the admin's login form."""
    from tenants.models import Membership

    user = django_user_model.objects.create_user(username=username, password=PASSWORD, is_staff=True)
    Membership.objects.create(user=user, tenant=tenant, role=role)
    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#jwtex-tenants")
    return user


def exchange(live_server, tenant, issuer_id: str, token: str) -> int:
    request = urllib.request.Request(
        f"{live_server.url}/t/{tenant.slug}/exchange?issuerId={issuer_id}",
        data=token.encode(),
        headers={"Content-Type": "application/jwt"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_operator_onboards_github_and_debugs_a_refusal(
    page, live_server, tenant, other_tenant, issuer, allow_rule, upstream, django_user_model
):
    from exchange.conf import jwtex_settings
    from exchange.models import ExchangeRecord, Issuer, Rule

    base = live_server.url

    # 1. Log in: the index lists the user's tenant and the screens the role may use.
    log_in_as_member(page, live_server, django_user_model, tenant, "olga")
    assert "Acme Corp (acme)" in page.inner_text("#jwtex-tenants")
    assert "globex" not in page.content().lower()
    shot(page, "01-index")

    # 2. Add an issuer from the GitHub Actions preset.
    page.goto(f"{base}/admin/exchange/issuer/")
    page.click("#add-from-preset")
    page.check("#preset-github")
    shot(page, "02-issuer-presets")
    page.click("input[name=_continue]")
    page.wait_for_selector("#id_issuer")
    assert page.input_value("#id_issuer") == "https://token.actions.githubusercontent.com"
    assert page.input_value("#id_audiences") == jwtex_settings.issuer_url(tenant.slug)  # the tenant's own
    assert page.input_value("#id_issuer_id") == "github"
    assert page.is_checked("input[name=algorithms][value=RS256]")
    shot(page, "03-issuer-form-from-preset")
    page.click("input[name=_save]")
    page.wait_for_selector("#result_list")
    assert "https://token.actions.githubusercontent.com" in page.inner_text("#result_list")
    github = Issuer.objects.get(tenant=tenant, issuer_id="github")
    shot(page, "04-issuers")
    # "Fetch keys now" on the issuer with a pasted (static) JWKS says which keys it holds.
    page.goto(f"{base}/admin/exchange/issuer/{issuer.pk}/change/")
    page.click("#fetch-keys-now")
    page.wait_for_selector(".messagelist")
    assert "upstream-rsa-1, upstream-ec-1" in page.inner_text(".messagelist")
    shot(page, "04b-issuer-fetch-keys")

    # 3. A rule with a CEL error: the message says where; then fixed.
    page.goto(f"{base}/admin/exchange/rule/add/")
    page.fill("#id_name", "github main")
    page.check(f"input[name=issuers][value='{github.pk}']")
    page.fill("#id_when", "claims.repository_owner == 'octo-org' &&")
    page.select_option("#id_effect", "allow")
    page.fill("#id_session_tags-0-key", "repository")
    page.fill("#id_session_tags-0-value", "claims.repository")
    page.fill("#id_session_tags-1-key", "actor")
    page.fill("#id_session_tags-1-value", "aws_tag(claims.actor)")
    page.click("input[name=_save]")
    page.wait_for_selector(".errorlist")
    errors = page.inner_text(".field-when .errorlist")
    assert "line 1, column" in errors
    shot(page, "05-rule-cel-error")
    page.fill("#id_when", "claims.repository_owner == 'octo-org' && claims.ref == 'refs/heads/main'")
    page.click("input[name=_save]")
    page.wait_for_selector("#result_list")
    assert "github main" in page.inner_text("#result_list")
    assert Rule.objects.filter(tenant=tenant, name="github main").exists()
    shot(page, "06-rules")

    # 4. The simulator: claims typed in for the GitHub issuer, the session tags it would emit.
    page.click("#open-simulator")
    page.select_option("#id_issuer", str(github.pk))
    page.check("input[name=mode][value=claims]")
    claims = {
        "sub": "repo:octo-org/app:ref:refs/heads/main",
        "repository": "octo-org/app",
        "repository_owner": "octo-org",
        "ref": "refs/heads/main",
        "actor": "octocat",
    }
    page.fill("#id_claims", json.dumps(claims, indent=1))
    page.click("#simulate")
    page.wait_for_selector("#simulation-result")
    tags = page.inner_text("#session-tags")
    assert "repository" in tags and "octo-org/app" in tags and "octocat" in tags
    assert "unverified simulation" in page.inner_text("#simulation-result")
    assert ExchangeRecord.objects.count() == 0
    shot(page, "07-simulator")

    # 5. Two real exchanges, then the audit log explains the refusal.
    assert exchange(live_server, tenant, issuer.issuer_id, upstream.mint()) == 200
    assert exchange(live_server, tenant, issuer.issuer_id, upstream.mint(ref="refs/heads/feature")) == 403
    page.goto(f"{base}/admin/exchange/exchangerecord/")
    page.wait_for_selector("#result_list")
    assert page.locator("#result_list tbody tr").count() == 2
    shot(page, "08-audit-log")
    page.goto(f"{base}/admin/exchange/exchangerecord/?decision__exact=denied")
    page.click("#result_list tbody tr th a")
    page.wait_for_selector(".field-reason")
    assert "no rule matched" in page.inner_text(".field-reason")
    shot(page, "09-audit-detail")

    # 6. The overview: issuer, keys, counts and the AWS / CI set-up to copy.
    page.goto(f"{base}/admin/tenants/tenant/{tenant.pk}/overview/")
    page.wait_for_selector("#aws-cfn")
    assert page.inner_text("#allowed-24h") == "1" and page.inner_text("#denied-24h") == "1"
    assert "aws:RequestTag/repository" in page.inner_text("#aws-cfn")
    assert "issuerId=github" in page.inner_text("#ci-github")
    shot(page, "10-overview")

    # 7. Rotate now, behind its confirmation page.
    page.goto(f"{base}/admin/exchange/signingkey/")
    page.click("a.jwtex-rotate")
    page.wait_for_selector("#confirm")
    shot(page, "11-rotate-confirm")
    page.click("#confirm")
    page.wait_for_selector("#result_list")
    assert "published new key" in page.inner_text(".messagelist")
    shot(page, "12-keys")


def test_api_docs_render_offline_from_our_own_origin(page, live_server):
    """/api/docs/ loads nothing from another origin, and Swagger UI renders the operations
    (docs/endpoints.md#openapi-schema-and-docs)."""
    from urllib.parse import urlsplit

    origin = urlsplit(live_server.url)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(f"{live_server.url}/api/docs/")
    page.wait_for_selector(".opblock", timeout=20_000)
    operations = page.locator(".opblock-summary-path").all_inner_texts()
    assert any("/t/{slug}/exchange" in text for text in operations), operations
    assert any("/api/v1/t/{slug}/exchange" in text for text in operations), operations
    shot(page, "20-api-docs")
    foreign = [url for url in requests if urlsplit(url)[:2] != origin[:2] and not url.startswith("data:")]
    assert requests and not foreign, foreign


def test_overview_draws_a_weeks_traffic_as_an_svg_chart(page, live_server, tenant, issuer, django_user_model):
    """A generated week of records; the overview's server-drawn SVG shows both series as bars, day
    labels and a legend, with no script needed (JavaScript is off here; docs/operators.md#the-tenant-overview)."""
    from datetime import timedelta

    from django.utils import timezone

    from exchange.models import ExchangeRecord
    from tenants.models import Membership

    now = timezone.now()
    hour = now.replace(minute=0, second=0, microsecond=0)
    rows, allowed_hours, denied_hours = [], 0, 0
    for back in range(7 * 24):
        allowed, denied = (back * 7) % 6, (back * 5) % 3 if back % 4 else 0
        if back % 13 == 0:
            allowed = denied = 0
        allowed_hours += bool(allowed)
        denied_hours += bool(denied)
        start = hour - timedelta(hours=back)
        for n in range(allowed + denied):
            at = min(start + timedelta(minutes=(n * 11) % 60), now)
            rows.append(
                ExchangeRecord(
                    tenant=tenant,
                    created_at=at,
                    endpoint="raw",
                    decision="allowed" if n < allowed else "denied",
                    status_code=200 if n < allowed else 403,
                    error_code="" if n < allowed else "access_denied",
                    reason="" if n < allowed else "no rule matched for issuer 'ci' (1 of 1 rules apply to it)",
                    issuer_ref="ci",
                )
            )
    ExchangeRecord.objects.bulk_create(rows)
    user = django_user_model.objects.create_user(username="ada", password=PASSWORD, is_staff=True)
    Membership.objects.create(user=user, tenant=tenant, role="auditor")

    page.context.close()  # a context without JavaScript: the chart must not need it
    context = page.context.browser.new_context(viewport={"width": 1366, "height": 900}, java_script_enabled=False)
    page = context.new_page()
    page.set_default_timeout(20_000)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "ada")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#jwtex-tenants")
    page.goto(f"{live_server.url}/admin/tenants/tenant/{tenant.pk}/overview/")
    chart = page.locator("svg#traffic-chart")
    chart.wait_for(state="visible")
    box = chart.bounding_box()
    assert box and box["width"] > 600 and box["height"] > 150
    assert page.locator("svg#traffic-chart rect.jwtex-bar-allowed").count() == allowed_hours > 0
    assert page.locator("svg#traffic-chart rect.jwtex-bar-denied").count() == denied_hours > 0
    bar = page.locator("svg#traffic-chart rect.jwtex-bar-denied").first.bounding_box()
    assert bar and bar["height"] > 0 and bar["width"] > 0  # drawn, not just present
    labels = page.locator("svg#traffic-chart text.jwtex-day").all_text_contents()
    assert len(labels) >= 7
    legend = page.locator("svg#traffic-chart .jwtex-legend").text_content()
    assert "allowed" in legend and "denied" in legend
    assert page.locator("#traffic-chart-title").count() == 1 and page.locator("#traffic-chart-desc").count() == 1
    summary = page.inner_text("#traffic-summary")
    assert f"{len(rows):,} exchanges" in summary
    assert "no rule matched" in page.inner_text("#top-denials")
    assert page.inner_text(".jwtex-key-age") == "static"
    page.locator("#traffic").screenshot(path=str(ARTIFACTS / "30-overview-traffic-chart.png"))
    shot(page, "31-overview-traffic")
    origin = live_server.url
    assert all(url.startswith(origin) for url in requests), [u for u in requests if not u.startswith(origin)]
    context.close()
