"""Selectors behind the admin's tenant overview page (no HTTP here, no writes)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Q

from tenants.models import Tenant

from ..conf import jwtex_settings
from ..core.aws_setup import AwsSetup, CiSnippets, aws_setup_render, ci_snippets_render
from ..core.jwks import kids_of
from ..core.presets import preset_for_issuer
from ..models import PUBLISHED_KEY_STATES, Decision, Effect, ExchangeRecord, Issuer, Rule, SigningKey
from ..protocol import jwks_uri
from ..upstream.jwks import max_staleness


@dataclass(frozen=True)
class IssuerHealth:
    issuer: Issuer
    status: str  # "ok" | "static" | "stale" | "failing" | "never fetched" | "disabled"
    kids: tuple[str, ...]
    detail: str
    preset_label: str | None

    @property
    def healthy(self) -> bool:
        return self.status in {"ok", "static"}


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
    audiences: list[str]
    tag_keys: list[str]
    aws: AwsSetup
    ci: CiSnippets


def issuer_health(issuer: Issuer, *, now: datetime) -> IssuerHealth:
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
        return IssuerHealth(issuer, "never fetched", (), "keys are fetched on the first exchange or the next sweep", label)
    if not usable:
        return IssuerHealth(issuer, "stale", kids, "the stored set is too old to be used; it is refetched on demand", label)
    if issuer.jwks_expires_at is not None and issuer.jwks_expires_at <= now:
        return IssuerHealth(issuer, "ok", kids, "refresh due (the last good set is still used)", label)
    return IssuerHealth(issuer, "ok", kids, f"fetched {issuer.jwks_fetched_at:%Y-%m-%d %H:%M:%S} UTC", label)


def tenant_audiences(*, tenant: Tenant) -> list[str]:
    """Every audience a token of this tenant may carry: the default and those rules allow."""
    audiences = [tenant.default_audience]
    for audience, extra in Rule.objects.filter(tenant=tenant, enabled=True, effect=Effect.ALLOW).values_list(
        "audience", "audiences"
    ):
        for value in [audience, *(extra or [])]:
            if value and value not in audiences:
                audiences.append(value)
    return audiences


def tenant_session_tag_keys(*, tenant: Tenant) -> list[str]:
    """Session tag keys the tenant's enabled allow rules emit, in rule order, once each
    (AWS tag keys ignore case)."""
    keys: list[str] = []
    seen: set[str] = set()
    for tags in Rule.objects.filter(tenant=tenant, enabled=True, effect=Effect.ALLOW).order_by(
        "position", "id"
    ).values_list("session_tags", flat=True):
        for key in tags or {}:
            if isinstance(key, str) and key.casefold() not in seen:
                seen.add(key.casefold())
                keys.append(key)
    return keys


def _issuer_for(issuers: list[Issuer], preset_keys: set[str]) -> Issuer | None:
    for issuer in issuers:
        preset = preset_for_issuer(issuer.issuer, has_static_jwks=issuer.static_jwks is not None)
        if issuer.enabled and preset is not None and preset.key in preset_keys:
            return issuer
    return None


def tenant_overview_get(*, tenant: Tenant, now: datetime) -> TenantOverview:
    issuer_url = jwtex_settings.issuer_url(tenant.slug)
    issuers = list(Issuer.objects.filter(tenant=tenant).order_by("issuer_id"))
    counts = ExchangeRecord.objects.filter(tenant=tenant, created_at__gte=now - timedelta(hours=24)).aggregate(
        allowed=Count("id", filter=Q(decision=Decision.ALLOWED)),
        denied=Count("id", filter=Q(decision=Decision.DENIED)),
    )
    audiences = tenant_audiences(tenant=tenant)
    tag_keys = tenant_session_tag_keys(tenant=tenant)
    aws = aws_setup_render(
        tenant_slug=tenant.slug,
        issuer_url=issuer_url,
        audiences=audiences,
        tag_keys=tag_keys,
        # The tenant's optional AWS values (validated on save); empty ones leave the examples.
        account_ids=tenant.aws_account_ids if isinstance(tenant.aws_account_ids, list) else [],
        region=tenant.aws_region,
        role_name=tenant.aws_role_name,
    )
    github = _issuer_for(issuers, {"github", "github-enterprise"})
    gitlab = _issuer_for(issuers, {"gitlab", "gitlab-self-managed"})
    ci = ci_snippets_render(
        issuer_url=issuer_url,
        role_arns=aws.role_arns,
        region=aws.region,
        github_issuer_id=github.issuer_id if github else None,
        github_audiences=list(github.audiences or []) if github else None,
        gitlab_issuer_id=gitlab.issuer_id if gitlab else None,
        gitlab_audiences=list(gitlab.audiences or []) if gitlab else None,
    )
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
        audiences=audiences,
        tag_keys=tag_keys,
        aws=aws,
        ci=ci,
    )
