"""``manage.py jwtex_audit_export`` (docs/operations.md#audit-export): JSON lines of audit records for a SIEM,
filtered by tenant and time, stable field names, no tokens, clear errors with nothing on stdout."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from exchange.models import ExchangeRecord
from exchange.services.audit_export import (
    EXPORT_FIELDS,
    audit_record_export,
    audit_records_jsonl,
)

pytestmark = pytest.mark.django_db

T0 = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


def export(*args: str) -> tuple[str, list[dict]]:
    out = StringIO()
    call_command("jwtex_audit_export", *args, stdout=out, stderr=StringIO())
    text = out.getvalue()
    return text, [json.loads(line) for line in text.splitlines()]


def _row(tenant, at: datetime, **fields) -> ExchangeRecord:
    defaults = {
        "endpoint": "raw",
        "decision": "denied",
        "status_code": 403,
        "error_code": "access_denied",
        "reason": "no rule matched",
        "upstream_sub": f"sub-{tenant.slug}-{at:%H%M}",
    }
    return ExchangeRecord.objects.create(tenant=tenant, created_at=at, **{**defaults, **fields})


@pytest.fixture
def rows(tenant, other_tenant):
    return [
        _row(tenant, T0 - timedelta(days=1)),
        _row(tenant, T0),
        _row(tenant, T0 + timedelta(hours=1, microseconds=5)),
        _row(other_tenant, T0 + timedelta(minutes=30)),
        _row(tenant, T0 + timedelta(days=1)),
    ]


def _exchange(client, tenant, token: str):
    return client.post(f"/t/{tenant.slug}/exchange?issuerId=ci", data=token, content_type="application/jwt")


def test_real_exchanges_export_one_object_per_line_with_the_documented_fields_and_no_token(
    client, tenant, issuer, allow_rule, upstream, signing_key
):
    upstream_token = upstream.mint()
    allowed = _exchange(client, tenant, upstream_token)
    denied = _exchange(client, tenant, upstream.mint(ref="refs/heads/feature"))
    assert (allowed.status_code, denied.status_code) == (200, 403)
    issued = allowed.content.decode()
    assert issued.startswith("eyJ")

    text, records = export()

    assert text.endswith("\n") and len(text.splitlines()) == 2 == len(records)
    assert "eyJ" not in text and issued not in text and upstream_token not in text  # never a token
    for record in records:
        assert list(record) == list(EXPORT_FIELDS)  # always every field, in the documented order
    first, second = records
    assert first["decision"] == "allowed" and second["decision"] == "denied"  # oldest first
    row = ExchangeRecord.objects.get(decision="allowed")
    assert first["time"] == row.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert first["issued_exp"].endswith("Z") and first["issued_jti"] == row.issued_jti
    assert first["tenant"] == "acme" and first["issuer_id"] == "ci" and first["rule"] == "octo-org main"
    assert first["status"] == 200 and first["error_code"] is None and first["reason"] is None
    assert first["issued_claims"]["https://aws.amazon.com/tags"]["principal_tags"]["repository"] == [
        "octo-org/octo-repo"
    ]
    assert second["status"] == 403 and second["error_code"] == "access_denied" and "no rule matched" in second["reason"]
    assert second["issued_jti"] is None and second["upstream_sub"] == row.upstream_sub


def test_every_documented_field_is_exported_and_nothing_else(tenant):
    record = _row(tenant, T0)
    assert list(audit_record_export(record)) == list(EXPORT_FIELDS)


def test_tenant_and_time_filters(rows):
    _, records = export("--tenant", "acme")
    assert [r["id"] for r in records] == [rows[0].pk, rows[1].pk, rows[2].pk, rows[4].pk]
    assert {r["tenant"] for r in records} == {"acme"}

    # --since is inclusive, --until exclusive; an offset is converted to UTC, a naive time is UTC.
    _, records = export("--since", "2025-06-01T12:00:00Z", "--until", "2025-06-01T13:00:00.000005")
    assert [r["id"] for r in records] == [rows[1].pk, rows[3].pk]
    _, records = export("--since", "2025-06-01T14:00:00+02:00", "--until", "2025-06-02", "--tenant", "acme")
    assert [r["id"] for r in records] == [rows[1].pk, rows[2].pk]
    _, records = export("--since", "2025-06-02")  # a date is its midnight, UTC
    assert [r["id"] for r in records] == [rows[4].pk]
    text, records = export("--tenant", "globex", "--until", "2025-06-01T12:00:00Z")
    assert text == "" and records == []


def test_records_stream_in_chunks(tenant, monkeypatch):
    import exchange.services.audit_export as module

    monkeypatch.setattr(module, "CHUNK", 3)
    ExchangeRecord.objects.bulk_create(
        [
            ExchangeRecord(
                tenant=tenant, created_at=T0 + timedelta(seconds=n), endpoint="api", decision="allowed", status_code=200
            )
            for n in range(10)
        ]
    )
    lines = audit_records_jsonl(ExchangeRecord.objects.all())
    assert not isinstance(lines, list)  # a generator: nothing is read before it is consumed
    times = [json.loads(line)["time"] for line in lines]
    assert times == sorted(times) and len(times) == 10


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "--since 'yesterday' is not an ISO 8601 date or time"),
        (["--until", "2025-13-01"], "--until '2025-13-01' is not an ISO 8601 date or time"),
        (["--since", "2025-06-02", "--until", "2025-06-01"], "is not before --until"),
        (["--tenant", "nope"], "unknown tenant 'nope'"),
    ],
)
def test_errors_are_clear(rows, args, message):
    out = StringIO()
    with pytest.raises(CommandError, match=message):
        call_command("jwtex_audit_export", *args, stdout=out, stderr=StringIO())
    assert out.getvalue() == ""


@pytest.mark.parametrize("args", [["--since", "not-a-date"], ["--tenant", "nope"]])
def test_from_the_command_line_an_error_exits_non_zero_with_nothing_on_stdout(rows, args, capsys, monkeypatch):
    from django.core.management import base

    from exchange.management.commands.jwtex_audit_export import Command

    # run_from_argv closes every connection when it ends; the test's transaction must live on.
    monkeypatch.setattr(base.connections, "close_all", lambda: None)
    with pytest.raises(SystemExit) as exit_:
        Command().run_from_argv(["manage.py", "jwtex_audit_export", "--skip-checks", *args])
    captured = capsys.readouterr()
    assert exit_.value.code == 1
    assert captured.out == ""
    assert captured.err.startswith("CommandError: ")


def test_the_help_documents_every_field():
    from exchange.management.commands.jwtex_audit_export import Command

    text = Command().create_parser("manage.py", "jwtex_audit_export").format_help()
    for name in EXPORT_FIELDS:
        assert f"\n  {name} " in text, name
    assert "ISO 8601" in text and "No token" in text
