"""The candidate (shadow) rule set of a tenant in the admin (docs/operations.md#shadow-rules): start one from the live
rules, edit it with the ordinary rule editor, see what it would have changed in the last 24 h
(filtered: would now deny, would now allow, different tags), replay it over recent traffic,
then promote it to live in one step (a new revision) or discard it.

Auditors see; owners and operators change. A user without a role in the tenant gets 404.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from tenants.admin_mixins import CONFIGURE, VIEW, has_role, tenant_get_or_404

from ..services.shadow import (
    shadow_replay,
    shadow_report,
    shadow_rules_discard,
    shadow_rules_promote,
    shadow_rules_start,
)
from .views import page_context, role_require

ACTIONS = {
    "start": (
        shadow_rules_start,
        lambda n: f"Candidate set started: {_rules(n)} copied from the live rules. Edit them, then watch the report.",
    ),
    "promote": (
        shadow_rules_promote,
        lambda n: f"Promoted: the candidate {_rules(n)} {'is' if n == 1 else 'are'} the live rules now.",
    ),
    "discard": (shadow_rules_discard, lambda n: f"Discarded {_rules(n)}."),
}


def _rules(n: int) -> str:
    return f"{n} rule" if n == 1 else f"{n} rules"


def _rules_url(tenant, *, shadow: bool) -> str:
    return reverse("admin:exchange_rule_changelist") + f"?tenant__id__exact={tenant.pk}&shadow__exact={int(shadow)}"


def candidate_view(request, tenant_id, *, model_admin):
    """The candidate set's page: its rules, the 24 h report, the replay and the three buttons."""
    tenant = tenant_get_or_404(request, tenant_id, VIEW)
    kind = request.GET.get("kind")
    now = timezone.now()
    replay = None
    if request.GET.get("replay"):
        try:
            replay = shadow_replay(tenant=tenant, count=max(1, min(int(request.GET["replay"]), 1000)), now=now)
        except ValueError as exc:
            messages.error(request, str(exc))
    candidates = list(tenant.rules.filter(shadow=True).order_by("position", "id"))
    return TemplateResponse(
        request,
        "jwtex/candidate.html",
        page_context(
            model_admin,
            request,
            title=f"Candidate rules of {tenant.name} ({tenant.slug})",
            tenant=tenant,
            candidates=candidates,
            report=shadow_report(tenant=tenant, now=now, kind=kind) if candidates else None,
            replay=replay,
            can_change=has_role(request, tenant.pk, CONFIGURE),
            live_url=_rules_url(tenant, shadow=False),
            candidate_url=_rules_url(tenant, shadow=True),
            add_url=reverse("admin:exchange_rule_add") + f"?tenant={tenant.pk}&shadow=1",
            audit_url=reverse("admin:exchange_exchangerecord_changelist"),
        ),
    )


def candidate_action_view(request, tenant_id, action, *, model_admin):
    """POST only (the page's buttons, each behind a confirm()): start, promote or discard."""
    if request.method != "POST" or action not in ACTIONS:
        return HttpResponseNotAllowed(["POST"])
    tenant = tenant_get_or_404(request, tenant_id, VIEW)
    role_require(request, tenant.pk, CONFIGURE)
    service, message = ACTIONS[action]
    try:
        messages.success(request, message(service(tenant=tenant)))
    except ValueError as exc:
        messages.error(request, str(exc))
    return HttpResponseRedirect(reverse("admin:exchange_rule_candidate", args=[tenant.pk]))
