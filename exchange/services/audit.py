"""The audit of exchange attempts (docs/operations.md#audit): one record and one log line per attempt,
and retention. Never a raw token; hostile claim values are made storable, never a reason to lose
the record."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Max

from tenants.models import Tenant

from .. import timeline
from ..ablation import off
from ..audit.partitions import audit_partitions_ahead, audit_partitions_drop
from ..audit.writer import record_write
from ..core import audit_compact
from ..core.errors import ExchangeError
from ..core.values import IssuerSnapshot, MintedToken, ParsedToken
from ..metrics import exchange_observed
from ..models import AuditDecision, AuditRollup, ExchangeRecord

logger = logging.getLogger("jwtex.exchange")


@dataclass
class Attempt:
    """What the audit record will say about one attempt; filled in as the pipeline advances."""

    tenant_id: int
    tenant_slug: str
    endpoint: str
    client_address: str | None
    started: datetime
    issuer: IssuerSnapshot | None = None
    parsed: ParsedToken | None = None
    rule_id: int | None = None
    rule_name: str = ""
    mapper: Any = None  # the mapper call of a mapper rule (exchange.services.mapper.MapperCall)
    shadow: dict[str, Any] | None = None  # what the candidate rules would have done, if different
    claims: Mapping[str, Any] | None = None  # the verified claims, for a tenant that keeps them

    def decided_by(self, *, rule_id: int | None, rule_name: str) -> None:
        if rule_name:
            self.rule_id, self.rule_name = rule_id, rule_name

    def mapper_called(self, call: Any) -> None:
        self.mapper = call


def _audit_safe(value: Any) -> Any:
    """``value`` with every NUL replaced: PostgreSQL text and jsonb refuse U+0000, and a
    token carrying one in its (unverified) ``sub`` must not make its attempt go unaudited."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, list):
        return [_audit_safe(item) for item in value]
    if isinstance(value, dict):
        return {_audit_safe(key): _audit_safe(item) for key, item in value.items()}
    return value


def _clip(value: Any, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _upstream_fields(parsed: ParsedToken | None) -> dict[str, Any]:
    claims: Mapping[str, Any] = parsed.claims if parsed is not None else {}
    aud = claims.get("aud")
    if isinstance(aud, list):
        aud = [a[:255] for a in aud[:10] if isinstance(a, str)]
    elif not isinstance(aud, str):
        aud = None
    return {
        "upstream_iss": _clip(claims.get("iss"), 512),
        "upstream_sub": _clip(claims.get("sub"), 512),
        "upstream_jti": _clip(claims.get("jti"), 256),
        "upstream_aud": aud,
    }


def attempt_record(attempt: Attempt, *, minted: MintedToken | None = None, error: ExchangeError | None = None) -> bool:
    """Make the attempt's audit record durable and log it (allowed with ``minted``, else denied by
    ``error``). False when the record could be made durable nowhere (database and spool both
    failed): then no token may be issued (docs/operations.md#no-token-without-its-record). Denied attempts
    are recorded the same way."""
    if off("audit-record"):  # a benchmark's (exchange/ablation.py)
        attempt_log(attempt, minted=minted, error=error)
        return True
    fields: dict[str, Any] = {
        "tenant_id": attempt.tenant_id,
        "created_at": attempt.started,
        "endpoint": attempt.endpoint,
        "issuer_ref": attempt.issuer.issuer_id if attempt.issuer else "",
        "rule_name": attempt.rule_name[:200],
        "client_address": attempt.client_address,
    }
    upstream = _upstream_fields(attempt.parsed)
    fields.update(upstream)
    if attempt.mapper is not None:
        fields.update(
            mapper_outcome=attempt.mapper.outcome or "failed",
            mapper_latency_ms=attempt.mapper.latency_ms,
            mapper_error=attempt.mapper.error[:500],
        )
    if attempt.shadow is not None:
        fields["shadow"] = attempt.shadow
    if attempt.claims is not None:
        fields["upstream_claims"] = dict(attempt.claims)
    if minted is not None:
        fields.update(_issued_fields(minted, upstream_sub=upstream["upstream_sub"]))
    else:
        assert error is not None
        fields.update(
            decision=AuditDecision.DENIED, status_code=error.status, error_code=error.code, reason=error.reason[:2000]
        )
    record = {name: _audit_safe(value) for name, value in fields.items()}
    timeline.mark("audit record built")
    durable = True if off("audit-write") else record_write(record)
    timeline.mark("audit record durable")
    if not durable:
        logger.error(
            "audit record lost", extra={"jwtex": {"tenant": attempt.tenant_slug, "issued": minted is not None}}
        )
    attempt_log(attempt, minted=minted, error=error, upstream=upstream)
    return durable


def _issued_fields(minted: MintedToken, *, upstream_sub: str) -> dict[str, Any]:
    """The emitted token's columns, stored compactly (``exchange.core.audit_compact``): an issued
    subject equal to the upstream one is not repeated, nor are the claims the columns hold."""
    subject, audience, claims = minted.subject[:512], minted.audience[:255], dict(minted.claims)
    fields: dict[str, Any] = {
        "decision": AuditDecision.ALLOWED,
        "status_code": 200,
        "issued_jti": minted.jti,
        "issued_kid": minted.kid,
        "issued_sub": audit_compact.issued_sub_stored(
            decision="allowed", issued_sub=subject, upstream_sub=upstream_sub
        ),
        "issued_aud": audience,
        "issued_exp": datetime.fromtimestamp(minted.expires_at, UTC),
    }
    columns = {"subject": subject, "audience": audience, "expires_at": minted.expires_at, "jti": minted.jti}
    if audit_compact.compactable(claims, **columns):
        fields["issued_claims_compact"] = audit_compact.claims_compact(claims)
    else:
        fields["issued_claims"] = claims
    return fields


def attempt_log(
    attempt: Attempt,
    *,
    minted: MintedToken | None = None,
    error: ExchangeError | None = None,
    upstream: dict[str, Any] | None = None,
) -> None:
    if not off("metrics"):  # a benchmark's switch (exchange/ablation.py)
        exchange_observed(
            tenant=attempt.tenant_slug,
            endpoint=attempt.endpoint,
            decision="allowed" if minted is not None else "denied",
            error="" if error is None else error.code,
            seconds=max(time.time() - attempt.started.timestamp(), 0.0),
        )
    if off("exchange-log"):
        return
    if upstream is None:
        upstream = _upstream_fields(attempt.parsed)
    fields = {
        "event": "exchange",
        "tenant": attempt.tenant_slug,
        "endpoint": attempt.endpoint,
        "issuer": attempt.issuer.issuer_id if attempt.issuer else None,
        "rule": attempt.rule_name or None,
        "decision": "allowed" if minted is not None else "denied",
        "client_address": attempt.client_address,
        "upstream_sub": upstream["upstream_sub"] or None,
        "upstream_jti": upstream["upstream_jti"] or None,
    }
    if attempt.mapper is not None:
        fields.update(mapper=attempt.mapper.outcome or "failed", mapper_ms=attempt.mapper.latency_ms)
    if minted is not None:
        fields.update(issued_jti=minted.jti, issued_kid=minted.kid, issued_exp=minted.expires_at)
        logger.info("exchange allowed", extra={"jwtex": fields})
    else:
        fields.update(error=error.code, status=error.status, reason=error.reason)
        logger.info("exchange denied", extra={"jwtex": fields})
    timeline.mark("logged")


# --- retention ---------------------------------------------------------------------------------


def _day(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def audit_retention_sweep(*, now: datetime) -> dict[str, list[str]]:
    """The audit table's days (PostgreSQL partitions): the coming week's are made, and those past
    every tenant's retention dropped whole (docs/scale.md#retention-at-volume: no long DELETE). A
    day goes once the longest retention has passed its end, so a record is kept at least its
    tenant's retention; ``exchange_records_purge`` removes, inside the remaining days, what a
    shorter one ends."""
    longest = Tenant.objects.aggregate(days=Max("audit_retention_days"))["days"]
    created = audit_partitions_ahead(now=now)
    dropped = [] if longest is None else audit_partitions_drop(before=_day(now - timedelta(days=longest)))
    return {"created": created, "dropped": dropped}


def exchange_records_purge(*, tenant: Tenant, now: datetime, batch_size: int = 5000) -> int:
    """Delete the tenant's records from before the start (UTC) of the day its retention reaches
    back to — a record is kept at least its retention, and gone within a day after — in small
    batches (no long lock on a busy table), and those hours' rollups: the overview's counts stay
    those of the records left. The day boundary is the partitions' too: for the tenants with the
    longest retention, ``audit_retention_sweep`` has dropped those days whole and nothing is left
    here to delete."""
    cutoff = _day(now - timedelta(days=tenant.audit_retention_days))
    deleted = 0
    while True:
        old = ExchangeRecord.objects.filter(tenant=tenant, created_at__lt=cutoff)
        ids = list(old.values_list("pk", flat=True)[:batch_size])
        if not ids:
            break
        deleted += old.filter(pk__in=ids).delete()[0]
    AuditRollup.objects.filter(tenant=tenant, hour__lt=cutoff).delete()
    return deleted
