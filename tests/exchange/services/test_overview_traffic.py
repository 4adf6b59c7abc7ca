"""The overview's traffic (docs/operators.md#the-tenant-overview): hourly buckets from one query, exact over a generated
week, the SVG drawn from them, the top denial reasons with links the audit list accepts, and
each upstream issuer's key-set age."""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from exchange.console.charts import (
    HourBucket,
    axis_top,
    day_label,
    traffic_chart_svg,
    traffic_summary,
)
from exchange.models import ExchangeRecord
from exchange.services.overview import (
    key_set_age,
    tenant_top_denials_get,
    tenant_traffic_get,
)

pytestmark = pytest.mark.django_db

NOW = datetime(2025, 6, 11, 14, 23, 45, 123456, tzinfo=UTC)  # a Wednesday
END = datetime(2025, 6, 11, 15, tzinfo=UTC)  # the current hour is the last bucket
START = END - timedelta(days=7)
SVG = "{http://www.w3.org/2000/svg}"


def _record(tenant, at: datetime, decision: str, *, error_code: str = "", rule_name: str = "", reason: str = ""):
    denied = decision == "denied"
    return ExchangeRecord(
        tenant=tenant,
        created_at=at,
        endpoint="raw",
        decision=decision,
        status_code=403 if denied else 200,
        error_code=error_code or ("access_denied" if denied else ""),
        rule_name=rule_name,
        reason=reason or ("no rule matched" if denied else ""),
    )


def _week(tenant) -> dict[datetime, tuple[int, int]]:
    """A week of records, some hours empty, at varied minutes; returns the expected buckets."""
    expected, rows = {}, []
    for index in range(7 * 24):
        hour = START + timedelta(hours=index)
        allowed, denied = (index * 7) % 5, (index * 3) % 4
        if index % 11 == 0:
            allowed = denied = 0  # empty hours
        for n in range(allowed + denied):
            rows.append(
                _record(
                    tenant,
                    hour + timedelta(minutes=(index * 13 + n * 7) % 60, seconds=n),
                    "allowed" if n < allowed else "denied",
                )
            )
        expected[hour] = (allowed, denied)
    ExchangeRecord.objects.bulk_create(rows)
    return expected


def test_the_buckets_are_exact_over_a_week_with_its_boundaries_and_empty_hours(tenant, other_tenant):
    expected = _week(tenant)
    edges = [
        (START, "allowed"),  # the window's first instant: in the first bucket
        (START - timedelta(microseconds=1), "allowed"),  # just before it: out
        (datetime(2025, 6, 8, 0, tzinfo=UTC), "denied"),  # midnight opens its own hour…
        (datetime(2025, 6, 7, 23, 59, 59, 999999, tzinfo=UTC), "denied"),  # …the instant before is the previous one
        (datetime(2025, 6, 9, 5, 59, 59, 999999, tzinfo=UTC), "allowed"),
        (datetime(2025, 6, 9, 6, tzinfo=UTC), "allowed"),
        (NOW, "denied"),  # the current, partial hour is the last bucket
        (END, "allowed"),  # the next hour (clock skew): out
    ]
    ExchangeRecord.objects.bulk_create([_record(tenant, at, decision) for at, decision in edges])
    for at, decision in edges:
        hour = at.replace(minute=0, second=0, microsecond=0)
        if START <= at < END:
            allowed, denied = expected[hour]
            expected[hour] = (allowed + (decision == "allowed"), denied + (decision == "denied"))
    # Another tenant's traffic in the same hours counts for nobody here.
    ExchangeRecord.objects.bulk_create(
        [_record(other_tenant, START + timedelta(hours=h), "allowed") for h in range(168)]
    )

    buckets = tenant_traffic_get(tenant=tenant, now=NOW)

    assert len(buckets) == 168
    assert buckets[0].start == START and buckets[-1].start == datetime(2025, 6, 11, 14, tzinfo=UTC)
    assert [b.start for b in buckets] == [START + timedelta(hours=n) for n in range(168)]
    assert {b.start: (b.allowed, b.denied) for b in buckets} == expected
    assert any(b.total == 0 for b in buckets)
    assert buckets[0].allowed == expected[START][0] and expected[START][0] >= 1  # the first instant counted
    assert buckets[-1].denied == expected[buckets[-1].start][1] >= 1
    assert sum(b.total for b in buckets) == sum(a + d for a, d in expected.values())


def test_the_chart_costs_one_query(tenant, django_assert_num_queries):
    _week(tenant)
    with django_assert_num_queries(1):
        buckets = tenant_traffic_get(tenant=tenant, now=NOW)
    assert sum(b.total for b in buckets) > 0


def test_an_empty_week_is_168_empty_hours(tenant):
    buckets = tenant_traffic_get(tenant=tenant, now=NOW)
    assert len(buckets) == 168 and all(b.total == 0 for b in buckets)
    svg = traffic_chart_svg(buckets, title="empty")
    assert '<rect class="jwtex-bar' not in svg
    assert "No exchanges in the 168 hours" in traffic_summary(buckets)


# --- the SVG --------------------------------------------------------------------------------------


def _buckets() -> list[HourBucket]:
    return [HourBucket(START + timedelta(hours=n), (n * 7) % 5, (n * 3) % 4 if n % 11 else 0) for n in range(168)]


def test_the_svg_has_both_series_a_legend_day_labels_title_and_desc():
    buckets = _buckets()
    root = ET.fromstring(traffic_chart_svg(buckets, title="Exchanges per hour"))  # well-formed XML
    assert root.tag == f"{SVG}svg" and root.get("role") == "img"
    assert root.get("aria-labelledby") == "traffic-chart-title traffic-chart-desc"
    assert root.find(f"{SVG}title").text == "Exchanges per hour"
    assert root.find(f"{SVG}desc").text == traffic_summary(buckets)
    rects = list(root.iter(f"{SVG}rect"))
    allowed = [r for r in rects if r.get("class") == "jwtex-bar-allowed"]
    denied = [r for r in rects if r.get("class") == "jwtex-bar-denied"]
    assert len(allowed) == sum(1 for b in buckets if b.allowed)
    assert len(denied) == sum(1 for b in buckets if b.denied)
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "allowed" in texts and "denied" in texts  # the legend
    # 4 Jun from 15:00 is 9 hours (labelled), then six whole days, then 11 Jun until 15:00.
    assert [t for t in texts if t and t[:3] in {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}] == [
        "Wed 4 Jun",
        "Thu 5 Jun",
        "Fri 6 Jun",
        "Sat 7 Jun",
        "Sun 8 Jun",
        "Mon 9 Jun",
        "Tue 10 Jun",
        "Wed 11 Jun",
    ]
    assert len([line for line in root.iter(f"{SVG}line") if line.get("class") == "jwtex-day-tick"]) == 7
    assert "exchanges per hour" in texts and "day (UTC)" in texts
    # Each hour's tooltip names the hour and both counts.
    titles = [g.find(f"{SVG}title").text for g in root.iter(f"{SVG}g") if g.find(f"{SVG}title") is not None]
    assert "2025-06-04 16:00 UTC: 2 allowed, 3 denied" in titles


def test_bars_are_stacked_and_scaled_to_the_axis():
    buckets = [
        HourBucket(START, 3, 1),
        HourBucket(START + timedelta(hours=1), 0, 0),
        HourBucket(START + timedelta(hours=2), 0, 4),
    ]
    root = ET.fromstring(traffic_chart_svg(buckets, title="t"))
    bars = [
        (r.get("class"), float(r.get("y")), float(r.get("height")))
        for r in root.iter(f"{SVG}rect")
        if (r.get("class") or "").startswith("jwtex-bar")
    ]
    assert axis_top(4) == (4, 1)
    (_, ay, ah), (_, dy, dh), (_, d2y, d2h) = bars
    assert [b[0] for b in bars] == ["jwtex-bar-allowed", "jwtex-bar-denied", "jwtex-bar-denied"]
    assert ah == pytest.approx(3 * dh) and dy + dh == pytest.approx(ay)  # denied sits on allowed
    assert d2h == pytest.approx(ah + dh) and d2y == pytest.approx(dy)  # 4 of 4: the full height, as 3 + 1 is


def test_text_in_the_svg_is_escaped():
    svg = traffic_chart_svg(_buckets()[:3], title="<script>alert(\"x\")</script> & 'q'", chart_id='c"><x')
    assert "<script>" not in svg and 'c"><x' not in svg
    root = ET.fromstring(svg)
    assert root.find(f"{SVG}title").text == "<script>alert(\"x\")</script> & 'q'"
    assert root.get("id") == 'c"><x'


def test_axis_steps_are_round():
    assert [axis_top(p) for p in (0, 1, 4, 5, 9, 11, 41, 1234)] == [
        (1, 1),
        (1, 1),
        (4, 1),
        (6, 2),
        (10, 5),
        (15, 5),
        (60, 20),
        (1500, 500),
    ]
    assert day_label(datetime(2025, 6, 11).date()) == "Wed 11 Jun"


# --- top denial reasons ----------------------------------------------------------------------------


def _denials(tenant, other_tenant, now):
    rows = []
    for n in range(5):  # each reason different: values vary, the (code, rule) group does not
        rows.append(
            _record(
                tenant,
                now - timedelta(minutes=10 + n),
                "denied",
                error_code="invalid_token",
                reason=f"exp {1749000000 + n} is not after now {1749650000 + n} - leeway 60",
            )
        )
    for n in range(3):
        rows.append(
            _record(
                tenant,
                now - timedelta(hours=2, minutes=n),
                "denied",
                rule_name="deny forks",
                reason=f"rule 'deny forks': deny rule matched (fork {n})",
            )
        )
    rows.append(
        _record(tenant, now - timedelta(hours=3), "denied", rule_name="", reason="no rule matched for issuer 'ci'")
    )
    rows.append(
        _record(tenant, now - timedelta(hours=4), "denied", rule_name="", reason="no rule matched for issuer 'gh'")
    )
    rows.append(_record(tenant, now - timedelta(hours=25), "denied", error_code="invalid_request"))  # too old
    rows.append(_record(tenant, now - timedelta(minutes=1), "allowed", rule_name="deny forks"))  # not a denial
    rows += [_record(other_tenant, now - timedelta(minutes=1), "denied", error_code="invalid_token") for _ in range(9)]
    ExchangeRecord.objects.bulk_create(rows)


def test_top_denials_group_by_error_code_and_rule(tenant, other_tenant):
    _denials(tenant, other_tenant, NOW)
    groups = tenant_top_denials_get(tenant=tenant, since=NOW - timedelta(hours=24))
    assert [(g.error_code, g.rule_name, g.count) for g in groups] == [
        ("invalid_token", "", 5),
        ("access_denied", "deny forks", 3),
        ("access_denied", "", 2),
    ]
    assert groups[0].latest_reason == "exp 1749000000 is not after now 1749650000 - leeway 60"  # the newest
    assert groups[0].last_seen == NOW - timedelta(minutes=10)
    assert groups[2].latest_reason == "no rule matched for issuer 'ci'"
    assert len(tenant_top_denials_get(tenant=tenant, since=NOW - timedelta(hours=24), limit=2)) == 2


def _overview(client, tenant) -> str:
    response = client.get(reverse("admin:tenants_tenant_overview", args=[tenant.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_each_top_reason_links_to_exactly_its_rows_in_the_audit_list(tenant, other_tenant, admin_client_for):
    now = timezone.now()
    _denials(tenant, other_tenant, now)
    client = admin_client_for(tenant, "auditor")
    page = _overview(client, tenant)
    links = [html.unescape(href) for href in re.findall(r'class="jwtex-denial-link" href="([^"]+)"', page)]
    assert len(links) == 3
    expected = [("invalid_token", "", 5), ("access_denied", "deny forks", 3), ("access_denied", "", 2)]
    for link, (code, rule, count) in zip(links, expected, strict=True):
        response = client.get(link)
        assert response.status_code == 200, link  # the admin accepted every parameter (no ?e=1 redirect)
        changelist = response.context["cl"]
        rows = list(changelist.queryset)
        assert changelist.result_count == count, link
        assert {(r.tenant_id, r.decision, r.error_code, r.rule_name) for r in rows} == {
            (tenant.pk, "denied", code, rule)
        }
        assert all(r.created_at >= now - timedelta(hours=24) for r in rows)
    assert "no rule matched for issuer &#x27;ci&#x27;" in page  # the latest reason, escaped


def test_no_denials_says_so(tenant, admin_client_for):
    page = _overview(admin_client_for(tenant, "auditor"), tenant)
    assert "No denied attempt in the last 24 h." in page
    assert 'id="traffic-chart"' in page and "No exchanges in the 168 hours" in page


# --- key-set age ----------------------------------------------------------------------------------


def test_key_set_age_in_seconds_and_static(tenant, issuer, upstream, admin_client_for):
    from exchange.models import Issuer

    fetched = Issuer.objects.create(
        tenant=tenant,
        issuer_id="gh",
        issuer="https://token.actions.githubusercontent.com",
        audiences=["x"],
        jwks=upstream.jwks,
        jwks_fetched_at=NOW - timedelta(seconds=3600),
        jwks_changed_at=NOW - timedelta(days=2),
    )
    never = Issuer.objects.create(tenant=tenant, issuer_id="new", issuer="https://new.example", audiences=["x"])
    assert key_set_age(issuer, now=NOW).static
    age = key_set_age(fetched, now=NOW)
    assert (age.static, age.fetched_seconds, age.changed_seconds) == (False, 3600, 172800)
    assert age.fetched_text == "3,600 s (1 h 0 min) ago" and age.changed_text == "172,800 s (2 d 0 h) ago"
    assert key_set_age(never, now=NOW).fetched_text == "never"
    # A fetch stamped a little after "now" (clocks of two machines) is not a negative age.
    assert key_set_age(fetched, now=NOW - timedelta(hours=2)).fetched_seconds == 0

    page = _overview(admin_client_for(tenant, "auditor"), tenant)
    cells = re.findall(r'<td class="jwtex-key-age">(.*?)</td>', page, re.DOTALL)
    assert len(cells) == 3
    assert cells[0].strip() == "static"  # ci (issuer ids in order: ci, gh, new)
    assert cells[1].startswith("fetched ") and "keys changed " in cells[1]
    assert cells[2].strip() == "not fetched yet"
