"""The tenant overview and the candidate report read the audit rollups, not the records
(docs/scale.md#rollups): their queries do not grow with the traffic."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from exchange.models import ExchangeRecord, Rule

pytestmark = pytest.mark.django_db


def _traffic(tenant, n: int) -> None:
    now = timezone.now()
    ExchangeRecord.objects.bulk_create(
        [
            ExchangeRecord(
                tenant=tenant,
                created_at=now - timedelta(minutes=i * 7),
                endpoint="raw",
                decision="denied" if i % 4 == 0 else "allowed",
                status_code=403 if i % 4 == 0 else 200,
                error_code="access_denied" if i % 4 == 0 else "",
                reason=f"why {i}",
                rule_name="main",
                shadow={"decision": "denied", "rule": "strict", "tags_differ": True} if i % 5 == 0 else None,
            )
            for i in range(n)
        ]
    )


def _record_queries(client, url) -> list[str]:
    client.get(url)
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return [q["sql"] for q in captured.captured_queries if "exchange_exchangerecord" in q["sql"]]


def test_the_overview_reads_no_record(admin_client_for, tenant, issuer):
    _traffic(tenant, 200)
    client = admin_client_for(tenant, "auditor")
    response = client.get(reverse("admin:tenants_tenant_overview", args=[tenant.pk]))
    overview = response.context["overview"]
    assert (
        overview.allowed_24h + overview.denied_24h
        == ExchangeRecord.objects.filter(created_at__gte=overview.since_24h).count()
        > 0
    )
    assert (
        overview.top_denials[0].count
        == ExchangeRecord.objects.filter(decision="denied", created_at__gte=overview.since_24h).count()
    )
    assert _record_queries(client, reverse("admin:tenants_tenant_overview", args=[tenant.pk])) == []


def test_the_candidate_report_counts_from_rollups_and_lists_through_its_index(
    admin_client_for, tenant, issuer, allow_rule
):
    Rule.objects.create(tenant=tenant, position=1, name="strict", when="false", effect="deny", shadow=True)
    _traffic(tenant, 200)
    client = admin_client_for(tenant, "auditor")
    url = reverse("admin:exchange_rule_candidate", args=[tenant.pk])
    report = client.get(url).context["report"]
    assert (
        report["total"]
        == ExchangeRecord.objects.filter(shadow__isnull=False, created_at__gte=report_since()).count()
        > 0
    )
    queries = _record_queries(client, url)
    assert len(queries) == 1 and "COUNT" not in queries[0].upper() and "LIMIT 200" in queries[0]
    assert "IS NOT NULL" in queries[0]  # the partial index of records with a divergence


def report_since():
    now = timezone.now()
    return now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
