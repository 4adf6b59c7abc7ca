"""Rules in the admin: ordered with ▲/▼, CEL checked on save, the tenant chosen first."""

from __future__ import annotations

import re
from functools import partial

from django import forms
from django.contrib import admin, messages
from django.db.models import Prefetch
from django.http import QueryDict
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html_join

from tenants.admin_mixins import (
    CONFIGURE,
    TENANT_LINKS,
    VIEW,
    TenantScopedAdminMixin,
    has_any_role,
    has_role,
    scope,
    tenants_matching,
)

from ..console.presets import PRESETS, preset_for_issuer
from ..models import Issuer, Rule
from ..services.rules import rule_position_next
from . import candidates, readable, views
from .forms import IssuerChoiceField, RuleForm


@admin.register(Rule)
class RuleAdmin(readable.ReadableWhenViewOnlyMixin, TenantScopedAdminMixin, admin.ModelAdmin):
    view_roles = VIEW
    add_roles = change_roles = delete_roles = CONFIGURE

    form = RuleForm
    list_display = ["order", "name", "tenant", "rule_set", "effect", "enabled", "issuer_ids", "tag_keys", "move"]
    list_display_links = ["name"]
    list_filter = ["shadow", "effect", "enabled", "tenant"]
    list_select_related = ["tenant"]
    search_fields = ["name", "when"]
    ordering = ["tenant__slug", "shadow", "position", "id"]
    fieldsets = [
        (None, {"fields": ["tenant", "name", "enabled", "issuers", "when", "effect", "any_owner"]}),
        (
            "Mapper (effect: mapper)",
            {
                "fields": ["mapper_url", "mapper_timeout_ms"],
                "description": "A webhook decides and shapes the token (docs/mapper.md): it is POSTed the verified "
                "claims with a 60-second bearer token of this tenant, and answers "
                '{"allow": …, "claims": {…}}. '
                "See examples/mapper.py.",
            },
        ),
        (
            "What an allow rule emits",
            {
                "fields": [
                    "subject",
                    "audience",
                    "audiences",
                    "lifetime",
                    "session_tags",
                    "transitive_tag_keys",
                    "source_identity",
                    "claims",
                ]
            },
        ),
    ]

    # An auditor reads the lists as the form edits them, one per line (not JSON).
    view_only_fields = {"audiences": "audiences_lines", "transitive_tag_keys": "transitive_tag_keys_lines"}
    audiences_lines = readable.lines("audiences", "audiences")
    transitive_tag_keys_lines = readable.lines("transitive_tag_keys", "transitive tag keys")

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .prefetch_related(
                Prefetch("issuers", queryset=Issuer.objects.only("id", "issuer_id", "tenant_id").order_by("issuer_id"))
            )
        )

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if db_field.name == "issuers":
            kwargs["form_class"] = IssuerChoiceField
            kwargs["widget"] = forms.CheckboxSelectMultiple
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def _new_rule_tenant_id(self, request) -> int | None:
        """The tenant a new rule is for: the form's, the URL's (``?tenant=``, or the list's
        tenant filter), or the only tenant the user may add rules to."""
        filters = QueryDict(request.GET.get("_changelist_filters", ""))
        wanted = (
            request.POST.get("tenant")
            or request.GET.get("tenant")
            or filters.get("tenant__id__exact")
            or self.get_changeform_initial_data(request).get("tenant")
        )
        if wanted and re.fullmatch(r"[0-9]{1,18}", str(wanted)) and has_role(request, int(wanted), self.add_roles):
            return int(wanted)
        return None

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        tenant_id = obj.tenant_id if obj is not None else self._new_rule_tenant_id(request)
        if obj is None and tenant_id is not None and "tenant" in form.base_fields:
            # The issuers offered are this tenant's: the tenant is fixed for this form.
            form.base_fields["tenant"].queryset = form.base_fields["tenant"].queryset.filter(pk=tenant_id)
        form.jwtex_tenant_id = tenant_id
        form.jwtex_shadow = obj is None and (request.POST.get("_shadow") or request.GET.get("shadow")) == "1"
        return form

    def add_view(self, request, form_url="", extra_context=None):
        if request.method != "POST" and self._new_rule_tenant_id(request) is None:
            writable = self.writable_tenants(request)
            total = writable.count()
            if total > 1:
                # Issuers belong to a tenant: ask which one before showing its issuers (a search
                # beyond a few tenants).
                search = request.GET.get("q", "").strip()[:100]
                tenants = tenants_matching(writable.only("pk", "slug", "name"), search, total=total)
                return TemplateResponse(
                    request,
                    "jwtex/choose_tenant.html",
                    {
                        **self.admin_site.each_context(request),
                        "opts": self.model._meta,
                        "title": "Add a rule: for which tenant?",
                        "choices": [(t, f"{reverse('admin:exchange_rule_add')}?tenant={t.pk}") for t in tenants],
                        "searchable": total > TENANT_LINKS,
                        "search": search,
                        "total": total,
                    },
                )
        return super().add_view(request, form_url, extra_context)

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        filters = QueryDict(request.GET.get("_changelist_filters", ""))
        if "tenant" not in initial and re.fullmatch(r"[0-9]{1,18}", filters.get("tenant__id__exact", "")):
            initial["tenant"] = int(filters["tenant__id__exact"])
        return initial

    @admin.display(description="#", ordering="position")
    def order(self, obj):
        return obj.position

    @admin.display(description="issuers")
    def issuer_ids(self, obj):
        return ", ".join(i.issuer_id for i in obj.issuers.all()) or "—"

    @admin.display(description="session tags")
    def tag_keys(self, obj):
        return ", ".join(obj.session_tags or {}) or "—"

    @admin.display(description="set", ordering="shadow")
    def rule_set(self, obj):
        return "candidate" if obj.shadow else "live"

    @admin.display(description="move")
    def move(self, obj):
        # Buttons of the changelist form (it carries the CSRF token): POST to the move URL.
        return format_html_join(
            " ",
            '<button type="submit" class="jwtex-move" formaction="{}" title="{}">{}</button>',
            [
                (reverse("admin:exchange_rule_move", args=[obj.pk, "up"]), "move up", "▲"),
                (reverse("admin:exchange_rule_move", args=[obj.pk, "down"]), "move down", "▼"),
            ],
        )

    def get_list_display(self, request):
        fields = list(super().get_list_display(request))
        if not has_any_role(request, self.change_roles):
            fields.remove("move")
        return fields

    def save_model(self, request, obj, form, change):
        if not change:
            obj.position = rule_position_next(tenant=obj.tenant, shadow=obj.shadow)
        super().save_model(request, obj, form, change)
        for field_path, message in obj.jwtex_warnings:  # Rule.clean's: the rule is saved, with these caveats
            messages.warning(request, f"Rule {obj.name!r}, {field_path}: {message}")

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path(
                "simulate/", view(partial(views.rule_simulator_view, model_admin=self)), name="exchange_rule_simulate"
            ),
            path(
                "candidate/<int:tenant_id>/",
                view(partial(candidates.candidate_view, model_admin=self)),
                name="exchange_rule_candidate",
            ),
            path(
                "candidate/<int:tenant_id>/<str:action>/",
                view(partial(candidates.candidate_action_view, model_admin=self)),
                name="exchange_rule_candidate_action",
            ),
            path(
                "<path:object_id>/move/<str:direction>/",
                view(partial(views.rule_move_view, model_admin=self)),
                name="exchange_rule_move",
            ),
            *super().get_urls(),
        ]

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        obj = self.get_object(request, object_id) if object_id else None
        tenant_ids = [obj.tenant_id] if obj is not None else None
        used = {
            p.key
            for i in self.get_field_queryset_issuers(request, tenant_ids)
            if (p := preset_for_issuer(i.issuer, has_static_jwks=i.static_jwks is not None)) is not None
        }
        extra_context["claim_presets"] = [(p, p.key in used) for p in PRESETS]
        candidate = obj.shadow if obj is not None else (request.POST.get("_shadow") or request.GET.get("shadow")) == "1"
        if candidate:  # a candidate rule says so at the top, in the title and the breadcrumb
            extra_context["jwtex_candidate"] = obj.tenant_id if obj is not None else self._new_rule_tenant_id(request)
            extra_context["title"] = (
                "Add a candidate rule"
                if not object_id
                else ("Change a candidate rule" if self.has_change_permission(request, obj) else "A candidate rule")
            )
        return super().changeform_view(request, object_id, form_url, extra_context)

    def get_field_queryset_issuers(self, request, tenant_ids):
        queryset = scope(Issuer.objects.only("issuer", "static_jwks"), request, VIEW)
        return queryset.filter(tenant_id__in=tenant_ids) if tenant_ids else queryset

    def changelist_view(self, request, extra_context=None):
        extra_context = dict(extra_context or {})
        extra_context["simulate_url"] = reverse("admin:exchange_rule_simulate")
        if request.GET.get("shadow__exact") == "1":
            extra_context["title"] = "Candidate rules (not live): select one to change"
        return super().changelist_view(request, extra_context)
