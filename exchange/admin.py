"""Operator screens, scoped by membership (tenants.admin_mixins).

The classes here choose columns, forms and buttons; the work behind a button is a service
(exchange.admin_services, exchange.keys, exchange.simulator) called from exchange.admin_views.
Private key material is never a field: a SigningKey's encrypted private part is excluded
from every form, list and page; keys are created by services, not by forms.
"""

from __future__ import annotations

import json
from datetime import UTC
from functools import partial

from django import forms
from django.contrib import admin, messages
from django.db.models import Prefetch
from django.http import QueryDict
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from tenants.admin_mixins import (
    CONFIGURE,
    NOBODY,
    OWN,
    VIEW,
    TenantScopedAdminMixin,
    has_any_role,
    has_role,
    scope,
    scoped_actions_queryset,
    tenants_for,
)

from tenants.widgets import SecondsInput

from . import conf
from .admin_services import issuer_keys_fetch_now, rule_position_next
from .models import PUBLISHED_KEY_STATES, ExchangeRecord, Issuer, KeyState, Rule, SigningKey
from .overview import issuer_health, jwks_kids
from .rules import MAX_SESSION_TAGS, MAX_TAG_KEY_LENGTH, MAX_TAG_VALUE_LENGTH
from .upstream import issuer_keys_forget_if_source_changed

MONO = {"class": "vLargeTextField jwtex-mono", "spellcheck": "false", "autocapitalize": "off"}


class LinesField(forms.CharField):
    """A list of strings edited one per line (stored as a JSON list)."""

    def __init__(self, *, rows: int = 3, **kwargs):
        kwargs.setdefault("widget", forms.Textarea(attrs={**MONO, "rows": rows}))
        kwargs.setdefault("strip", False)
        super().__init__(**kwargs)

    def prepare_value(self, value):
        if isinstance(value, (list, tuple)):
            return "\n".join(str(v) for v in value)
        return value

    def to_python(self, value):
        if isinstance(value, (list, tuple)):
            return [str(v).strip() for v in value if str(v).strip()]
        return [line.strip() for line in (value or "").splitlines() if line.strip()]

    def has_changed(self, initial, data):
        return self.to_python(initial or []) != self.to_python(data)


class TenantOwnedForm(forms.ModelForm):
    """Checks that need the tenant: names unique within it, related rows from it."""

    unique_in_tenant: tuple[str, ...] = ()

    def tenant_id(self) -> int | None:
        if self.instance.pk is not None:
            return self.instance.tenant_id
        tenant = self.cleaned_data.get("tenant")
        return tenant.pk if tenant is not None else None

    def clean(self):
        cleaned = super().clean()
        tenant_id = self.tenant_id()
        if tenant_id is not None:
            # The tenant is read-only on change, so Django's own unique check skips these.
            manager = type(self.instance)._default_manager
            for name in self.unique_in_tenant:
                value = cleaned.get(name)
                if value and manager.filter(tenant_id=tenant_id, **{name: value}).exclude(pk=self.instance.pk).exists():
                    label = self.fields[name].label or name
                    self.add_error(name, f"This tenant already has a {self._meta.model._meta.verbose_name} with this {label}.")
        return cleaned


# --- issuers -------------------------------------------------------------------------------------


class OptionalJSONField(forms.JSONField):
    """A JSON document or nothing: an empty box means None (not the text "null")."""

    def prepare_value(self, value):
        if value is None:
            return ""
        if isinstance(value, (dict, list)):
            return json.dumps(value, indent=2, ensure_ascii=False)
        return super().prepare_value(value)


class IssuerForm(TenantOwnedForm):
    unique_in_tenant = ("issuer_id",)
    static_jwks = OptionalJSONField(
        label="static JWKS", required=False, widget=forms.Textarea(attrs={**MONO, "rows": 6}),
        help_text='For private clusters: the public key set itself ({"keys": [...]}); nothing is fetched. '
        "Leave empty to fetch the keys (discovery, or the JWKS URI).",
    )
    jwks_refresh_interval = forms.IntegerField(
        label="JWKS refresh interval", min_value=300, max_value=86400, initial=3600, widget=SecondsInput,
        help_text="seconds, unless the upstream's Cache-Control says otherwise",
    )
    audiences = LinesField(help_text="One per line. The token's aud must contain one of these.")
    algorithms = forms.MultipleChoiceField(
        choices=[(a, a) for a in conf.SUPPORTED_UPSTREAM_ALGORITHMS],
        widget=forms.CheckboxSelectMultiple,
        help_text="Signature algorithms accepted from this issuer (never none or HMAC).",
    )

    class Meta:
        model = Issuer
        fields = "__all__"
        widgets = {
            "issuer": forms.TextInput(attrs={"class": "vTextField", "style": "width: 40em"}),
            "jwks_uri": forms.TextInput(attrs={"class": "vTextField", "style": "width: 40em"}),
            "leeway": SecondsInput,
            "max_token_age": SecondsInput,
        }


def _short_time(value) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if value else "—"


def _health_badge(status: str) -> str:
    colour = {"ok": "#2e7d32", "static": "#1565c0", "disabled": "#757575", "never fetched": "#9e6a00"}.get(
        status, "#c62828"
    )
    return format_html('<span class="jwtex-badge" style="background:{}">{}</span>', colour, status)


@admin.register(Issuer)
class IssuerAdmin(TenantScopedAdminMixin, admin.ModelAdmin):
    view_roles = VIEW
    add_roles = change_roles = delete_roles = CONFIGURE

    form = IssuerForm
    list_display = ["issuer_id", "tenant", "issuer", "enabled", "key_health", "key_ids"]
    list_filter = ["enabled", "tenant"]
    list_select_related = ["tenant"]
    search_fields = ["issuer_id", "issuer"]
    actions = ["fetch_keys_now"]
    readonly_fields = [
        "key_health",
        "cached_kids",
        "jwks_resolved_uri",
        "jwks_fetched_at",
        "jwks_expires_at",
        "jwks_changed_at",
        "jwks_last_error",
        "jwks_last_error_at",
        "jwks_consecutive_failures",
        "created_at",
        "updated_at",
    ]
    fieldsets = [
        (None, {"fields": ["tenant", "issuer_id", "issuer", "enabled"]}),
        ("Verification", {"fields": ["audiences", "algorithms", "leeway", "max_token_age", "replay_protection"]}),
        ("Keys", {"fields": ["jwks_uri", "static_jwks", "jwks_refresh_interval"]}),
        (
            "Key health",
            {
                "fields": [
                    "key_health",
                    "cached_kids",
                    "jwks_resolved_uri",
                    "jwks_fetched_at",
                    "jwks_expires_at",
                    "jwks_changed_at",
                    "jwks_last_error",
                    "jwks_last_error_at",
                    "jwks_consecutive_failures",
                    "created_at",
                    "updated_at",
                ]
            },
        ),
    ]

    @admin.display(description="keys")
    def key_health(self, obj):
        if obj is None or obj.pk is None:
            return "-"
        return _health_badge(issuer_health(obj, now=timezone.now()).status)

    @admin.display(description="key ids")
    def key_ids(self, obj):
        kids = jwks_kids(obj.static_jwks if obj.static_jwks is not None else obj.jwks)
        return ", ".join(kids) or "-"

    @admin.display(description="cached key ids")
    def cached_kids(self, obj):
        return self.key_ids(obj)

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return self.fieldsets[:3]
        return self.fieldsets

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
            _report_fetch(request, issuer, outcome)

    def has_configure_permission(self, request):
        return has_any_role(request, CONFIGURE)

    def get_urls(self):
        from . import admin_views

        view = self.admin_site.admin_view
        return [
            path("preset/", view(partial(admin_views.issuer_preset_view, model_admin=self)), name="exchange_issuer_preset"),
            path(
                "<path:object_id>/fetch-keys/",
                view(partial(admin_views.issuer_fetch_keys_view, model_admin=self)),
                name="exchange_issuer_fetch_keys",
            ),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        obj = self.get_object(request, object_id)
        extra_context["can_fetch_keys"] = has_role(request, obj.tenant_id, CONFIGURE)
        return super().change_view(request, object_id, form_url, extra_context)


def _report_fetch(request, issuer, outcome) -> None:
    if outcome.static:
        messages.info(request, f"{issuer}: static JWKS, nothing to fetch; key ids: {', '.join(outcome.kids) or 'none'}.")
    elif outcome.ok:
        what = "changed" if outcome.changed else "unchanged"
        messages.success(request, f"{issuer}: fetched ({what}); key ids: {', '.join(outcome.kids) or 'none'}.")
    else:
        kept = f" Still using the last good set: {', '.join(outcome.kids)}." if outcome.kids else ""
        messages.error(request, f"{issuer}: the fetch failed: {outcome.error}.{kept}")


# --- rules ---------------------------------------------------------------------------------------


class IssuerChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj):
        return f"{obj.issuer_id} — {obj.issuer}"


TAG_HELP = (
    f"AWS session tags: {{\"tag key\": \"CEL expression\"}}, e.g. {{\"repository\": \"claims.repository\"}}. "
    f"At most {MAX_SESSION_TAGS} tags; keys 1–{MAX_TAG_KEY_LENGTH} and values up to {MAX_TAG_VALUE_LENGTH} "
    "characters of letters, numbers, spaces and _ . : / = + - @; keys may not start with aws:."
)


class RuleForm(TenantOwnedForm):
    unique_in_tenant = ("name",)
    jwtex_tenant_id: int | None = None  # set by RuleAdmin.get_form: narrows the issuer choices

    audiences = LinesField(required=False, help_text="Other audiences a caller may request, one per line.")
    transitive_tag_keys = LinesField(required=False, help_text="Session tag keys to pass on in role chaining, one per line.")

    class Meta:
        model = Rule
        exclude = ["position"]
        widgets = {
            "when": forms.Textarea(attrs={**MONO, "rows": 3}),
            "subject": forms.Textarea(attrs={**MONO, "rows": 1}),
            "session_tags": forms.Textarea(attrs={**MONO, "rows": 4}),
            "claims": forms.Textarea(attrs={**MONO, "rows": 3}),
            "lifetime": SecondsInput,
        }
        help_texts = {
            "when": "CEL over claims (the verified upstream claims) and issuer (the issuer id). "
            "The first enabled rule whose issuers include the token's issuer and whose condition is true decides.",
            "subject": "CEL; empty means claims.sub.",
            "session_tags": TAG_HELP,
            "claims": 'Extra claims: {"name": "CEL expression"}; iss, sub, aud, exp, iat, nbf, jti are reserved.',
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        field = self.fields.get("issuers")
        if field is not None:
            # Only the rule's own tenant's issuers are offered (RuleAdmin asks for the tenant first).
            queryset = field.queryset.select_related("tenant").order_by("issuer_id")
            if self.jwtex_tenant_id is not None:
                queryset = queryset.filter(tenant_id=self.jwtex_tenant_id)
            field.queryset = queryset
            field.error_messages["invalid_choice"] = (
                "Pick issuers of this rule's tenant: one of the issuers chosen belongs to another tenant "
                "or no longer exists."
            )

    def clean(self):
        cleaned = super().clean()
        tenant_id = self.tenant_id()
        issuers = cleaned.get("issuers")
        if tenant_id is not None and issuers is not None:
            foreign = [str(i) for i in issuers if i.tenant_id != tenant_id]
            if foreign:
                self.add_error("issuers", f"These issuers belong to another tenant: {', '.join(foreign)}.")
        return cleaned


@admin.register(Rule)
class RuleAdmin(TenantScopedAdminMixin, admin.ModelAdmin):
    view_roles = VIEW
    add_roles = change_roles = delete_roles = CONFIGURE

    form = RuleForm
    list_display = ["order", "name", "tenant", "effect", "enabled", "issuer_ids", "tag_keys", "move"]
    list_display_links = ["name"]
    list_filter = ["effect", "enabled", "tenant"]
    list_select_related = ["tenant"]
    search_fields = ["name", "when"]
    ordering = ["tenant__slug", "position", "id"]
    fieldsets = [
        (None, {"fields": ["tenant", "name", "enabled", "issuers", "when", "effect"]}),
        (
            "What an allow rule emits",
            {"fields": ["subject", "audience", "audiences", "lifetime", "session_tags", "transitive_tag_keys", "claims"]},
        ),
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related(
            Prefetch("issuers", queryset=Issuer.objects.only("id", "issuer_id", "tenant_id").order_by("issuer_id"))
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
        if wanted and str(wanted).isdigit() and has_role(request, int(wanted), self.add_roles):
            return int(wanted)
        return None

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        tenant_id = obj.tenant_id if obj is not None else self._new_rule_tenant_id(request)
        if obj is None and tenant_id is not None and "tenant" in form.base_fields:
            # The issuers offered are this tenant's: the tenant is fixed for this form.
            form.base_fields["tenant"].queryset = form.base_fields["tenant"].queryset.filter(pk=tenant_id)
        form.jwtex_tenant_id = tenant_id
        return form

    def add_view(self, request, form_url="", extra_context=None):
        if request.method != "POST" and self._new_rule_tenant_id(request) is None:
            tenants = list(self.writable_tenants(request).only("pk", "slug", "name"))
            if len(tenants) > 1:
                # Issuers belong to a tenant: ask which one before showing its issuers.
                return TemplateResponse(
                    request,
                    "jwtex/choose_tenant.html",
                    {
                        **self.admin_site.each_context(request),
                        "opts": self.model._meta,
                        "title": "Add a rule: for which tenant?",
                        "choices": [(t, f"{reverse('admin:exchange_rule_add')}?tenant={t.pk}") for t in tenants],
                    },
                )
        return super().add_view(request, form_url, extra_context)

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        filters = QueryDict(request.GET.get("_changelist_filters", ""))
        if "tenant" not in initial and filters.get("tenant__id__exact", "").isdigit():
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
            obj.position = rule_position_next(tenant=obj.tenant)
        super().save_model(request, obj, form, change)

    def get_urls(self):
        from . import admin_views

        view = self.admin_site.admin_view
        return [
            path("simulate/", view(partial(admin_views.rule_simulator_view, model_admin=self)), name="exchange_rule_simulate"),
            path(
                "<path:object_id>/move/<str:direction>/",
                view(partial(admin_views.rule_move_view, model_admin=self)),
                name="exchange_rule_move",
            ),
            *super().get_urls(),
        ]

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        from .presets import PRESETS, preset_for_issuer

        extra_context = dict(extra_context or {})
        tenant_ids = None
        if object_id:
            obj = self.get_object(request, object_id)
            tenant_ids = [obj.tenant_id]
        used = {
            p.key
            for i in self.get_field_queryset_issuers(request, tenant_ids)
            if (p := preset_for_issuer(i.issuer, has_static_jwks=i.static_jwks is not None)) is not None
        }
        extra_context["claim_presets"] = [(p, p.key in used) for p in PRESETS]
        return super().changeform_view(request, object_id, form_url, extra_context)

    def get_field_queryset_issuers(self, request, tenant_ids):
        queryset = scope(Issuer.objects.only("issuer", "static_jwks"), request, VIEW)
        return queryset.filter(tenant_id__in=tenant_ids) if tenant_ids else queryset

    def changelist_view(self, request, extra_context=None):
        extra_context = dict(extra_context or {})
        extra_context["simulate_url"] = reverse("admin:exchange_rule_simulate")
        return super().changelist_view(request, extra_context)


# --- signing keys -------------------------------------------------------------------------------


@admin.register(SigningKey)
class SigningKeyAdmin(TenantScopedAdminMixin, admin.ModelAdmin):
    view_roles = VIEW
    add_roles = change_roles = delete_roles = NOBODY

    list_display = ["kid_short", "tenant", "alg", "state_badge", "created", "signs_from", "retire_after_", "revoke"]
    list_display_links = ["kid_short"]
    list_filter = ["state", "tenant"]
    list_select_related = ["tenant"]
    search_fields = ["kid"]
    exclude = ["private_key_encrypted"]
    fields = ["tenant", "kid", "algorithm", "state", "public_jwk_pretty", "created_at", "activate_after",
              "activated_at", "retiring_at", "retire_after", "retired_at", "private_part"]
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
        return format_html('<span class="jwtex-badge" style="background:{}" title="{}">{}</span>', colour,
                           obj.get_state_display(), obj.state)

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
        return "destroyed" if obj.state in (KeyState.RETIRED, KeyState.REVOKED) else "kept encrypted at rest; never shown"

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
        from . import admin_views

        view = self.admin_site.admin_view
        return [
            path(
                "rotate/<path:tenant_id>/",
                view(partial(admin_views.signing_key_rotate_view, model_admin=self)),
                name="exchange_signingkey_rotate",
            ),
            path(
                "<path:object_id>/revoke/",
                view(partial(admin_views.signing_key_revoke_view, model_admin=self)),
                name="exchange_signingkey_revoke",
            ),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        extra_context = dict(extra_context or {})
        extra_context["rotatable_tenants"] = list(tenants_for(request, CONFIGURE).only("pk", "slug"))
        return super().changelist_view(request, extra_context)


# --- audit log ----------------------------------------------------------------------------------


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
