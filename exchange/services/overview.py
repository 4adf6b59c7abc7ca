"""Selectors behind the admin's tenant overview page (no HTTP here, no writes).

The traffic, the 24 h counts and the top denials read the audit rollups (``AuditRollup``: a row
per tenant, hour, decision, error code and rule), never the records: a few hundred rows however
busy the tenant (docs/scale.md#rollups). So they count whole hours (UTC): "the last 24 h" is the current hour
and the 23 before it, and the audit list's links ask for exactly those records."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Max, Q, Sum
from django.utils.safestring import SafeString, mark_safe

from tenants.models import Tenant

from ..conf import jwtex_settings
from ..console.aws_setup import AwsSetup, aws_setup_render
from ..console.charts import (
    DayTotal,
    HourBucket,
    daily_totals,
    traffic_chart_svg,
    traffic_summary,
)
from ..console.ci_client_setup import CiClientSnippets, ci_client_snippets_render
from ..console.ci_setup import CiSnippets, ci_snippets_render
from ..console.presets import preset_for_issuer
from ..core.jwks import kids_of
from ..models import (
    PUBLISHED_KEY_STATES,
    AuditDecision,
    AuditRollup,
    Effect,
    Issuer,
    Rule,
    SigningKey,
)
from ..protocol import jwks_uri
from ..publish.documents import tenant_issuer_url
from ..upstream.issuer_keys import max_staleness

TRAFFIC_DAYS = 7
TOP_DENIALS = 5


def _duration(seconds: int) -> str:
    """``5,400 s (1 h 30 min)``: the exact figure, and one a reader takes in at a glance."""
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if days:
        rough = f"{days} d {hours % 24} h"
    elif hours:
        rough = f"{hours} h {minutes % 60} min"
    else:
        rough = f"{minutes} min" if minutes else "under a minute"
    return f"{seconds:,} s ({rough})"


@dataclass(frozen=True)
class KeySetAge:
    """How old an upstream issuer's key set is: seconds since it was last fetched (or confirmed
    by a 304) and since its keys last changed; a static JWKS has neither."""

    static: bool
    fetched_seconds: int | None
    changed_seconds: int | None

    @property
    def fetched_text(self) -> str:
        return "never" if self.fetched_seconds is None else _duration(self.fetched_seconds) + " ago"

    @property
    def changed_text(self) -> str:
        return "not recorded" if self.changed_seconds is None else _duration(self.changed_seconds) + " ago"


def key_set_age(issuer: Issuer, *, now: datetime) -> KeySetAge:
    if issuer.static_jwks is not None:
        return KeySetAge(True, None, None)

    def since(moment: datetime | None) -> int | None:
        return None if moment is None else max(0, int((now - moment).total_seconds()))  # clocks may disagree

    return KeySetAge(False, since(issuer.jwks_fetched_at), since(issuer.jwks_changed_at))


@dataclass(frozen=True)
class IssuerHealth:
    issuer: Issuer
    status: str  # "ok" | "static" | "stale" | "failing" | "never fetched" | "disabled"
    kids: tuple[str, ...]
    detail: str
    preset_label: str | None
    age: KeySetAge | None = None

    @property
    def healthy(self) -> bool:
        return self.status in {"ok", "static"}


@dataclass(frozen=True)
class Traffic:
    """Exchanges per hour over the last ``TRAFFIC_DAYS`` days, the current hour last."""

    buckets: list[HourBucket]
    svg: SafeString
    summary: str
    days: list[DayTotal]


@dataclass(frozen=True)
class DenialGroup:
    """Denied attempts of one error code decided by one rule (``rule_name`` empty: no rule
    decided, e.g. a token that did not verify or no rule matched)."""

    error_code: str
    rule_name: str
    count: int
    last_seen: datetime
    latest_reason: str  # the most recent attempt's reason: its values are that attempt's


@dataclass(frozen=True)
class TenantOverview:
    tenant: Tenant
    issuer_url: str
    discovery_url: str
    jwks_url: str
    published_keys: list[SigningKey]
    issuers: list[IssuerHealth]
    allowed_24h: int
    denied_24h: int
    since_24h: datetime
    traffic: Traffic
    top_denials: list[DenialGroup]
    audiences: list[str]
    tag_keys: list[str]
    aws: AwsSetup
    ci: CiSnippets  # the curl recipe: "without the client"
    ci_client: CiClientSnippets  # jwtex's GitHub Action and GitLab component


def issuer_health(issuer: Issuer, *, now: datetime) -> IssuerHealth:
    return replace(_issuer_status(issuer, now=now), age=key_set_age(issuer, now=now))


def _issuer_status(issuer: Issuer, *, now: datetime) -> IssuerHealth:
    preset = preset_for_issuer(issuer.issuer, has_static_jwks=issuer.static_jwks is not None)
    label = preset.label if preset else None
    if not issuer.enabled:
        return IssuerHealth(issuer, "disabled", (), "not accepting tokens", label)
    if issuer.static_jwks is not None:
        return IssuerHealth(issuer, "static", kids_of(issuer.static_jwks), "static JWKS: nothing is fetched", label)
    kids = kids_of(issuer.jwks)
    usable = bool(kids) and issuer.jwks_fetched_at is not None and now - issuer.jwks_fetched_at <= max_staleness()
    if issuer.jwks_consecutive_failures:
        detail = f"{issuer.jwks_consecutive_failures} failed refresh(es) in a row: {issuer.jwks_last_error}"
        if usable:
            detail += " — still using the last good set"
        return IssuerHealth(issuer, "failing", kids, detail, label)
    if not kids or issuer.jwks_fetched_at is None:
        return IssuerHealth(
            issuer, "never fetched", (), "keys are fetched on the first exchange or the next sweep", label
        )
    if not usable:
        return IssuerHealth(
            issuer, "stale", kids, "the stored set is too old to be used; it is refetched on demand", label
        )
    if issuer.jwks_expires_at is not None and issuer.jwks_expires_at <= now:
        return IssuerHealth(issuer, "ok", kids, "refresh due (the last good set is still used)", label)
    return IssuerHealth(issuer, "ok", kids, f"fetched {issuer.jwks_fetched_at:%Y-%m-%d %H:%M:%S} UTC", label)


def tenant_audiences(*, tenant: Tenant) -> list[str]:
    """Every audience a token of this tenant may carry: the default and those rules allow."""
    audiences = [tenant.default_audience]
    for audience, extra in Rule.objects.filter(
        tenant=tenant, enabled=True, shadow=False, effect=Effect.ALLOW
    ).values_list("audience", "audiences"):
        for value in [audience, *(extra or [])]:
            if value and value not in audiences:
                audiences.append(value)
    return audiences


def tenant_session_tag_keys(*, tenant: Tenant) -> list[str]:
    """Session tag keys the tenant's enabled allow rules emit, in rule order, once each
    (AWS tag keys ignore case)."""
    keys: list[str] = []
    seen: set[str] = set()
    for tags in (
        Rule.objects.filter(tenant=tenant, enabled=True, shadow=False, effect=Effect.ALLOW)
        .order_by("position", "id")
        .values_list("session_tags", flat=True)
    ):
        for key in tags or {}:
            if isinstance(key, str) and key.casefold() not in seen:
                seen.add(key.casefold())
                keys.append(key)
    return keys


def tenant_sets_source_identity(*, tenant: Tenant) -> bool:
    """Whether one of the tenant's enabled allow rules sets a source identity (docs/rules.md#source-identity)."""
    return (
        Rule.objects.filter(tenant=tenant, enabled=True, shadow=False, effect=Effect.ALLOW)
        .exclude(source_identity="")
        .exists()
    )


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def since_24h_of(now: datetime) -> datetime:
    """The start of "the last 24 h": the current hour and the 23 before it."""
    return hour_of(now) - timedelta(hours=23)


def tenant_traffic_get(*, tenant: Tenant, now: datetime) -> list[HourBucket]:
    """Allowed and denied exchanges per hour (UTC) for the last ``TRAFFIC_DAYS`` days, the
    current (partial) hour last, empty hours included: ONE aggregate query over the tenant's
    rollups of those hours (their shards added up)."""
    end = hour_of(now) + timedelta(hours=1)
    hours = [end - timedelta(hours=n) for n in range(TRAFFIC_DAYS * 24, 0, -1)]
    rows = (
        AuditRollup.objects.filter(tenant=tenant, hour__gte=hours[0], hour__lt=end)
        .values("hour")
        .annotate(
            allowed=Sum("count", filter=Q(decision=AuditDecision.ALLOWED), default=0),
            denied=Sum("count", filter=Q(decision=AuditDecision.DENIED), default=0),
        )
        .order_by("hour")
    )
    # Aware datetimes hash by the instant they name, whatever tzinfo object the backend returns.
    counts = {row["hour"]: (row["allowed"], row["denied"]) for row in rows}
    return [HourBucket(hour, *counts.get(hour, (0, 0))) for hour in hours]


def tenant_traffic_render(*, tenant: Tenant, buckets: list[HourBucket]) -> Traffic:
    svg = traffic_chart_svg(buckets, title=f"Exchanges per hour of tenant {tenant.slug}, last {TRAFFIC_DAYS} days")
    # traffic_chart_svg escapes every text it writes (tenant slug, labels, counts).
    return Traffic(buckets, mark_safe(svg), traffic_summary(buckets), daily_totals(buckets))


def tenant_top_denials_get(*, tenant: Tenant, since: datetime, limit: int = TOP_DENIALS) -> list[DenialGroup]:
    """The most frequent kinds of denial from the hour of ``since`` on, most frequent first.

    Grouped by (error_code, rule_name), not by the reason text: a reason carries the attempt's
    values (an ``exp``, a ``kid``, an ``iss``, a rule's output), so grouping by it would make
    nearly every attempt a group of its own, and cutting the values out in SQL needs a regular
    expression replace that SQLite does not have (in Python, it would read every denied row of
    the day: unbounded under a flood of bad tokens). The error code and the deciding
    rule are the parts that do not vary, they group on both databases in one GROUP BY, and the
    audit list filters by both exactly (``error_code__exact``, ``rule_name``). Each group shows
    its latest reason as an example: the rollups keep each hour's (one small query per group
    shown, at most ``limit``).
    """
    denied = AuditRollup.objects.filter(tenant=tenant, decision=AuditDecision.DENIED, hour__gte=hour_of(since))
    groups = (
        denied.values("error_code", "rule_name")
        .annotate(count=Sum("count"), last_seen=Max("last_seen"))
        .order_by("-count", "-last_seen", "error_code", "rule_name")[:limit]
    )
    result = []
    for group in groups:
        latest = (
            denied.filter(error_code=group["error_code"], rule_name=group["rule_name"])
            .order_by("-last_seen")
            .values_list("last_reason", flat=True)
            .first()
        )
        result.append(
            DenialGroup(group["error_code"], group["rule_name"], group["count"], group["last_seen"], latest or "")
        )
    return result


def _issuer_for(issuers: list[Issuer], preset_keys: set[str]) -> Issuer | None:
    for issuer in issuers:
        preset = preset_for_issuer(issuer.issuer, has_static_jwks=issuer.static_jwks is not None)
        if issuer.enabled and preset is not None and preset.key in preset_keys:
            return issuer
    return None


def tenant_overview_get(*, tenant: Tenant, now: datetime) -> TenantOverview:
    issuer_url = jwtex_settings.issuer_url(tenant.slug)
    issuers = list(Issuer.objects.filter(tenant=tenant).order_by("issuer_id"))
    since_24h = since_24h_of(now)
    counts = AuditRollup.objects.filter(tenant=tenant, hour__gte=since_24h).aggregate(
        allowed=Sum("count", filter=Q(decision=AuditDecision.ALLOWED)),
        denied=Sum("count", filter=Q(decision=AuditDecision.DENIED)),
    )
    audiences = tenant_audiences(tenant=tenant)
    tag_keys = tenant_session_tag_keys(tenant=tenant)
    aws = aws_setup_render(
        tenant_slug=tenant.slug,
        # AWS trusts the iss of the tokens: the published issuer URL when there is one
        # (docs/endpoints.md#published-issuer-url); CI jobs still exchange at jwtex's own URL.
        issuer_url=tenant_issuer_url(tenant),
        audiences=audiences,
        tag_keys=tag_keys,
        # The tenant's optional AWS values (validated on save); empty ones leave the examples.
        account_ids=tenant.aws_account_ids if isinstance(tenant.aws_account_ids, list) else [],
        region=tenant.aws_region,
        role_name=tenant.aws_role_name,
        source_identity=tenant_sets_source_identity(tenant=tenant),
    )
    github = _issuer_for(issuers, {"github", "github-enterprise"})
    gitlab = _issuer_for(issuers, {"gitlab", "gitlab-self-managed"})
    platforms = _ci_platforms(github, gitlab)
    ci = ci_snippets_render(issuer_url=issuer_url, role_arns=aws.role_arns, region=aws.region, **platforms)
    return TenantOverview(
        tenant=tenant,
        issuer_url=issuer_url,
        discovery_url=f"{issuer_url}/.well-known/openid-configuration",
        jwks_url=jwks_uri(issuer_url),
        published_keys=list(
            SigningKey.objects.filter(tenant=tenant, state__in=PUBLISHED_KEY_STATES).order_by("created_at", "id")
        ),
        issuers=[issuer_health(i, now=now) for i in issuers],
        allowed_24h=counts["allowed"] or 0,
        denied_24h=counts["denied"] or 0,
        since_24h=since_24h,
        traffic=tenant_traffic_render(tenant=tenant, buckets=tenant_traffic_get(tenant=tenant, now=now)),
        top_denials=tenant_top_denials_get(tenant=tenant, since=since_24h),
        audiences=audiences,
        tag_keys=tag_keys,
        aws=aws,
        ci=ci,
        ci_client=ci_client_snippets_render(
            public_url=jwtex_settings.public_url,
            tenant_slug=tenant.slug,
            role_arns=aws.role_arns,
            region=aws.region,
            action=jwtex_settings.ci_action,
            component=jwtex_settings.ci_component,
            **platforms,
        ),
    )


def _ci_platforms(github: Issuer | None, gitlab: Issuer | None) -> dict[str, Any]:
    """The tenant's GitHub and GitLab issuers as both kinds of CI jobs take them: the id to
    exchange with, and the audiences it accepts (to say when it does not accept the job's)."""
    return {
        "github_issuer_id": github.issuer_id if github else None,
        "github_audiences": list(github.audiences or []) if github else None,
        "gitlab_issuer_id": gitlab.issuer_id if gitlab else None,
        "gitlab_audiences": list(gitlab.audiences or []) if gitlab else None,
    }
