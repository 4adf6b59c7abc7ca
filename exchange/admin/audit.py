"""The audit log in the admin: read-only for everyone, superusers included (docs/operations.md#audit)."""

from __future__ import annotations

import json
from datetime import UTC

from django.contrib import admin
from django.http import StreamingHttpResponse
from django.utils import timezone
from django.utils.html import format_html

from tenants.admin_mixins import (
    NOBODY,
    VIEW,
    TenantScopedAdminMixin,
    scoped_actions_queryset,
)

from ..models import ExchangeRecord
from ..services.audit_export import audit_records_jsonl


class RuleNameFilter(admin.SimpleListFilter):
    """The deciding rule by the name the record keeps (``rule_name``): unlike the ``rule`` foreign
    key it survives the rule's deletion, and it is what the overview's "top denial reasons" group
    by and link to (``?rule_name=NAME``; ``?rule_name=`` is "no rule decided")."""

    title = "rule (as recorded)"
    parameter_name = "rule_name"

    def lookups(self, request, model_admin):
        names = (
            model_admin.get_queryset(request).order_by("rule_name").values_list("rule_name", flat=True).distinct()
        )
        return [(name, name or "(no rule)") for name in names[:200]]

    def queryset(self, request, queryset):
        value = self.value()
        return queryset if value is None else queryset.filter(rule_name=value)


@admin.register(ExchangeRecord)
class ExchangeRecordAdmin(TenantScopedAdminMixin, admin.ModelAdmin):
    """The audit log: read-only for everyone, superusers included (docs/operations.md#audit)."""

    view_roles = VIEW
    add_roles = change_roles = delete_roles = NOBODY

    list_display = ["when", "tenant", "decision_badge", "error_code", "issuer_ref", "rule_name", "subject", "jti"]
    list_display_links = ["when"]
    list_filter = ["decision", "issuer", "rule", RuleNameFilter, ("created_at", admin.DateFieldListFilter),
                   "endpoint", "error_code", "tenant"]
    list_select_related = ["tenant"]
    search_fields = ["upstream_sub", "issued_sub", "upstream_jti", "issued_jti"]
    search_help_text = "Subject (upstream or issued) or jti (upstream or issued)."
    date_hierarchy = "created_at"
    actions = ("export_jsonl",)
    fieldsets = [
        ("Attempt", {"fields": ["created_at", "tenant", "endpoint", "client_address", "decision", "status_code",
                                "error_code", "reason"]}),
        ("Upstream token", {"fields": ["issuer_ref", "upstream_iss", "upstream_sub", "upstream_jti", "upstream_aud"]}),
        ("Rule", {"fields": ["rule_name"]}),
        ("Emitted token", {"fields": ["issued_jti", "issued_kid", "issued_sub", "issued_aud", "issued_exp",
                                      "issued_claims_pretty"]}),
    ]

    def get_readonly_fields(self, request, obj=None):
        return [f for fieldset in self.fieldsets for f in fieldset[1]["fields"]]

    @admin.display(description="time (UTC)", ordering="created_at")
    def when(self, obj):
        return obj.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")

    @admin.display(description="upstream subject", ordering="upstream_sub")
    def subject(self, obj):
        text = obj.upstream_sub
        return format_html('<span title="{}">{}</span>', text, text if len(text) <= 48 else text[:47] + "…")

    @admin.display(description="issued jti", ordering="issued_jti")
    def jti(self, obj):
        return format_html('<code title="{}">{}</code>', obj.issued_jti, obj.issued_jti[:12]) if obj.issued_jti else "—"

    @admin.display(description="decision", ordering="decision")
    def decision_badge(self, obj):
        colour = "#2e7d32" if obj.decision == "allowed" else "#c62828"
        return format_html('<span class="jwtex-badge" style="background:{}">{}</span>', colour, obj.decision)

    @admin.display(description="emitted claims")
    def issued_claims_pretty(self, obj):
        if not obj.issued_claims:
            return "—"
        return format_html("<pre class='jwtex-code'>{}</pre>", json.dumps(obj.issued_claims, indent=2, sort_keys=True))

    @admin.action(description="Export selected/filtered as JSON lines", permissions=["view"])
    def export_jsonl(self, request, queryset):
        """The chosen rows (tick "select all" for every row the filters leave) as the JSON lines
        of ``jwtex_audit_export``, streamed. The queryset is already the user's tenants' only
        (``get_queryset``); narrowing it again keeps a forged selection of another tenant's ids
        out whatever Django passes in."""
        rows = scoped_actions_queryset(request, queryset, VIEW)
        response = StreamingHttpResponse(audit_records_jsonl(rows), content_type="application/x-ndjson")
        stamp = timezone.now().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        response["Content-Disposition"] = f'attachment; filename="jwtex-audit-{stamp}.jsonl"'
        return response

    def has_add_permission(self, request, *args):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
