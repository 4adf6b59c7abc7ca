"""Tenants and memberships in the admin, scoped by membership (tenants.admin_mixins).

Superusers create tenants; owners change their tenant's settings and add people to it;
everyone with a role sees the tenant and its overview page.
"""

from functools import partial

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from .admin_mixins import NOBODY, OWN, VIEW, TenantScopedAdminMixin, has_role
from .models import Membership, Role, Tenant
from .services import membership_add, membership_role_change_errors, user_get_by_username
from .widgets import SecondsInput

admin.site.site_header = "jwtex administration"
admin.site.site_title = "jwtex"
admin.site.index_title = "Tenants, issuers, rules, keys and the audit log"
admin.site.site_url = None  # there is no public site to view: no "View site" link (issue 8 §11)


class TenantForm(forms.ModelForm):
    class Meta:
        model = Tenant
        fields = "__all__"
        widgets = {
            "max_token_lifetime": SecondsInput,
            "key_rotation_interval": SecondsInput,
            "key_prepublish_window": SecondsInput,
        }


@admin.register(Tenant)
class TenantAdmin(TenantScopedAdminMixin, admin.ModelAdmin):
    tenant_path = "pk"
    view_roles = VIEW
    add_roles = NOBODY  # superusers only
    change_roles = OWN
    delete_roles = NOBODY

    form = TenantForm
    list_display = ["slug", "name", "enabled", "issuer_link", "pages"]
    list_filter = ["enabled", "signing_algorithm"]
    search_fields = ["slug", "name"]
    readonly_fields = ["issuer_url", "config_version", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["slug", "name", "enabled", "issuer_url"]}),
        ("Tokens", {"fields": ["default_audience", "max_token_lifetime", "signing_algorithm", "rate_limit_per_minute"]}),
        ("Keys and retention", {"fields": ["key_rotation_interval", "key_prepublish_window", "audit_retention_days"]}),
        ("Bookkeeping", {"fields": ["config_version", "created_at", "updated_at"], "classes": ["collapse"]}),
    ]

    def tenant_id_of(self, obj):
        return obj.pk

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            fields.append("slug")  # the slug is in every issued token's iss
        return fields

    @admin.display(description="issuer")
    def issuer_link(self, obj):
        return format_html('<a href="{}/.well-known/openid-configuration">{}</a>', obj.issuer_url, obj.issuer_url)

    @admin.display(description="pages")
    def pages(self, obj):
        links = [
            (reverse("admin:tenants_tenant_overview", args=[obj.pk]), "Overview"),
            (reverse("admin:exchange_issuer_changelist") + f"?tenant__id__exact={obj.pk}", "Issuers"),
            (reverse("admin:exchange_rule_changelist") + f"?tenant__id__exact={obj.pk}", "Rules"),
            (reverse("admin:exchange_rule_simulate") + f"?tenant={obj.pk}", "Simulator"),
            (reverse("admin:exchange_signingkey_changelist") + f"?tenant__id__exact={obj.pk}", "Keys"),
            (reverse("admin:exchange_exchangerecord_changelist") + f"?tenant__id__exact={obj.pk}", "Audit log"),
        ]
        return format_html_join(" · ", '<a href="{}">{}</a>', links)

    def get_urls(self):
        from exchange import admin_views

        return [
            path(
                "<path:object_id>/overview/",
                self.admin_site.admin_view(partial(admin_views.tenant_overview_view, model_admin=self)),
                name="tenants_tenant_overview",
            ),
            *super().get_urls(),
        ]

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        # One way to create a tenant (it is born with its signing key): the service.
        from exchange.services import tenant_create

        fields = {name: value for name, value in form.cleaned_data.items() if name not in ("slug", "name")}
        created = tenant_create(slug=form.cleaned_data["slug"], name=form.cleaned_data["name"], **fields)
        obj.__dict__.update(created.__dict__)

    def response_add(self, request, obj, post_url_continue=None):
        if "_continue" in request.POST or "_addanother" in request.POST:
            return super().response_add(request, obj, post_url_continue)
        # What a new tenant needs next: an upstream issuer whose tokens it accepts.
        messages.success(request, f"Tenant {obj.slug} was created with its signing key. Next: add an issuer.")
        return HttpResponseRedirect(reverse("admin:exchange_issuer_preset") + f"?tenant={obj.pk}")


class MembershipForm(forms.ModelForm):
    username = forms.CharField(
        max_length=150, required=False, help_text="The exact username of an existing account."
    )

    class Meta:
        model = Membership
        fields = ["tenant", "role"]

    def clean(self):
        cleaned = super().clean()
        if self.instance.pk is None:
            username = cleaned.get("username", "")
            if not username:
                self.add_error("username", "Whom to add: a username.")
            else:
                try:
                    user = user_get_by_username(username=username)
                except forms.ValidationError as exc:
                    self.add_error("username", exc)
                else:
                    tenant = cleaned.get("tenant")
                    if tenant is not None and Membership.objects.filter(tenant=tenant, user=user).exists():
                        self.add_error("username", f"{user} is already a member of {tenant}.")
                    self.instance.user = user
        else:
            problem = membership_role_change_errors(membership=self.instance, new_role=cleaned.get("role"))
            if problem:
                self.add_error("role", problem)
        return cleaned


@admin.register(Membership)
class MembershipAdmin(TenantScopedAdminMixin, admin.ModelAdmin):
    view_roles = frozenset({Role.OWNER, Role.AUDITOR})
    add_roles = OWN
    change_roles = OWN
    delete_roles = OWN

    form = MembershipForm
    list_display = ["user", "tenant", "role", "created_at"]
    list_filter = ["role", "tenant"]
    list_select_related = ["tenant", "user"]
    search_fields = ["user__username", "tenant__slug"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["tenant", "username", "role"]
        return ["tenant", "user", "role", "created_at"]

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            fields += ["user", "created_at"]
        return fields

    def has_delete_permission(self, request, obj=None):
        if obj is not None and membership_role_change_errors(membership=obj, new_role=None):
            return False  # the last owner stays
        return super().has_delete_permission(request, obj)

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        if not has_role(request, obj.tenant_id, self.add_roles):
            raise PermissionDenied
        saved = membership_add(tenant=obj.tenant, user=obj.user, role=obj.role)
        obj.pk = saved.pk
        obj.created_at = saved.created_at
