"""A tenant's issuer documents, as jwtex serves them under ``/t/T/`` and publishes them
(docs/endpoints.md#tenant-issuer-endpoints): one rendering for both, so they never differ."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from tenants.models import Tenant

from .. import protocol
from ..conf import jwtex_settings
from ..core.publication import jwks_capped, published_folder, published_url_problem
from ..models import PUBLISHED_KEY_STATES, IssuerPublication, SigningKey


def tenant_issuer_url(tenant: Tenant) -> str:
    """The ``iss`` of the tenant's tokens (its published issuer URL when it has one)."""
    return jwtex_settings.tenant_issuer_url(slug=tenant.slug, published_issuer_url=tenant.published_issuer_url)


def tenant_jwks(*, tenant: Tenant) -> dict[str, Any]:
    """The keys in state next, active and retiring, oldest first, within IAM's 100 keys of a type."""
    keys = SigningKey.objects.filter(tenant=tenant, state__in=PUBLISHED_KEY_STATES).order_by("created_at", "id")
    return {"keys": jwks_capped(list(keys.values_list("public_jwk", "state")))}


def tenant_discovery(*, tenant: Tenant, jwks: dict[str, Any]) -> dict[str, Any]:
    algorithms = sorted({k["alg"] for k in jwks["keys"]}) or [tenant.signing_algorithm]
    served = jwtex_settings.issuer_url(tenant.slug)
    return protocol.discovery_document(issuer_url=tenant_issuer_url(tenant), algorithms=algorithms, served_url=served)


def tenant_live_keys(*, tenant: Tenant) -> dict[str, datetime] | None:
    """For a tenant with a published issuer URL: each key read back live there, with when it was
    first confirmed (None for a tenant without one: every published key may sign)."""
    return IssuerPublication.live_keys(tenant) if tenant.published_issuer_url else None


def published_url_problem_for(*, value: str, exclude_slugs: Collection[str] = ()) -> str | None:
    """Why ``value`` cannot be a tenant's published issuer URL, or None: the one check of the
    admin and ``jwtex_apply`` (docs/endpoints.md#published-issuer-url). Besides the URL's own rules,
    there must be somewhere to publish, and no other tenant (but those of ``exclude_slugs``: the
    tenant itself, the tenants of a file being applied) may publish to the same folder."""
    if not value:
        return None
    problem = published_url_problem(value, allow_insecure=jwtex_settings.allow_insecure_issuers)
    if problem:
        return problem
    if not jwtex_settings.publish_target:
        return "A published issuer URL needs JWTEX_PUBLISH_TARGET (where jwtex writes the documents); it is not set."
    folder = published_folder(value)
    others = Tenant.objects.exclude(published_issuer_url="").exclude(slug__in=list(exclude_slugs))
    for slug, url in others.values_list("slug", "published_issuer_url"):
        if published_folder(url) == folder:
            return f"Tenant {slug} already publishes to {folder}/ beneath the publish target: choose another path."
    return None
