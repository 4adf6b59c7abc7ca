"""Issuers in the admin: the form, key health, presets and "Fetch keys now"."""

from __future__ import annotations

from functools import partial

from django.contrib import admin
from django.urls import path
from django.utils import timezone
from django.utils.html import format_html

from tenants.admin_mixins import (
    CONFIGURE,
    VIEW,
    TenantScopedAdminMixin,
    has_any_role,
    has_role,
    scoped_actions_queryset,
)

from ..core.jwks import kids_of
from ..models import Issuer
from ..services.overview import issuer_health
from ..upstream.issuer_keys import issuer_keys_fetch_now, issuer_keys_forget_if_source_changed
from . import readable, views
from .forms import IssuerForm


def _health_badge(status: str) -> str:
    colour = {"ok": "#2e7d32", "static": "#1565c0", "disabled": "#757575", "never fetched": "#9e6a00"}.get(
        status, "#c62828"
    )
    return format_html('<span class="jwtex-badge" style="background:{}">{}</span>', colour, status)


# Read-only: what the last fetches of the issuer's keys found.
KEY_HEALTH_FIELDS = [
    "key_health",
    "cached_kids",
    "keys_fetched_from",
    "keys_fetched_at",
    "keys_fresh_until",
    "keys_changed_at",
    "last_fetch_error",
    "last_fetch_error_at",
    "failed_fetches",
    "created_at",
    "updated_at",
]


@admin.register(Issuer)
class IssuerAdmin(readable.ReadableWhenViewOnlyMixin, TenantScopedAdminMixin, admin.ModelAdmin):
    view_roles = VIEW
    add_roles = change_roles = delete_roles = CONFIGURE

    form = IssuerForm
    list_display = ["issuer_id", "tenant", "issuer", "enabled", "key_health", "key_ids"]
    list_filter = ["enabled", "tenant"]
    list_select_related = ["tenant"]
    search_fields = ["issuer_id", "issuer"]
    actions = ["fetch_keys_now"]
    readonly_fields = KEY_HEALTH_FIELDS
    # Labels in words, not field names ("Jwks resolved uri").
    keys_fetched_from = readable.value("jwks_resolved_uri", "keys fetched from")
    keys_fetched_at = readable.value("jwks_fetched_at", "keys last fetched")
    keys_fresh_until = readable.value("jwks_expires_at", "keys fresh until")
    keys_changed_at = readable.value("jwks_changed_at", "keys last changed")
    last_fetch_error = readable.value("jwks_last_error", "last fetch error")
    last_fetch_error_at = readable.value("jwks_last_error_at", "last fetch error at")
    failed_fetches = readable.value("jwks_consecutive_failures", "failed fetches in a row")
    view_only_fields = {"audiences": "audiences_lines", "algorithms": "algorithms_lines", "jwks_uri": "jwks_uri_value"}
    audiences_lines = readable.lines("audiences", "audiences")
    algorithms_lines = readable.lines("algorithms", "algorithms")
    jwks_uri_value = readable.value("jwks_uri", "JWKS URI")
    fieldsets = [
        (None, {"fields": ["tenant", "issuer_id", "issuer", "enabled"]}),
        ("Verification", {"fields": ["audiences", "algorithms", "leeway", "max_token_age", "replay_protection"]}),
        ("Keys", {"fields": ["jwks_uri", "static_jwks", "jwks_refresh_interval"]}),
        ("Key health", {"fields": KEY_HEALTH_FIELDS}),
    ]

    @admin.display(description="keys")
    def key_health(self, obj):
        if obj is None or obj.pk is None:
            return "-"
        return _health_badge(issuer_health(obj, now=timezone.now()).status)

    @admin.display(description="key ids")
    def key_ids(self, obj):
        kids = kids_of(obj.static_jwks if obj.static_jwks is not None else obj.jwks)
        return ", ".join(kids) or "-"

    @admin.display(description="cached key ids")
    def cached_kids(self, obj):
        return self.key_ids(obj)

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return self.fieldsets[:3]
        return super().get_fieldsets(request, obj)

    def save_model(self, request, obj, form, change):
        if change:
            issuer_keys_forget_if_source_changed(issuer=obj, changed=form.changed_data)
        super().save_model(request, obj, form, change)

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        stored = request.session.get("jwtex_issuer_preset")
        if stored and request.GET.get("preset") == stored.get("preset"):
            initial.update({k: v for k, v in stored["values"].items() if v is not None})
        return initial

    @admin.action(description="Fetch keys now", permissions=["configure"])
    def fetch_keys_now(self, request, queryset):
        now = timezone.now()
        for issuer in scoped_actions_queryset(request, queryset.select_related("tenant"), CONFIGURE):
            outcome = issuer_keys_fetch_now(issuer=issuer, now=now)
            views.fetch_outcome_report(request, issuer, outcome)

    def has_configure_permission(self, request):
        return has_any_role(request, CONFIGURE)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("preset/", view(partial(views.issuer_preset_view, model_admin=self)), name="exchange_issuer_preset"),
            path(
                "<path:object_id>/fetch-keys/",
                view(partial(views.issuer_fetch_keys_view, model_admin=self)),
                name="exchange_issuer_fetch_keys",
            ),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        obj = self.get_object(request, object_id)
        extra_context["can_fetch_keys"] = has_role(request, obj.tenant_id, CONFIGURE)
        return super().change_view(request, object_id, form_url, extra_context)
