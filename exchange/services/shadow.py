"""Shadow rules (docs/operations.md#shadow-rules): the tenant's candidate rule set decides every exchange
beside the live set, over the same verified claims, with no effect on the answer and no mapper call (a mapper
rule of the candidate that matches is reported as "not evaluated"). When the two differ — in
the decision, the deciding rule, the subject, the audience or the session tags — the audit
record keeps what the candidate would have done (``shadow_outcome``).

A tenant without a candidate set does none of this: the runtime says so (``shadow_rules`` is
None) and the exchange never calls in here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Max, Min, Q, Sum

from tenants.models import Tenant

from ..core.aws import AWS_SOURCE_IDENTITY_CLAIM, AWS_TAGS_CLAIM
from ..core.errors import ExchangeError
from ..core.rules import engine
from ..core.rules.compiled import Delegation
from ..core.values import Decision
from ..models import AuditRollup, ExchangeRecord, RevisionSource, Rule
from ..runtime import TenantRuntime, runtime_build
from .revisions import revision_actor, revision_actor_current

__all__ = [
    "REPORT_KINDS",
    "outcome_of",
    "shadow_divergence",
    "shadow_report",
    "shadow_rules_discard",
    "shadow_replay",
    "shadow_rules_promote",
    "shadow_rules_start",
]

logger = logging.getLogger("jwtex.shadow")


def outcome_of(decided: Decision | ExchangeError | Delegation) -> dict[str, Any]:
    """A decision as the audit record keeps it (the same shape for the live and the candidate set)."""
    if isinstance(decided, Delegation):
        return {"decision": "not evaluated", "rule": decided.rule.name, "why": "a mapper rule (not called in shadow)"}
    if isinstance(decided, ExchangeError):
        return {
            "decision": "denied",
            "rule": decided.rule_name or None,
            "error": decided.code,
            "reason": decided.reason,
        }
    return {
        "decision": "allowed",
        "rule": decided.rule_name,
        "subject": decided.subject,
        "audience": decided.audience,
        "session_tags": dict(decided.session_tags),
        **({"source_identity": decided.source_identity} if decided.source_identity is not None else {}),
    }


_COMPARED = ("decision", "rule", "subject", "audience", "session_tags", "source_identity")


def shadow_divergence(
    runtime: TenantRuntime,
    *,
    issuer_id: str,
    claims: Mapping[str, Any],
    audience: str | None,
    live: Decision | ExchangeError,
) -> dict[str, Any] | None:
    """What the candidate set would have done, with the fields where it differs from ``live``;
    None when it would have done the same (or there is no usable candidate set)."""
    if runtime.shadow_rules is None or runtime.shadow_error:
        return None
    try:
        decided: Decision | ExchangeError | Delegation = engine.compiled_rules_decide(
            runtime.shadow_rules,
            issuer_id=issuer_id,
            claims=claims,
            requested_audience=audience,
            default_audience=runtime.default_audience,
            max_lifetime=runtime.max_token_lifetime,
        )
    except ExchangeError as exc:
        decided = exc
    except Exception:  # the candidate never changes the answer, not even by failing
        logger.exception("shadow rules failed", extra={"jwtex": {"tenant": runtime.slug}})
        return None
    shadow, current = outcome_of(decided), outcome_of(live)
    differs = [name for name in _COMPARED if shadow.get(name) != current.get(name)]
    return {**shadow, "differs": differs, "tags_differ": "session_tags" in differs} if differs else None


# --- the candidate set in the admin ----------------------------------------------------------


def shadow_rules_start(*, tenant: Tenant) -> int:
    """A candidate set copied from the live rules (their issuers too), to edit; refused while the
    tenant has one. Returns how many rules were copied."""
    with transaction.atomic():
        Tenant.objects.select_for_update(no_key=True).filter(pk=tenant.pk).first()
        if Rule.objects.filter(tenant=tenant, shadow=True).exists():
            raise ValueError("This tenant already has candidate rules: promote or discard them first.")
        live = list(
            Rule.objects.filter(tenant=tenant, shadow=False).order_by("position", "id").prefetch_related("issuers")
        )
        for rule in live:
            issuers = list(rule.issuers.all())
            rule.pk, rule.id, rule.shadow = None, None, True
            rule._state.adding = True
            rule._prefetched_objects_cache = {}  # the copy's issuers are its own, not the original's
            rule.save()
            rule.issuers.set(issuers)
    return len(live)


def shadow_rules_promote(*, tenant: Tenant) -> int:
    """The candidate set becomes the live rules in one transaction (the live ones are deleted);
    one revision records it (source "promote", by whoever promotes). Returns how many rules are live now."""
    by = revision_actor_current().author
    with (
        revision_actor(author=by, source=RevisionSource.PROMOTE, note="candidate rules promoted"),
        transaction.atomic(),
    ):
        Tenant.objects.select_for_update(no_key=True).filter(pk=tenant.pk).first()
        candidates = list(Rule.objects.filter(tenant=tenant, shadow=True))
        if not candidates:
            raise ValueError("This tenant has no candidate rules to promote.")
        Rule.objects.filter(tenant=tenant, shadow=False).delete()
        for rule in candidates:
            rule.shadow = False
            rule.save(update_fields=["shadow", "updated_at"])
    return len(candidates)


def shadow_rules_discard(*, tenant: Tenant) -> int:
    with transaction.atomic():
        deleted = [rule.delete() for rule in Rule.objects.filter(tenant=tenant, shadow=True)]
    return len(deleted)


# The kinds overlap (a record can be "would now deny" and "different tags"); the audit rollups
# count each in its own column, by the same conditions (a test holds the two equal).
REPORT_KINDS = {
    "deny": ("would now deny", Q(decision="allowed", shadow__decision="denied")),
    "allow": ("would now allow", Q(decision="denied", shadow__decision="allowed")),
    "tags": ("different tags", Q(shadow__tags_differ=True)),
    "other": (
        "other differences",
        Q(shadow__decision="not evaluated")
        | (Q(decision="allowed", shadow__decision="allowed") & Q(shadow__tags_differ=False))
        | Q(decision="denied", shadow__decision="denied"),
    ),
}


def shadow_report(*, tenant: Tenant, now: datetime, kind: str | None = None, limit: int = 200) -> dict[str, Any]:
    """The last 24 h (the current hour and the 23 before it) of exchanges the candidate set would
    have decided differently: counts by kind, from the audit rollups, and the newest records (of
    ``kind``, if given), through the index of records with a divergence."""
    since = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    counts = AuditRollup.objects.filter(tenant=tenant, hour__gte=since).aggregate(
        total=Sum("shadow_count", default=0), **{key: Sum(f"shadow_{key}", default=0) for key in REPORT_KINDS}
    )
    total = counts.pop("total")
    recent = ExchangeRecord.objects.filter(tenant=tenant, created_at__gte=since, shadow__isnull=False)
    rows = recent.filter(REPORT_KINDS[kind][1]) if kind in REPORT_KINDS else recent
    return {
        "total": total,
        "counts": counts,
        "kind": kind,
        "labels": {k: v[0] for k, v in REPORT_KINDS.items()},
        "records": list(rows.order_by("-created_at", "-id")[:limit]),
        **_seen(tenant, since),
    }


def _seen(tenant: Tenant, since: datetime) -> dict[str, Any]:
    """Whether any exchange came since the candidate set started (its oldest rule; within the
    report's window), from the rollups: a group's ``last_seen`` at or after the start is one that
    did, exactly; ``seen`` counts from the start's hour (the rollups' grain)."""
    started = Rule.objects.filter(tenant=tenant, shadow=True).aggregate(at=Min("created_at"))["at"]
    if started is None:
        return {"started": None, "seen_any": False, "seen": 0, "seen_from": since}
    start = max(started, since)
    seen_from = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    seen = AuditRollup.objects.filter(tenant=tenant, hour__gte=seen_from).aggregate(
        count=Sum("count", default=0), last=Max("last_seen")
    )
    return {
        "started": started,
        "seen_any": seen["last"] is not None and seen["last"] >= start,
        "seen": seen["count"],
        "seen_from": seen_from,
    }


def _recorded_outcome(record: ExchangeRecord) -> dict[str, Any]:
    """What the live set decided for ``record``, in ``outcome_of``'s shape."""
    tags = ((record.emitted_claims or {}).get(AWS_TAGS_CLAIM) or {}).get("principal_tags") or {}
    identity = (record.emitted_claims or {}).get(AWS_SOURCE_IDENTITY_CLAIM)
    return {
        "decision": "allowed",
        "rule": record.rule_name or None,
        "subject": record.issued_subject,
        "audience": record.issued_aud,
        "session_tags": {key: values[0] for key, values in tags.items()},
        **({"source_identity": identity} if identity is not None else {}),
    }


def shadow_replay(*, tenant: Tenant, count: int, now: datetime) -> dict[str, Any]:
    """The candidate rules (or, without a candidate set, the live ones as they are now) over the
    verified claims of the tenant's last ``count`` allowed exchanges — only for a tenant that
    keeps them. No mapper is called and nothing is written."""
    if not tenant.keep_upstream_claims:
        raise ValueError("This tenant does not keep upstream claims in its audit records: nothing to replay.")
    runtime = runtime_build(tenant=tenant, now=now)
    rules = runtime.shadow_rules if runtime.shadow_rules is not None else runtime.rules
    records = list(
        ExchangeRecord.objects.filter(tenant=tenant, decision="allowed", upstream_claims__isnull=False).order_by(
            "-created_at", "-id"
        )[:count]
    )
    changed = []
    for record in records:
        try:
            decided: Any = engine.compiled_rules_decide(
                rules,
                issuer_id=record.issuer_ref,
                claims=record.upstream_claims,
                requested_audience=None,
                default_audience=runtime.default_audience,
                max_lifetime=runtime.max_token_lifetime,
            )
        except ExchangeError as exc:
            decided = exc
        replayed, recorded = outcome_of(decided), _recorded_outcome(record)
        differs = [name for name in _COMPARED if replayed.get(name) != recorded.get(name)]
        if differs:
            changed.append({"record": record, "replayed": replayed, "differs": differs})
    return {
        "replayed": len(records),
        "changed": changed,
        "candidate": runtime.shadow_rules is not None,
        "error": runtime.shadow_error if runtime.shadow_rules is not None else runtime.rules_error,
    }
