from django.contrib import admin
from django.utils import timezone

from exchange.keys import signing_key_ensure_active

from .models import Membership, Tenant


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "enabled", "signing_algorithm", "default_audience", "max_token_lifetime"]
    list_filter = ["enabled", "signing_algorithm"]
    search_fields = ["slug", "name"]
    readonly_fields = ["issuer_url", "config_version", "created_at", "updated_at"]
    inlines = [MembershipInline]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        # A tenant is born with an active signing key, so its JWKS is never empty.
        signing_key_ensure_active(tenant=obj, now=timezone.now())


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["tenant", "user", "role", "created_at"]
    list_filter = ["role", "tenant"]
    list_select_related = ["tenant", "user"]
    search_fields = ["user__username", "tenant__slug"]
    autocomplete_fields = ["user"]
