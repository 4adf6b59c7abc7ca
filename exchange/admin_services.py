"""Small services behind the admin's buttons: rule order, "fetch keys now".

The admin classes and views only parse the request and call these (CONVENTIONS §2).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import Max

from tenants.models import Tenant

from .models import Issuer, Rule
from .overview import jwks_kids
from .upstream import issuer_jwks_refresh

# --- rule order ------------------------------------------------------------------------------------

POSITION_STEP = 10


def rule_position_next(*, tenant: Tenant) -> int:
    """A new rule goes last."""
    last = Rule.objects.filter(tenant=tenant).aggregate(last=Max("position"))["last"]
    return (last or 0) + POSITION_STEP


def rule_move(*, rule: Rule, direction: str) -> bool:
    """Swap ``rule`` with its neighbour above (``"up"``) or below (``"down"``) in its tenant's
    order, renumbering the tenant's rules 10, 20, 30 … so ties cannot make the order ambiguous.
    False when it is already first or last."""
    if direction not in {"up", "down"}:
        raise ValueError("direction is 'up' or 'down'")
    with transaction.atomic():
        Tenant.objects.select_for_update().filter(pk=rule.tenant_id).first()
        ordered = list(Rule.objects.filter(tenant_id=rule.tenant_id).order_by("position", "id"))
        index = next(i for i, r in enumerate(ordered) if r.pk == rule.pk)
        other = index - 1 if direction == "up" else index + 1
        if not 0 <= other < len(ordered):
            return False
        ordered[index], ordered[other] = ordered[other], ordered[index]
        for number, item in enumerate(ordered, start=1):
            if item.position != number * POSITION_STEP:
                item.position = number * POSITION_STEP
                # save() (not update()) so the runtime caches hear about the new order (signals).
                item.save(update_fields=["position", "updated_at"])
    return True


# --- upstream keys ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchOutcome:
    ok: bool
    static: bool
    changed: bool
    kids: tuple[str, ...]
    error: str


def issuer_keys_fetch_now(*, issuer: Issuer, now: datetime) -> FetchOutcome:
    """Refresh the issuer's JWKS at once (waiting for a worker that is already at it) and say
    which keys are stored now, or why the fetch failed. A failure keeps the last good set."""
    if issuer.static_jwks is not None:
        return FetchOutcome(True, True, False, jwks_kids(issuer.static_jwks), "")
    changed = issuer_jwks_refresh(issuer=issuer, now=now, force=True, wait=True)
    current = Issuer.objects.get(pk=issuer.pk)
    failed = current.jwks_last_error_at is not None and current.jwks_last_error_at >= now and (
        current.jwks_fetched_at is None or current.jwks_fetched_at < now
    )
    if failed:
        return FetchOutcome(False, False, False, jwks_kids(current.jwks), current.jwks_last_error)
    return FetchOutcome(True, False, changed, jwks_kids(current.jwks), "")
