"""Signing keys in the admin: read-only, with "rotate now" and "revoke" behind confirmation pages.
Private key material is never a field: it is excluded from every form, list and page."""

from __future__ import annotations

import json
from datetime import UTC
from functools import partial

from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html

from tenants.admin_mixins import (
    CONFIGURE,
    NOBODY,
    OWN,
    VIEW,
    TenantScopedAdminMixin,
    has_any_role,
    tenants_for,
    tenants_matching,
)
from tenants.models import KeyBackend

from ..keys import SigningKeyUnavailable
from ..models import PUBLISHED_KEY_STATES, KeyState, SigningKey
from . import views


def _kms_guarded(view):
    """Rotate now / revoke: when AWS KMS cannot make the new key, say so instead of a 500
    (nothing changed: the rotation is one transaction)."""

    def guarded(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except SigningKeyUnavailable as exc:
            messages.error(request, f"Nothing changed: {exc.messages[0]}")
            return HttpResponseRedirect(reverse("admin:exchange_signingkey_changelist"))

    return guarded


def _short_time(value) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if value else "—"


@admin.register(SigningKey)
class SigningKeyAdmin(TenantScopedAdminMixin, admin.ModelAdmin):
    view_roles = VIEW
    add_roles = change_roles = delete_roles = NOBODY

    list_display = ["kid_short", "tenant", "alg", "state_badge", "created", "signs_from", "retire_after_", "revoke"]
    list_display_links = ["kid_short"]
    list_filter = ["state", "backend", "tenant"]
    list_select_related = ["tenant"]
    search_fields = ["kid"]
    exclude = ["private_key_encrypted"]
    fields = [
        "tenant",
        "kid",
        "algorithm",
        "backend",
        "kms_key_id",
        "state",
        "public_jwk_pretty",
        "created_at",
        "activate_after",
        "activated_at",
        "retiring_at",
        "retire_after",
        "retired_at",
        "private_part",
    ]
    readonly_fields = fields
    actions = None

    def has_add_permission(self, request, *args):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="kid", ordering="kid")
    def kid_short(self, obj):
        return format_html('<span title="{}">{}…</span>', obj.kid, obj.kid[:16])

    @admin.display(description="alg", ordering="algorithm")
    def alg(self, obj):
        return obj.algorithm

    @admin.display(description="state", ordering="state")
    def state_badge(self, obj):
        colour = {"active": "#2e7d32", "next": "#1565c0", "retiring": "#9e6a00"}.get(obj.state, "#757575")
        return format_html(
            '<span class="jwtex-badge" style="background:{}" title="{}">{}</span>',
            colour,
            obj.get_state_display(),
            obj.state,
        )

    @admin.display(description="created (UTC)", ordering="created_at")
    def created(self, obj):
        return _short_time(obj.created_at)

    @admin.display(description="signs from")
    def signs_from(self, obj):
        return _short_time(obj.activated_at or obj.activate_after)

    @admin.display(description="retire after", ordering="retire_after")
    def retire_after_(self, obj):
        return _short_time(obj.retire_after)

    @admin.display(description="public JWK")
    def public_jwk_pretty(self, obj):
        return format_html("<pre class='jwtex-code'>{}</pre>", json.dumps(obj.public_jwk, indent=2))

    @admin.display(description="private part")
    def private_part(self, obj):
        # Whether it exists, never what it is.
        gone = obj.state in (KeyState.RETIRED, KeyState.REVOKED)
        if obj.backend == KeyBackend.AWS_KMS:
            if not gone:
                return "held in AWS KMS; it never leaves KMS (every token is signed by a KMS Sign call)"
            if obj.kms_deletion_scheduled_at:
                when = _short_time(obj.kms_deletion_scheduled_at)
                return f"AWS KMS deletion scheduled at {when} UTC (30-day waiting period)"
            return "AWS KMS deletion not scheduled yet (asked again at the tenant's next key check)"
        return "destroyed" if gone else "kept encrypted at rest; never shown"

    @admin.display(description="")
    def revoke(self, obj):
        if obj.state not in PUBLISHED_KEY_STATES:
            return ""
        return format_html('<a href="{}">revoke…</a>', reverse("admin:exchange_signingkey_revoke", args=[obj.pk]))

    def get_list_display(self, request):
        fields = list(super().get_list_display(request))
        if not has_any_role(request, OWN):
            fields.remove("revoke")
        return fields

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path(
                "rotate/<path:tenant_id>/",
                view(_kms_guarded(partial(views.signing_key_rotate_view, model_admin=self))),
                name="exchange_signingkey_rotate",
            ),
            path(
                "<path:object_id>/revoke/",
                view(_kms_guarded(partial(views.signing_key_revoke_view, model_admin=self))),
                name="exchange_signingkey_revoke",
            ),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        extra_context = dict(extra_context or {})
        # One link per tenant only while they are few; else the one the list is filtered by.
        chosen = request.GET.get("tenant__id__exact", "")
        extra_context["rotatable_tenants"] = list(
            tenants_matching(
                tenants_for(request, CONFIGURE).only("pk", "slug"), "", keep=[chosen] if chosen.isdigit() else []
            )
        )
        return super().changelist_view(request, extra_context)
