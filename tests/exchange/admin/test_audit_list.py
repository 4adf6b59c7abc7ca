"""The audit list costs the same at any size (docs/scale.md#the-admin-at-100-million-records):
pages by key across records arriving meanwhile, a bounded number of queries with no DISTINCT or
OFFSET over the records (and, on PostgreSQL, every one served by an index), capped counts,
filters from small tables, exact search."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from exchange.admin import audit_list
from exchange.models import ExchangeRecord, Issuer, Rule
from exchange.services.audit import Attempt, attempt_record

pytestmark = pytest.mark.django_db

URL = "/admin/exchange/exchangerecord/"


def _add(tenant, minutes_ago: float, **fields) -> ExchangeRecord:
    denied = fields.get("decision") == "denied"
    defaults = {"endpoint": "raw", "decision": "allowed", "status_code": 403 if denied else 200}
    return ExchangeRecord.objects.create(
        tenant=tenant, created_at=timezone.now() - timedelta(minutes=minutes_ago), **{**defaults, **fields}
    )


def _shown(response) -> list[int]:
    assert response.status_code == 200, response.status_code
    return [record.pk for record in response.context["cl"].result_list]


def _link(response, name: str) -> str | None:
    match = re.search(rf'<a href="([^"]+)" id="audit-{name}">', response.content.decode())
    return match and URL + match[1].replace("&amp;", "&")


def test_pages_go_by_key_and_records_arriving_meanwhile_never_shift_a_page(admin_client_for, tenant, monkeypatch):
    monkeypatch.setattr(audit_list, "PER_PAGE", 10)
    monkeypatch.setattr("exchange.admin.audit.ExchangeRecordAdmin.list_per_page", 10)
    same_time = timezone.now() - timedelta(minutes=30)
    first = [_add(tenant, 60 - n) for n in range(20)]  # oldest first
    tied = [
        ExchangeRecord.objects.create(
            tenant=tenant, created_at=same_time, endpoint="raw", decision="allowed", status_code=200
        )
        for _ in range(4)
    ]  # one time, told apart by id
    newest_first = sorted(first + tied, key=lambda r: (r.created_at, r.pk), reverse=True)
    client = admin_client_for(tenant, "auditor")

    page1 = client.get(URL)
    assert _shown(page1) == [r.pk for r in newest_first[:10]]
    assert _link(page1, "newer") is None
    older = _link(page1, "older")
    # Meanwhile: new records at the top, and a late one (drained from a spool) between pages 1 and 2.
    arrived = [_add(tenant, 0.5), _add(tenant, 0.2)]
    late = ExchangeRecord.objects.create(
        tenant=tenant,
        endpoint="raw",
        decision="allowed",
        status_code=200,
        created_at=newest_first[12].created_at + timedelta(microseconds=1),
    )
    page2 = client.get(older)
    expected = sorted([*newest_first[10:], late], key=lambda r: (r.created_at, r.pk), reverse=True)
    assert _shown(page2) == [r.pk for r in expected[:10]]  # nothing of page 1 again, nothing skipped
    assert set(_shown(page2)).isdisjoint(_shown(page1))
    page3 = client.get(_link(page2, "older"))
    assert _shown(page3) == [r.pk for r in expected[10:]] and _link(page3, "older") is None
    back = client.get(_link(page2, "newer"))  # "newer" from page 2: page 1 as it was, not the arrivals
    assert _shown(back) == _shown(page1)
    assert _shown(client.get(_link(back, "newer"))) == [r.pk for r in reversed(arrived)]
    # A time alone jumps there; a position past the end is an empty page that leads back.
    jump = client.get(URL, {"before": (same_time + timedelta(microseconds=1)).isoformat()})
    assert _shown(jump)[:4] == sorted((r.pk for r in tied), reverse=True)
    end = client.get(URL, {"before": (timezone.now() - timedelta(days=365)).isoformat()})
    assert _shown(end) == [] and _link(end, "newer")
    assert client.get(URL, {"before": "not a time"}).status_code == 400  # a page that says what it cannot read


def _records_queries(captured) -> list[str]:
    return [q["sql"] for q in captured if "exchange_exchangerecord" in q["sql"]]


@pytest.fixture
def busy(tenant, other_tenant, issuer, allow_rule):
    for n in range(30):
        denied = n % 3 == 0
        _add(
            tenant,
            n,
            decision="denied" if denied else "allowed",
            error_code="access_denied" if denied else "",
            rule_name=allow_rule.name,
            issuer_ref=issuer.issuer_id,
            upstream_sub=f"repo:octo-org/app-{n}",
            upstream_jti=f"up-{n}",
            issued_jti=f"jti-{n}",
        )
        _add(other_tenant, n, upstream_sub=f"repo:globex/app-{n}")


PAGES = [
    {},
    {"decision__exact": "denied"},
    {"q": "jti-7"},
    {"q": "repo:octo-org/app-1*"},
    {"since": "24h"},
    {"error_code__exact": "access_denied"},
    {"rule_name": "octo-org main"},
    {"issuer_ref": "ci"},
    {"endpoint__exact": "raw"},
    {"before": timezone.now().isoformat()},
]


@pytest.mark.parametrize("who", ["superuser", "auditor"])
@pytest.mark.parametrize("params", PAGES, ids=lambda p: "&".join(p) or "list")
def test_each_page_is_a_few_indexed_queries_without_distinct_or_offset(
    admin_client_for, client, tenant, busy, who, params, django_user_model
):
    if who == "superuser":
        client.force_login(django_user_model.objects.create_superuser("root", "root@example.test", "pw"))
    else:
        client = admin_client_for(tenant, "auditor")
    params = {**params, **({"tenant__id__exact": tenant.pk} if who == "superuser" and params else {})}
    client.get(URL, params)  # warm: sessions, content types
    with CaptureQueriesContext(connection) as captured:
        response = client.get(URL, params)
    assert response.status_code == 200 and response.context["cl"].result_list
    queries = _records_queries(captured)
    assert len(queries) <= 2, queries  # the page and its capped count
    statements = [q["sql"] for q in captured if not re.match(r"(SAVEPOINT|RELEASE|ROLLBACK|SET LOCAL)", q["sql"])]
    assert len(statements) <= 12, statements  # session, user, memberships, filters' choices, the page, its count
    for sql in queries:
        assert "DISTINCT" not in sql.upper() and "OFFSET" not in sql.upper(), sql
        assert re.search(r"LIMIT \d+", sql), sql
    if connection.vendor == "postgresql":
        for sql in queries:
            assert_uses_an_index(sql)


def assert_uses_an_index(sql: str) -> None:
    """With sequential scans priced out, the plan still reads the records through an index:
    there is one that serves this query (a tiny test table would otherwise be scanned)."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + sql)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("RESET enable_seqscan")
    scans = [line for line in plan.splitlines() if "exchange_exchangerecord" in line]
    assert scans and not any("Seq Scan" in line for line in scans), plan


def test_counts_are_capped(admin_client_for, tenant, monkeypatch):
    monkeypatch.setattr(audit_list, "COUNT_CAP", 5)
    for n in range(7):
        _add(tenant, n)
    html = admin_client_for(tenant, "auditor").get(URL).content.decode()
    assert "more than 5 records" in html
    monkeypatch.setattr(audit_list, "COUNT_CAP", 7)
    assert "7 records" in admin_client_for(tenant, "auditor").get(URL).content.decode()


def test_search_is_exact_or_a_subject_prefix(admin_client_for, tenant, upstream, issuer, allow_rule):
    a = _add(tenant, 1, upstream_sub="repo:octo-org/app:ref:refs/heads/main", upstream_jti="up-a", issued_jti="iss-a")
    b = _add(tenant, 2, upstream_sub="repo:octo-org/api", issued_sub="deploy-bot", issued_jti="iss-b")
    client = admin_client_for(tenant, "auditor")

    def found(term: str) -> set[int]:
        return set(_shown(client.get(URL, {"q": term})))

    assert found("up-a") == found("iss-a") == found("repo:octo-org/app:ref:refs/heads/main") == {a.pk}
    assert found("deploy-bot") == found("deploy*") == {b.pk}
    assert found("repo:octo-org/*") == {a.pk, b.pk}
    assert found("octo-org") == found("up-") == found("*") == set()  # no substrings
    assert "a subject prefix ends in *" in client.get(URL).content.decode()
    # An allowed record whose issued subject is the upstream one stores it once, and is found by it.
    c = _add(tenant, 3, upstream_sub="repo:octo-org/cli", issued_sub="")
    assert found("repo:octo-org/cli") == {c.pk} and c.issued_subject == "repo:octo-org/cli"


def test_a_lookup_no_index_serves_is_refused(admin_client_for, tenant):
    _add(tenant, 1, reason="x")
    client = admin_client_for(tenant, "auditor")
    assert client.get(URL, {"reason__contains": "x"}).status_code == 400
    assert client.get(URL, {"o": "3"}).status_code == 200  # columns are not sortable: ignored


def test_filter_choices_come_from_the_users_tenants_tables(admin_client_for, tenant, other_tenant, issuer, allow_rule):
    Issuer.objects.create(
        tenant=other_tenant, issuer_id="globex-secret-issuer", issuer="https://g.example", audiences=["a"]
    )
    Rule.objects.create(tenant=other_tenant, position=1, name="globex-secret-rule", when="true", effect="deny")
    _add(tenant, 1, issuer_ref="retired-issuer", rule_name="retired-rule")  # in records only
    page = admin_client_for(tenant, "auditor").get(URL).content.decode()
    html = page[page.index('<nav id="changelist-filter"') :]  # the filters
    assert "?issuer_ref=ci" in html and "octo-org+main" in html
    assert "globex-secret" not in html  # another tenant's names
    assert "retired-issuer" not in html and "retired-rule" not in html  # not read from the records
    # An old name still filters (the overview links to it), and shows as chosen.
    response = admin_client_for(tenant, "auditor").get(URL, {"rule_name": "retired-rule"})
    assert len(_shown(response)) == 1 and "retired-rule" in response.content.decode()


def test_the_record_page_and_export_show_a_compact_record_whole(admin_client_for, tenant, upstream, allow_rule):
    from exchange.audit import writer
    from exchange.core.minting import payload_build
    from exchange.core.values import Decision, MintedToken
    from exchange.services.audit_export import audit_record_export

    decision = Decision(
        rule_id=allow_rule.pk,
        rule_name="main",
        subject="repo:octo-org/app",
        audience="sts.amazonaws.com",
        lifetime=900,
        session_tags=(("repository", "octo-org/app"),),
        transitive_tag_keys=(),
        extra_claims={},
    )
    now = int(timezone.now().timestamp())
    claims = payload_build(
        decision=decision, issuer="http://127.0.0.1:8000/t/acme", issued_at=now, jti=uuid.uuid4().hex
    )
    minted = MintedToken(
        token="x",
        jti=claims["jti"],
        kid="kid-1",
        subject=claims["sub"],
        audience=claims["aud"],
        issued_at=now,
        expires_at=claims["exp"],
        claims=claims,
    )
    parsed = type("Parsed", (), {"claims": {"sub": "repo:octo-org/app", "jti": "up-1", "iss": "https://ci.example"}})()
    attempt = Attempt(
        tenant_id=tenant.pk,
        tenant_slug=tenant.slug,
        endpoint="raw",
        client_address="10.0.0.1",
        started=timezone.now(),
        parsed=parsed,
        rule_name="main",
    )
    writer._writer = None
    assert attempt_record(attempt, minted=minted)
    record = ExchangeRecord.objects.get()
    assert record.issued_sub == "" and record.issued_claims is None and "sub" not in record.issued_claims_compact
    assert record.issued_subject == "repo:octo-org/app" and record.emitted_claims == claims
    exported = audit_record_export(record)
    assert exported["issued_sub"] == "repo:octo-org/app" and exported["issued_claims"] == claims
    html = admin_client_for(tenant, "auditor").get(reverse("admin:exchange_exchangerecord_change", args=[record.pk]))
    text = html.content.decode()
    assert "repo:octo-org/app" in text and claims["jti"] in text and "principal_tags" in text
    assert f"&quot;exp&quot;: {claims['exp']}" in text
