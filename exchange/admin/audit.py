"""The audit log in the admin: read-only for everyone, superusers included (SPEC §8)."""

from __future__ import annotations

import json
from datetime import UTC

from django.contrib import admin
from django.utils.html import format_html

from tenants.admin_mixins import NOBODY, VIEW, TenantScopedAdminMixin

from ..models import ExchangeRecord

@admin.register(ExchangeRecord)
class ExchangeRecordAdmin(TenantScopedAdminMixin, admin.ModelAdmin):
    """The audit log: read-only for everyone, superusers included (SPEC §8)."""

    view_roles = VIEW
    add_roles = change_roles = delete_roles = NOBODY

    list_display = ["when", "tenant", "decision_badge", "error_code", "issuer_ref", "rule_name", "subject", "jti"]
    list_display_links = ["when"]
    list_filter = ["decision", "issuer", "rule", ("created_at", admin.DateFieldListFilter), "endpoint", "error_code",
                   "tenant"]
    list_select_related = ["tenant"]
    search_fields = ["upstream_sub", "issued_sub", "upstream_jti", "issued_jti"]
    search_help_text = "Subject (upstream or issued) or jti (upstream or issued)."
    date_hierarchy = "created_at"
    actions = None
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

    def has_add_permission(self, request, *args):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
