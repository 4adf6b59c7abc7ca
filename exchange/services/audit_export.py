"""Audit records as JSON lines for a SIEM (docs/operations.md#audit-export): one place that turns a
record into the exported object, used by ``manage.py jwtex_audit_export`` and the audit log's
admin action.

Each line is one JSON object with exactly the fields of ``EXPORT_FIELDS``, always all of them,
in that order (``null`` where the row holds nothing). Times are ISO 8601 in UTC with a ``Z``.
What is exported is what the audit row holds (docs/operations.md#audit): never a token — the row has none — and
nothing beyond the row.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from django.db.models import QuerySet

from tenants.models import Tenant

from ..models import ExchangeRecord

# name → what it holds; the command's --help and the README list these.
EXPORT_FIELDS: dict[str, str] = {
    "time": "when the attempt was made (ISO 8601, UTC)",
    "id": "the record's id in this database",
    "record_id": "the attempt's UUID (unique across spool replays; null on rows older than it)",
    "tenant": "the tenant's slug",
    "endpoint": "raw, rfc8693 or api (the endpoint called)",
    "decision": "allowed or denied",
    "status": "the HTTP status answered",
    "error_code": "the OAuth-style error code (null when allowed)",
    "reason": "why it was refused, for operators (null when allowed)",
    "issuer_id": "the tenant's upstream issuer id",
    "rule": "the name of the rule that decided",
    "upstream_iss": "the upstream token's iss",
    "upstream_sub": "its sub",
    "upstream_jti": "its jti",
    "upstream_aud": "its aud (a string or a list)",
    "issued_jti": "the emitted token's jti",
    "issued_kid": "the kid that signed it",
    "issued_sub": "its sub",
    "issued_aud": "its aud",
    "issued_exp": "its expiry (ISO 8601, UTC)",
    "issued_claims": "its claims (an object)",
    "client_address": "the caller's address",
}

CHUNK = 2000  # rows per database round trip while streaming


def _time(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _text(value: str) -> str | None:
    return value or None


def audit_record_export(record: ExchangeRecord) -> dict[str, Any]:
    """The exported object of one record: ``EXPORT_FIELDS``, in order (a test holds them equal)."""
    return {
        "time": _time(record.created_at),
        "id": record.pk,
        "record_id": str(record.record_id) if record.record_id else None,
        "tenant": record.tenant.slug,
        "endpoint": record.endpoint,
        "decision": record.decision,
        "status": record.status_code,
        "error_code": _text(record.error_code),
        "reason": _text(record.reason),
        "issuer_id": _text(record.issuer_ref),
        "rule": _text(record.rule_name),
        "upstream_iss": _text(record.upstream_iss),
        "upstream_sub": _text(record.upstream_sub),
        "upstream_jti": _text(record.upstream_jti),
        "upstream_aud": record.upstream_aud,
        "issued_jti": _text(record.issued_jti),
        "issued_kid": _text(record.issued_kid),
        "issued_sub": _text(record.issued_subject),
        "issued_aud": _text(record.issued_aud),
        "issued_exp": _time(record.issued_exp),
        "issued_claims": record.emitted_claims,
        "client_address": record.client_address or None,
    }


def audit_records_select(
    *, tenant: Tenant | None = None, since: datetime | None = None, until: datetime | None = None
) -> QuerySet[ExchangeRecord]:
    """Records of one tenant (or all), ``since`` ≤ time < ``until``."""
    records = ExchangeRecord.objects.all()
    if tenant is not None:
        records = records.filter(tenant=tenant)
    if since is not None:
        records = records.filter(created_at__gte=since)
    if until is not None:
        records = records.filter(created_at__lt=until)
    return records


def audit_records_jsonl(records: QuerySet[ExchangeRecord]) -> Iterator[str]:
    """One line per record, oldest first, streamed from the database (``.iterator()``): an
    export of millions of rows holds one chunk in memory, not the table."""
    ordered = records.select_related("tenant").order_by("created_at", "id")
    for record in ordered.iterator(chunk_size=CHUNK):
        yield json.dumps(audit_record_export(record), ensure_ascii=False, separators=(",", ":")) + "\n"
