"""The admin's own pages: tenant overview, issuer presets, "fetch keys now", rule order and
simulator, key rotation and revocation. Each view checks the user's role in the tenant
concerned (404 when the user has no role there, 403 when the role does not allow it),
parses its form and calls a service; state changes are POST only, behind a confirmation
page where they cannot be undone.
"""

from __future__ import annotations

import secrets

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from tenants.admin_mixins import CONFIGURE, OWN, VIEW, has_role, scope, tenant_get_or_404, tenants_for, user_roles

from ..conf import jwtex_settings
from ..console.presets import PRESETS, PresetError, preset_get
from ..keys import signing_key_revoke, signing_key_rotate
from ..models import PUBLISHED_KEY_STATES, Issuer, Rule, SigningKey
from ..services.overview import tenant_overview_get
from ..services.rules import rule_move
from ..services.simulator import claims_simulate, token_simulate
from ..services.tenants import issuer_id_free
from ..upstream.issuer_keys import issuer_keys_fetch_now
from .page_forms import PresetForm, SimulatorForm


def page_context(model_admin, request, **extra):
    return {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "app_label": model_admin.model._meta.app_label,
        **extra,
    }


def _object_or_404(model_admin, request, object_id):
    return model_admin.get_object(request, object_id)  # scoped queryset; raises Http404


def role_require(request, tenant_id: int, roles) -> None:
    if not has_role(request, tenant_id, roles):
        raise PermissionDenied


# --- tenant overview ------------------------------------------------------------------------------


def tenant_overview_view(request, object_id, *, model_admin):
    tenant = tenant_get_or_404(request, object_id, VIEW)
    overview = tenant_overview_get(tenant=tenant, now=timezone.now())
    role = "superuser" if request.user.is_superuser else user_roles(request).get(tenant.pk)
    return TemplateResponse(
        request,
        "jwtex/tenant_overview.html",
        page_context(
            model_admin,
            request,
            title=f"{tenant.name} ({tenant.slug})",
            overview=overview,
            tenant=tenant,
            role=role,
            can_configure=has_role(request, tenant.pk, CONFIGURE),
            can_own=has_role(request, tenant.pk, OWN),
        ),
    )


# --- issuer presets and fetching keys ---------------------------------------------------------------


def issuer_preset_view(request, *, model_admin):
    if not model_admin.has_add_permission(request):
        raise PermissionDenied
    tenants = tenants_for(request, CONFIGURE)
    form = PresetForm(request.POST or None, tenants=tenants, initial={"tenant": request.GET.get("tenant")})
    if request.method == "POST" and form.is_valid():
        preset = preset_get(form.cleaned_data["preset"])
        params = {p.name: form.cleaned_data.get(f"{preset.key}__{p.name}", "") for p in preset.parameters}
        try:
            values = preset.build(
                params,
                allow_insecure=jwtex_settings.allow_insecure_issuers,
                tenant_issuer=jwtex_settings.issuer_url(form.cleaned_data["tenant"].slug),
            )
        except PresetError as exc:
            form.add_error(f"{preset.key}__{exc.parameter}" if exc.parameter else None, str(exc))
        else:
            token = secrets.token_urlsafe(8)
            request.session["jwtex_issuer_preset"] = {
                "preset": token,
                "values": {
                    "tenant": form.cleaned_data["tenant"].pk,
                    "issuer_id": issuer_id_free(tenant=form.cleaned_data["tenant"], wanted=values.issuer_id),
                    "issuer": values.issuer,
                    "audiences": values.audiences,
                    "algorithms": values.algorithms,
                    "static_jwks": values.static_jwks,
                    "max_token_age": values.max_token_age,
                },
            }
            messages.info(
                request,
                f"Filled in from the {preset.label} preset: check the values, then save."
                + (
                    " The issuer is shared by every customer of the platform: its audience is this tenant's "
                    "own issuer URL, and an allow rule must test the owner claim."
                    if preset.shared_issuer
                    else ""
                ),
            )
            return HttpResponseRedirect(reverse("admin:exchange_issuer_add") + f"?preset={token}")
    presets = [(p, form.parameter_fields(p.key)) for p in PRESETS]
    return TemplateResponse(
        request,
        "jwtex/issuer_preset.html",
        page_context(model_admin, request, title="Add an issuer from a preset", form=form, presets=presets),
    )


def issuer_fetch_keys_view(request, object_id, *, model_admin):
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    issuer = _object_or_404(model_admin, request, object_id)
    role_require(request, issuer.tenant_id, CONFIGURE)
    fetch_outcome_report(request, issuer, issuer_keys_fetch_now(issuer=issuer, now=timezone.now()))
    return HttpResponseRedirect(reverse("admin:exchange_issuer_change", args=[issuer.pk]))


# --- rules ----------------------------------------------------------------------------------------


def rule_move_view(request, object_id, direction, *, model_admin):
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    rule = _object_or_404(model_admin, request, object_id)
    role_require(request, rule.tenant_id, CONFIGURE)
    if direction not in {"up", "down"}:
        raise Http404("No such direction.")
    if not rule_move(rule=rule, direction=direction):
        messages.info(request, f"“{rule.name}” is already {'first' if direction == 'up' else 'last'}.")
    back = request.META.get("HTTP_REFERER", "")
    changelist = reverse("admin:exchange_rule_changelist")
    # Back to the list the button was on (with its filters), never to another site.
    if back and request.get_host() in back.split("/")[2:3] and changelist in back:
        return HttpResponseRedirect(back)
    return HttpResponseRedirect(changelist)


def rule_simulator_view(request, *, model_admin):
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    tenants = tenants_for(request, VIEW)
    issuers = scope(Issuer.objects.select_related("tenant").filter(enabled=True), request, VIEW).order_by(
        "tenant__slug", "issuer_id"
    )
    data = request.POST if request.method == "POST" else None
    initial = {"tenant": request.GET.get("tenant") or (tenants.first().pk if tenants.count() == 1 else None)}
    form = SimulatorForm(data, tenants=tenants, issuers=issuers, initial=initial)
    result = None
    if data is not None and form.is_valid():
        tenant, issuer = form.cleaned_data["tenant"], form.cleaned_data["issuer"]
        audience = form.cleaned_data["audience"].strip() or None
        outbound = has_role(request, tenant.pk, CONFIGURE)  # an auditor's simulation calls nothing outside
        draft = form.cleaned_data.get("draft")  # a rule to try first, checked as saving it would be
        if form.cleaned_data["mode"] == "token":
            result = token_simulate(
                tenant=tenant,
                issuer=issuer,
                token=form.cleaned_data["token"],
                audience=audience,
                outbound=outbound,
                draft=draft,
            )
        else:
            result = claims_simulate(
                tenant=tenant,
                issuer=issuer,
                claims=form.cleaned_data["claims_parsed"],
                audience=audience,
                outbound=outbound,
                draft=draft,
            )
    rule_links = {}
    if result is not None:
        rule_links = {
            r.pk: reverse("admin:exchange_rule_change", args=[r.pk])
            for r in Rule.objects.filter(tenant=form.cleaned_data["tenant"]).only("pk")
        }
    return TemplateResponse(
        request,
        "jwtex/simulator.html",
        page_context(
            model_admin,
            request,
            title="Rule simulator",
            form=form,
            result=result,
            rule_links=rule_links,
            replay_tenants=tenants.order_by("slug")[:20],
        ),
    )


# --- signing keys ---------------------------------------------------------------------------------


def signing_key_rotate_view(request, tenant_id, *, model_admin):
    tenant = tenant_get_or_404(request, tenant_id, VIEW)
    role_require(request, tenant.pk, CONFIGURE)
    if request.method == "POST":
        result = signing_key_rotate(tenant_id=tenant.pk, now=timezone.now(), force=True)
        if result.skipped:
            messages.warning(request, "Another worker is changing this tenant's keys right now; try again in a moment.")
        elif result.changed:
            parts = []
            if result.created:
                parts.append(f"published new key {', '.join(result.created)}")
            if result.activated:
                parts.append(f"{result.activated} signs now")
            if result.retiring:
                parts.append(f"retiring {', '.join(result.retiring)}")
            messages.success(request, f"{tenant.slug}: " + "; ".join(parts) + ".")
        else:
            messages.info(request, f"{tenant.slug}: a new key is already published and waits for its activation time.")
        return HttpResponseRedirect(_keys_url(tenant.pk))
    keys = SigningKey.objects.filter(tenant=tenant, state__in=PUBLISHED_KEY_STATES).order_by("created_at")
    return TemplateResponse(
        request,
        "jwtex/confirm.html",
        page_context(
            model_admin,
            request,
            title=f"Rotate the signing key of {tenant.slug} now?",
            tenant=tenant,
            keys=keys,
            action="rotate",
            cancel_url=_keys_url(tenant.pk),
        ),
    )


def _keys_url(tenant_id: int) -> str:
    """The keys page, filtered to one tenant."""
    return reverse("admin:exchange_signingkey_changelist") + f"?tenant__id__exact={tenant_id}"


def signing_key_revoke_view(request, object_id, *, model_admin):
    key = _object_or_404(model_admin, request, object_id)
    role_require(request, key.tenant_id, OWN)
    if key.state not in PUBLISHED_KEY_STATES:
        messages.info(request, f"Key {key.kid} is {key.state}: it is not published and cannot sign.")
        return HttpResponseRedirect(reverse("admin:exchange_signingkey_changelist"))
    if request.method == "POST":
        result = signing_key_revoke(tenant=key.tenant, kid=key.kid, now=timezone.now())
        tail = f" {result.activated} signs now." if result.activated else ""
        if result.created and not result.activated:
            tail = f" New key {', '.join(result.created)} signs now."
        messages.success(request, f"Revoked {key.kid}: it left the JWKS and its private part is destroyed.{tail}")
        return HttpResponseRedirect(_keys_url(key.tenant_id))
    return TemplateResponse(
        request,
        "jwtex/confirm.html",
        page_context(
            model_admin,
            request,
            title=f"Revoke key {key.kid}?",
            tenant=key.tenant,
            key=key,
            action="revoke",
            cancel_url=_keys_url(key.tenant_id),
        ),
    )


def fetch_outcome_report(request, issuer, outcome) -> None:
    if outcome.static:
        messages.info(
            request, f"Issuer {issuer}: static JWKS, nothing to fetch; key ids: {', '.join(outcome.kids) or 'none'}."
        )
    elif outcome.ok:
        what = "changed" if outcome.changed else "unchanged"
        messages.success(request, f"Issuer {issuer}: fetched ({what}); key ids: {', '.join(outcome.kids) or 'none'}.")
    else:
        kept = f" Still using the last good set: {', '.join(outcome.kids)}." if outcome.kids else ""
        messages.error(request, f"Issuer {issuer}: the fetch failed: {outcome.error}.{kept}")
