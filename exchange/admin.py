"""Operator screens. Private key material is never a field here: SigningKey's encrypted
private part is not editable and not listed; keys are created by services, not by forms."""

from django.contrib import admin

from .models import ExchangeRecord, Issuer, Rule, SigningKey


@admin.register(Issuer)
class IssuerAdmin(admin.ModelAdmin):
    list_display = ["issuer_id", "tenant", "issuer", "enabled", "jwks_fetched_at", "jwks_consecutive_failures"]
    list_filter = ["enabled", "tenant"]
    list_select_related = ["tenant"]
    search_fields = ["issuer_id", "issuer", "tenant__slug"]
    readonly_fields = [
        "jwks_fetched_at",
        "jwks_expires_at",
        "jwks_changed_at",
        "jwks_resolved_uri",
        "jwks_last_error",
        "jwks_last_error_at",
        "jwks_consecutive_failures",
        "created_at",
        "updated_at",
    ]


@admin.register(Rule)
class RuleAdmin(admin.ModelAdmin):
    list_display = ["name", "tenant", "position", "effect", "enabled"]
    list_filter = ["effect", "enabled", "tenant"]
    list_select_related = ["tenant"]
    search_fields = ["name", "when"]
    filter_horizontal = ["issuers"]
    ordering = ["tenant__slug", "position", "id"]


@admin.register(SigningKey)
class SigningKeyAdmin(admin.ModelAdmin):
    list_display = ["kid", "tenant", "algorithm", "state", "created_at", "activated_at", "retire_after"]
    list_filter = ["state", "algorithm", "tenant"]
    list_select_related = ["tenant"]
    fields = ["tenant", "kid", "algorithm", "state", "public_jwk", "created_at", "activate_after", "activated_at",
              "retiring_at", "retire_after", "retired_at"]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ExchangeRecord)
class ExchangeRecordAdmin(admin.ModelAdmin):
    list_display = ["created_at", "tenant", "endpoint", "decision", "error_code", "issuer_ref", "rule_name",
                    "upstream_sub", "issued_jti"]
    list_filter = ["decision", "endpoint", "tenant"]
    list_select_related = ["tenant"]
    search_fields = ["upstream_sub", "issued_jti", "upstream_jti", "issued_sub"]
    date_hierarchy = "created_at"

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
