"""The audit log's "Export selected/filtered as JSON lines" action (docs/operations.md#audit-export): the same
lines as ``jwtex_audit_export``, streamed as application/x-ndjson, and only the user's tenants'
rows, whatever ids are posted."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from exchange.models import ExchangeRecord
from exchange.services.audit_export import EXPORT_FIELDS

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:exchange_exchangerecord_changelist")


def _post(client, ids, *, select_across: bool = False, query: str = ""):
    return client.post(
        CHANGELIST + query,
        {
            "action": "export_jsonl",
            "index": "0",
            "select_across": "1" if select_across else "0",
            "_selected_action": [str(i) for i in ids],
        },
    )


def _lines(response) -> list[dict]:
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-ndjson"
    assert response["Content-Disposition"].startswith('attachment; filename="jwtex-audit-')
    assert response.streaming
    return [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]


def test_the_action_is_offered_and_delete_is_not(a, admin_client_for):
    response = admin_client_for(a.tenant, "auditor").get(CHANGELIST)
    choices = [name for name, _ in response.context["action_form"].fields["action"].choices]
    assert "export_jsonl" in choices and "delete_selected" not in choices


def test_selected_rows_export_as_the_commands_lines(a, admin_client_for):
    records = _lines(_post(admin_client_for(a.tenant, "auditor"), [a.record.pk]))
    assert len(records) == 1 and list(records[0]) == list(EXPORT_FIELDS)
    assert records[0]["id"] == a.record.pk and records[0]["upstream_sub"] == "subject-acme"
    assert records[0]["tenant"] == "acme" and records[0]["rule"] == a.rule.name


def test_a_user_of_tenant_a_cannot_export_tenant_bs_rows(a, b, admin_client_for):
    client = admin_client_for(a.tenant, "owner")
    # B's id posted alongside A's (a forged selection): only A's row comes back.
    records = _lines(_post(client, [a.record.pk, b.record.pk]))
    assert [r["id"] for r in records] == [a.record.pk]
    # B's id alone: an empty export.
    assert _lines(_post(client, [b.record.pk])) == []
    # "Select all" over the whole (unfiltered) list: every row of A, none of B.
    records = _lines(_post(client, [a.record.pk], select_across=True))
    assert {r["tenant"] for r in records} == {"acme"}
    assert [r["id"] for r in records] == [a.record.pk]
    # Even with B's tenant in the filters (Django drops a filter with a single choice, so this
    # lists A's rows; what matters is that none of B's comes out).
    records = _lines(_post(client, [a.record.pk], select_across=True, query=f"?tenant__id__exact={b.tenant.pk}"))
    assert {r["tenant"] for r in records} <= {"acme"}


def test_select_all_exports_what_the_filters_leave(a, admin_client_for):
    now = timezone.now()
    allowed = ExchangeRecord.objects.create(
        tenant=a.tenant,
        created_at=now - timedelta(minutes=1),
        endpoint="api",
        decision="allowed",
        status_code=200,
        issued_jti="jti-allowed",
    )
    client = admin_client_for(a.tenant, "auditor")
    records = _lines(_post(client, [a.record.pk], select_across=True, query="?decision__exact=allowed"))
    assert [r["id"] for r in records] == [allowed.pk]
    records = _lines(_post(client, [a.record.pk], select_across=True))
    assert [r["id"] for r in records] == [a.record.pk, allowed.pk]  # oldest first


def test_a_superuser_exports_every_tenant(a, b, admin_client_for):
    records = _lines(_post(admin_client_for(role="superuser"), [a.record.pk], select_across=True))
    assert {r["tenant"] for r in records} == {"acme", "globex"}


def test_a_staff_user_without_membership_exports_nothing(a, admin_client_for):
    response = _post(admin_client_for(None, "auditor"), [a.record.pk], select_across=True)
    assert response.status_code == 403
