"""The audit log in the admin: read-only for everyone, superusers included (docs/operations.md#audit),
and as fast with a hundred million records as with ten thousand (docs/scale.md; ``audit_list``)."""

from __future__ import annotations

import json
from datetime import UTC

from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.options import ShowFacets
from django.http import StreamingHttpResponse
from django.utils import timezone
from django.utils.html import format_html

from tenants.admin_mixins import NOBODY, TENANT_SEARCH_VAR, VIEW, TenantScopedAdminMixin, scoped_actions_queryset

from ..models import ExchangeRecord
from ..services.audit_export import audit_records_jsonl
from . import audit_list
from .audit_list import (
    AuditChangeList,
    EndpointFilter,
    ErrorCodeFilter,
    IssuerFilter,
    RuleNameFilter,
    TimeFilter,
)


def _cut(text: str, limit: int):
    return format_html('<span title="{}">{}</span>', text, text if len(text) <= limit else text[: limit - 1] + "…")


@admin.register(ExchangeRecord)
class ExchangeRecordAdmin(TenantScopedAdminMixin, admin.ModelAdmin):
    """The audit log: read-only for everyone, superusers included (docs/operations.md#audit)."""

    view_roles = VIEW
    add_roles = change_roles = delete_roles = NOBODY

    # Fits 1,400 px with the filters beside it: long values are cut, whole in their tooltip.
    list_display = ["when", "tenant", "decision_badge", "reason_short", "issuer_ref", "rule_name", "subject", "jti"]
    list_display_links = ["when"]
    list_filter = ["tenant", TimeFilter, "decision", ErrorCodeFilter, IssuerFilter, RuleNameFilter, EndpointFilter]
    list_select_related = ["tenant"]
    list_per_page = audit_list.PER_PAGE
    sortable_by = ()  # (time, id) order only: the order pages are keyed by
    show_facets = ShowFacets.NEVER  # a count per choice would read every matching record
    show_full_result_count = False
    search_fields = ["upstream_jti"]  # shows the box; audit_list.audit_search decides what it matches
    search_help_text = audit_list.SEARCH_HELP
    actions = ("export_jsonl",)
    fieldsets = [
        (
            "Attempt",
            {
                "fields": [
                    "created_at",
                    "tenant",
                    "endpoint",
                    "client_address",
                    "decision",
                    "status_code",
                    "error_code",
                    "reason",
                ]
            },
        ),
        ("Upstream token", {"fields": ["issuer_ref", "upstream_iss", "upstream_sub", "upstream_jti", "upstream_aud"]}),
        ("Rule", {"fields": ["rule_name"]}),
        (
            "Emitted token",
            {
                "fields": [
                    "issued_jti",
                    "issued_kid",
                    "issued_sub_whole",
                    "issued_aud",
                    "issued_exp",
                    "issued_claims_pretty",
                ]
            },
        ),
    ]
    # The query parameters the list understands (any other is a 400: it would walk the table unindexed).
    _PARAMETERS = frozenset(
        {
            "tenant__id__exact",
            "tenant__isnull",
            TENANT_SEARCH_VAR,
            "since",
            "created_at__gte",
            "decision__exact",
            "decision__isnull",
            ErrorCodeFilter.parameter_name,
            EndpointFilter.parameter_name,
            IssuerFilter.parameter_name,
            RuleNameFilter.parameter_name,
            # Exact matches an index answers, as the search box finds them.
            "upstream_jti",
            "issued_jti",
            "upstream_sub",
            "issued_sub",
        }
    )

    def action_checkbox(self, obj):
        # Django's renders a form widget through templates per row: a third of a 100-row page.
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="Select this record">',
            ACTION_CHECKBOX_NAME,
            obj.pk,
        )

    def get_changelist(self, request, **kwargs):
        return AuditChangeList

    def get_list_display(self, request):
        fields = list(super().get_list_display(request))
        if "tenant__id__exact" in request.GET:  # one tenant's records: its name is in the filter
            fields.remove("tenant")
        return fields

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, {"title": "Audit log", **(extra_context or {})})

    def declared_lookups(self, request) -> frozenset[str]:
        return self._PARAMETERS  # (its filters are not all field filters: said here, not derived)

    def get_search_results(self, request, queryset, search_term):
        if not search_term.strip():
            return queryset, False
        return audit_list.audit_search(queryset, search_term), False

    def get_readonly_fields(self, request, obj=None):
        return [f for fieldset in self.fieldsets for f in fieldset[1]["fields"]]

    @admin.display(description="time (UTC)")
    def when(self, obj):
        return format_html("{}<br>{}", *obj.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S").split())

    @admin.display(description="upstream subject")
    def subject(self, obj):
        return _cut(obj.upstream_sub, 28)

    @admin.display(description="reason")
    def reason_short(self, obj):
        """A denial's error code and why; an allowance's reason, if any."""
        if not obj.reason and not obj.error_code:
            return "—"
        return (
            format_html("<code>{}</code> {}", obj.error_code, _cut(obj.reason, 90))
            if obj.error_code
            else _cut(obj.reason, 90)
        )

    @admin.display(description="issued jti")
    def jti(self, obj):
        if not obj.issued_jti:
            return "—"
        return format_html('<code title="{}">{}</code>', obj.issued_jti, obj.issued_jti[:8] + "…")

    @admin.display(description="decision")
    def decision_badge(self, obj):
        colour = "#2e7d32" if obj.decision == "allowed" else "#c62828"
        return format_html('<span class="jwtex-badge" style="background:{}">{}</span>', colour, obj.decision)

    @admin.display(description="issued sub")
    def issued_sub_whole(self, obj):
        return obj.issued_subject

    @admin.display(description="emitted claims")
    def issued_claims_pretty(self, obj):
        claims = obj.emitted_claims
        if not claims:
            return "—"
        return format_html("<pre class='jwtex-code'>{}</pre>", json.dumps(claims, indent=2, sort_keys=True))

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
