"""The forms of the admin's own pages: "add issuer from a preset" and the simulator. The rule to
try is checked exactly as ``jwtex_apply`` checks a rule of a file."""

from __future__ import annotations

import dataclasses

from django import forms

from tenants.models import Tenant

from ..config.files import config_load
from ..config.schema import ConfigError
from ..config.validate import desired_rule_spec, rule_document_check
from ..console.presets import PRESETS, preset_get
from ..core.errors import ExchangeError
from ..models import Issuer
from ..services.simulator import claims_json_parse


class PresetForm(forms.Form):
    tenant = forms.ModelChoiceField(queryset=None, empty_label=None)
    preset = forms.ChoiceField(choices=[(p.key, p.label) for p in PRESETS], widget=forms.RadioSelect)

    def __init__(self, *args, tenants, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tenant"].queryset = tenants
        for preset in PRESETS:
            for parameter in preset.parameters:
                name = f"{preset.key}__{parameter.name}"
                widget = (
                    forms.Textarea(attrs={"rows": 6, "class": "vLargeTextField jwtex-mono"})
                    if parameter.multiline
                    else None
                )
                self.fields[name] = forms.CharField(
                    label=parameter.label, help_text=parameter.help, required=False, widget=widget
                )

    def parameter_fields(self, preset_key: str):
        return [self[f"{preset_key}__{p.name}"] for p in preset_get(preset_key).parameters]


class SimulatorForm(forms.Form):
    MODES = [("token", "a token (verified for real)"), ("claims", "claims JSON (unverified simulation)")]

    tenant = forms.ModelChoiceField(queryset=None, empty_label=None)
    issuer = forms.ModelChoiceField(
        queryset=None,
        required=False,
        empty_label="(by the token's iss)",
        help_text="Required for claims. For a token, leave empty to pick it by iss as the exchange does.",
    )
    mode = forms.ChoiceField(choices=MODES, widget=forms.RadioSelect, initial="token")
    # Not stripped: the simulator must see what an endpoint would (a trailing newline is refused).
    token = forms.CharField(
        required=False, strip=False, widget=forms.Textarea(attrs={"rows": 4, "class": "vLargeTextField jwtex-mono"})
    )
    claims = forms.CharField(
        required=False,
        widget=forms.Textarea(
            attrs={
                "rows": 8,
                "class": "vLargeTextField jwtex-mono",
                "placeholder": '{"sub": "repo:octo-org/app:ref:refs/heads/main", "repository": "octo-org/app",\n'
                ' "repository_owner": "octo-org", "ref": "refs/heads/main", "actor": "octocat"}',
            }
        ),
    )
    audience = forms.CharField(
        required=False, help_text="The audience the caller would request; empty: the rule's default."
    )
    rule = forms.CharField(
        label="rule to try",
        required=False,
        strip=False,
        widget=forms.Textarea(
            attrs={
                "rows": 6,
                "class": "vLargeTextField jwtex-mono",
                "placeholder": "name: main\nissuers: [github]\nwhen: claims.ref == 'refs/heads/main'",
            }
        ),
        help_text="Optional: one rule as in a configuration file (YAML or JSON), evaluated before the tenant's rules "
        "and never saved. It is checked exactly as saving it would be (names, functions, cost budget, owner pinning).",
    )

    def __init__(self, *args, tenants, issuers, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tenant"].queryset = tenants
        self.fields["issuer"].queryset = issuers
        self.fields["issuer"].label_from_instance = lambda i: f"{i.issuer_id} ({i.tenant.slug}) — {i.issuer}"

    def clean(self):
        cleaned = super().clean()
        tenant, issuer, mode = cleaned.get("tenant"), cleaned.get("issuer"), cleaned.get("mode")
        if tenant is not None and issuer is not None and issuer.tenant_id != tenant.pk:
            self.add_error("issuer", "This issuer belongs to another tenant.")
        if mode == "token" and not cleaned.get("token", "").strip():
            self.add_error("token", "Paste the upstream token (its signature is checked; nothing is issued).")
        if mode == "claims":
            if issuer is None:
                self.add_error("issuer", "Claims need an issuer: the rules are chosen by it.")
            text = cleaned.get("claims", "")
            if not text.strip():
                self.add_error("claims", "A JSON object of claims.")
            else:
                try:
                    cleaned["claims_parsed"] = claims_json_parse(text)
                except ExchangeError as exc:
                    self.add_error("claims", exc.description)
        if cleaned.get("rule", "").strip() and tenant is not None:
            self._clean_draft(cleaned, tenant)
        return cleaned

    def _clean_draft(self, cleaned: dict, tenant: Tenant) -> None:
        """The rule to try, checked as jwtex_apply checks a rule of a file (the same refusals)."""
        try:
            document = config_load(cleaned["rule"], source="the rule to try")
        except ConfigError as exc:
            for path, message in exc.errors:
                self.add_error("rule", f"{path}: {message}")
            return
        issuers = {i.issuer_id: (i.issuer, i.static_jwks is not None) for i in Issuer.objects.filter(tenant=tenant)}
        desired, errors, _ = rule_document_check(document, issuers=issuers)  # its warnings: the simulation's notes
        for path, message in errors:
            self.add_error("rule", f"{path}: {message}")
        if desired is not None and not errors:
            spec = desired_rule_spec(desired.fields, desired.issuer_ids)
            cleaned["draft"] = dataclasses.replace(spec, name=f"{spec.name} (trying, not saved)")
