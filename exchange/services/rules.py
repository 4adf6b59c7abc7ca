"""Rule order: a new rule goes last; ▲/▼ swap a rule with its neighbour (the admin's buttons) —
within its own set, the live rules or the candidate (shadow) rules."""

from __future__ import annotations

from django.db import transaction
from django.db.models import Max

from tenants.models import Tenant

from ..models import Rule

# --- rule order ------------------------------------------------------------------------------------

POSITION_STEP = 10


def rule_position_next(*, tenant: Tenant, shadow: bool = False) -> int:
    """A new rule goes last (of the live set, or of the candidate set)."""
    last = Rule.objects.filter(tenant=tenant, shadow=shadow).aggregate(last=Max("position"))["last"]
    return (last or 0) + POSITION_STEP


def rule_move(*, rule: Rule, direction: str) -> bool:
    """Swap ``rule`` with its neighbour above (``"up"``) or below (``"down"``) in its tenant's
    order, renumbering the tenant's rules 10, 20, 30 … so ties cannot make the order ambiguous.
    False when it is already first or last."""
    if direction not in {"up", "down"}:
        raise ValueError("direction is 'up' or 'down'")
    with transaction.atomic():
        Tenant.objects.select_for_update(no_key=True).filter(pk=rule.tenant_id).first()
        ordered = list(Rule.objects.filter(tenant_id=rule.tenant_id, shadow=rule.shadow).order_by("position", "id"))
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
