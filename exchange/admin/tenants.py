"""Tenants in the admin, scoped by membership: superusers create tenants (through the one
service that does it, so a tenant is born with its signing key); owners change their tenant's
settings; everyone with a role sees the tenant and its overview page."""

from __future__ import annotations

from functools import partial

from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from tenants.admin_mixins import NOBODY, OWN, VIEW, TenantScopedAdminMixin
from tenants.models import Tenant

from ..keys import SigningKeyUnavailable
from ..publish.documents import tenant_issuer_url
from ..services.tenants import tenant_create
from . import revisions, views
from .forms import TenantForm
from .publication import publication_summary


@admin.register(Tenant)
class TenantAdmin(TenantScopedAdminMixin, admin.ModelAdmin):
    tenant_path = "pk"
    view_roles = VIEW
    add_roles = NOBODY  # superusers only
    change_roles = OWN
    delete_roles = NOBODY

    form = TenantForm
    list_display = ["slug", "name", "enabled", "issuer_link", "pages"]
    list_filter = ["enabled", "signing_algorithm", "key_backend"]
    search_fields = ["slug", "name"]
    readonly_fields = ["issuer_url", "publication_status", "config_version", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["slug", "name", "enabled", "issuer_url"]}),
        (
            "Tokens",
            {"fields": ["default_audience", "max_token_lifetime", "signing_algorithm", "rate_limit_per_minute"]},
        ),
        (
            "Keys and retention",
            {
                "fields": [
                    "key_backend",
                    "kms_region",
                    "kms_account_id",
                    "key_rotation_interval",
                    "key_prepublish_window",
                    "audit_retention_days",
                    "keep_upstream_claims",
                ]
            },
        ),
        (
            "Published issuer (optional)",
            {
                "fields": ["published_issuer_url", "publication_status"],
                "description": (
                    "Static hosting (a directory a web server serves, or S3 behind a CDN) where jwtex publishes "
                    "this tenant's discovery document and JWKS, so that AWS verifies its tokens while jwtex is down. "
                    "Tokens then carry this URL as iss: every IAM OIDC provider and trust policy must name it."
                ),
            },
        ),
        (
            "AWS set-up (optional)",
            {
                "fields": ["aws_account_ids", "aws_region", "aws_role_name"],
                "description": "These only fill in the overview's AWS and CI snippets (instead of example values); "
                "they change nothing the exchange does or issues.",
            },
        ),
        ("Bookkeeping", {"fields": ["config_version", "created_at", "updated_at"], "classes": ["collapse"]}),
    ]

    def tenant_id_of(self, obj):
        return obj.pk

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            fields.append("slug")  # the slug is in every issued token's iss
        return fields

    @admin.display(description="issuer URL")
    def issuer_url(self, obj):
        return tenant_issuer_url(obj) if obj is not None and obj.slug else "-"

    @admin.display(description="issuer")
    def issuer_link(self, obj):
        url = tenant_issuer_url(obj)
        return format_html('<a href="{}/.well-known/openid-configuration">{}</a>', url, url)

    @admin.display(description="publication")
    def publication_status(self, obj):
        return publication_summary(obj) if obj is not None and obj.pk else "-"

    @admin.display(description="pages")
    def pages(self, obj):
        links = [
            (reverse("admin:tenants_tenant_overview", args=[obj.pk]), "Overview"),
            (reverse("admin:tenants_tenant_revisions", args=[obj.pk]), "Revisions"),
            (reverse("admin:exchange_issuer_changelist") + f"?tenant__id__exact={obj.pk}", "Issuers"),
            (reverse("admin:exchange_rule_changelist") + f"?tenant__id__exact={obj.pk}", "Rules"),
            (reverse("admin:exchange_rule_simulate") + f"?tenant={obj.pk}", "Simulator"),
            (reverse("admin:exchange_signingkey_changelist") + f"?tenant__id__exact={obj.pk}", "Keys"),
            (reverse("admin:exchange_exchangerecord_changelist") + f"?tenant__id__exact={obj.pk}", "Audit log"),
        ]
        return format_html_join(" · ", '<a href="{}">{}</a>', links)

    def get_urls(self):
        return [
            path(
                "<path:object_id>/overview/",
                self.admin_site.admin_view(partial(views.tenant_overview_view, model_admin=self)),
                name="tenants_tenant_overview",
            ),
            *self._revision_urls(),
            *super().get_urls(),
        ]

    def _revision_urls(self):
        def view(function):
            return self.admin_site.admin_view(partial(function, model_admin=self))

        return [
            path("<path:object_id>/revisions/", view(revisions.revision_list_view), name="tenants_tenant_revisions"),
            path(
                "<path:object_id>/revisions/<int:number>/",
                view(revisions.revision_detail_view),
                name="tenants_tenant_revision",
            ),
            path(
                "<path:object_id>/revisions/<int:number>/restore/",
                view(revisions.revision_restore_view),
                name="tenants_tenant_revision_restore",
            ),
        ]

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except SigningKeyUnavailable as exc:
            # AWS KMS could not make the new tenant's first key: nothing was created (one transaction).
            messages.error(request, f"The tenant was not created: {exc.messages[0]}")
            return HttpResponseRedirect(request.get_full_path())

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        # One way to create a tenant (it is born with its signing key): the service.
        fields = {name: value for name, value in form.cleaned_data.items() if name not in ("slug", "name")}
        created = tenant_create(slug=form.cleaned_data["slug"], name=form.cleaned_data["name"], **fields)
        obj.__dict__.update(created.__dict__)

    def response_add(self, request, obj, post_url_continue=None):
        if "_continue" in request.POST or "_addanother" in request.POST:
            return super().response_add(request, obj, post_url_continue)
        # What a new tenant needs next: an upstream issuer whose tokens it accepts.
        messages.success(request, f"Tenant {obj.slug} was created with its signing key. Next: add an issuer.")
        return HttpResponseRedirect(reverse("admin:exchange_issuer_preset") + f"?tenant={obj.pk}")
