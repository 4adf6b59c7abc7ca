"""What is live at each tenant's published issuer URL, for the admin and /metrics
(docs/endpoints.md#published-issuer-url): a selector, it writes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tenants.models import Tenant

from ..models import IssuerPublication, KeyState, SigningKey
from .documents import tenant_jwks


@dataclass(frozen=True)
class PublicationStatus:
    tenant: str
    url: str
    served: tuple[str, ...]  # kids of the JWKS jwtex serves (and should have published)
    live: tuple[str, ...]  # kids confirmed live at the published URL by the last read-back
    active: str | None  # the kid in state active
    published_at: datetime | None
    checked_at: datetime | None
    failures: int
    error: str
    next_attempt_at: datetime | None

    @property
    def alarm(self) -> bool:
        """The published key set differs from the one jwtex serves (and signs with), or the last
        attempt failed: an operator should look."""
        return set(self.live) != set(self.served) or bool(self.error)

    @property
    def active_live(self) -> bool:
        """The signing key is confirmed live: otherwise the tenant's exchanges answer 503."""
        return self.active is not None and self.active in self.live


def publication_status_get(*, tenant: Tenant) -> PublicationStatus | None:
    """None for a tenant without a published issuer URL."""
    if not tenant.published_issuer_url:
        return None
    row = IssuerPublication.objects.filter(tenant=tenant).first()
    live = IssuerPublication.live_keys(tenant)
    served = tuple(k["kid"] for k in tenant_jwks(tenant=tenant)["keys"])
    active = SigningKey.objects.filter(tenant=tenant, state=KeyState.ACTIVE).values_list("kid", flat=True).first()
    current = row is not None and row.url == tenant.published_issuer_url
    return PublicationStatus(
        tenant=tenant.slug,
        url=tenant.published_issuer_url,
        served=served,
        live=tuple(sorted(live)),
        active=active,
        published_at=row.published_at if current else None,
        checked_at=row.checked_at if current else None,
        failures=row.failures if row is not None else 0,
        error=row.error if row is not None else "",
        next_attempt_at=row.next_attempt_at if row is not None else None,
    )


def publication_statuses_list() -> list[PublicationStatus]:
    tenants = Tenant.objects.exclude(published_issuer_url="").order_by("slug")
    return [status for tenant in tenants if (status := publication_status_get(tenant=tenant)) is not None]
