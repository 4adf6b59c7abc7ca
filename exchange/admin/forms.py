"""The admin's forms: list fields edited one per line and tenant-owned model forms (the admin's own
pages have theirs in exchange/admin/page_forms.py). Validation of a row is its model's ``clean()`` —
the same that ``jwtex_apply`` runs."""

from __future__ import annotations

import json

from django import forms

from tenants.admin_mixins import StrictJSONFormField
from tenants.models import KeyBackend, Tenant
from tenants.widgets import SecondsInput

from ..core.aws import MAX_SESSION_TAGS, MAX_TAG_KEY_LENGTH, MAX_TAG_VALUE_LENGTH
from ..core.limits import SUPPORTED_UPSTREAM_ALGORITHMS
from ..core.rules.spec import MAPPER_DEFAULT_TIMEOUT_MS, MAPPER_MAX_TIMEOUT_MS
from ..models import Issuer, Rule
from ..publish.documents import published_url_problem_for
from .tag_rows import TagRowsField

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
    duplicate_message = "This tenant already has one with this {field}: “{value}”."

    def tenant_id(self) -> int | None:
        if self.instance.pk is not None:
            return self.instance.tenant_id
        tenant = self.cleaned_data.get("tenant")
        return tenant.pk if tenant is not None else None

    def unique_scope(self) -> dict:
        """More fields a name must be unique among, besides the tenant."""
        return {}

    def clean(self):
        cleaned = super().clean()
        tenant_id = self.tenant_id()
        if tenant_id is not None:
            # The tenant is read-only on change, so Django's own unique check skips these.
            manager = type(self.instance)._default_manager
            for name in self.unique_in_tenant:
                value = cleaned.get(name)
                same = manager.filter(tenant_id=tenant_id, **self.unique_scope(), **{name: value})
                if value and same.exclude(pk=self.instance.pk).exists():
                    label = str(self.fields[name].label or name).lower()
                    self.add_error(name, self.duplicate_message.format(field=label, value=value))
                    # Kept on the instance, so its own validation does not also say the field is empty.
                    cleaned[name] = value
        return cleaned


class OptionalJSONField(StrictJSONFormField):
    """A JSON document or nothing: an empty box means None (not the text "null")."""

    def prepare_value(self, value):
        if value is None:
            return ""
        if isinstance(value, (dict, list)):
            return json.dumps(value, indent=2, ensure_ascii=False)
        return super().prepare_value(value)


class IssuerForm(TenantOwnedForm):
    unique_in_tenant = ("issuer_id",)
    duplicate_message = "This tenant already has an issuer with the id “{value}”."
    static_jwks = OptionalJSONField(
        label="static JWKS",
        required=False,
        widget=forms.Textarea(attrs={**MONO, "rows": 6}),
        help_text='For private clusters: the public key set itself ({"keys": [...]}); nothing is fetched. '
        "Leave empty to fetch the keys (discovery, or the JWKS URI).",
    )
    jwks_refresh_interval = forms.IntegerField(
        label="JWKS refresh interval",
        min_value=300,
        max_value=86400,
        widget=SecondsInput,
        initial=Issuer._meta.get_field("jwks_refresh_interval").get_default(),
        help_text="seconds, unless the upstream's Cache-Control says otherwise",
    )
    audiences = LinesField(help_text="One per line. The token's aud must contain one of these.")
    algorithms = forms.MultipleChoiceField(
        choices=[(a, a) for a in SUPPORTED_UPSTREAM_ALGORITHMS],
        widget=forms.CheckboxSelectMultiple,
        help_text="Signature algorithms accepted from this issuer (never none or HMAC).",
    )

    class Meta:
        model = Issuer
        fields = "__all__"
        labels = {"jwks_uri": "JWKS URI"}
        widgets = {
            "issuer": forms.TextInput(attrs={"class": "vTextField", "style": "width: 40em"}),
            "jwks_uri": forms.TextInput(attrs={"class": "vTextField", "style": "width: 40em"}),
            "leeway": SecondsInput,
            "max_token_age": SecondsInput,
        }


class IssuerChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj):
        return f"{obj.issuer_id} — {obj.issuer}"


TAG_HELP = (
    "One row per AWS session tag, in the order they appear in the token: the tag key, a CEL expression for its "
    "value, and “optional” to leave the tag out when its claim is missing or empty (without it, a missing claim "
    "denies the exchange). "
    f"At most {MAX_SESSION_TAGS} tags; keys 1–{MAX_TAG_KEY_LENGTH} and values up to {MAX_TAG_VALUE_LENGTH} "
    "characters of letters, numbers, spaces and _ . : / = + - @; keys ignore case (Repo and repo are one key) and "
    "may not start with aws:. "
    "aws_tag(value) turns any string into a valid value "
    f"(each refused character becomes _, cut to {MAX_TAG_VALUE_LENGTH}), "
    "e.g. actor → aws_tag(claims.actor). Clear a row's key and expression to remove it."
)


class RuleForm(TenantOwnedForm):
    unique_in_tenant = ("name",)
    duplicate_message = "This tenant already has a rule named “{value}”."
    jwtex_tenant_id: int | None = None  # set by RuleAdmin.get_form: narrows the issuer choices
    jwtex_shadow: bool = False  # set by RuleAdmin.get_form: a new rule of the candidate set

    audiences = LinesField(required=False, help_text="Other audiences a caller may request, one per line.")
    transitive_tag_keys = LinesField(
        required=False, help_text="Session tag keys to pass on in role chaining, one per line."
    )
    session_tags = TagRowsField(label="Session tags", required=False, help_text=TAG_HELP)
    mapper_timeout_ms = forms.IntegerField(
        label="mapper timeout (ms)",
        required=False,
        initial=MAPPER_DEFAULT_TIMEOUT_MS,  # bounds: the rule check's
        help_text=f"effect mapper: how long the webhook may take (default {MAPPER_DEFAULT_TIMEOUT_MS} ms, "
        f"at most {MAPPER_MAX_TIMEOUT_MS})",
    )

    class Meta:
        model = Rule
        exclude = ["position"]
        widgets = {
            "when": forms.Textarea(attrs={**MONO, "rows": 3}),
            "subject": forms.Textarea(attrs={**MONO, "rows": 1}),
            "source_identity": forms.Textarea(attrs={**MONO, "rows": 1}),
            "claims": forms.Textarea(attrs={**MONO, "rows": 3}),
            "lifetime": SecondsInput,
            "mapper_url": forms.TextInput(attrs={"class": "vTextField", "style": "width: 40em"}),
        }
        help_texts = {
            "when": "CEL over claims (the verified upstream claims) and issuer (the issuer id). "
            "The first enabled rule whose issuers include the token's issuer and whose condition is true decides.",
            "subject": "CEL; empty means claims.sub.",
            "claims": 'Extra claims: {"name": "CEL expression"}; iss, sub, aud, exp, iat, nbf, jti and AWS\'s claims '
            "(https://aws.amazon.com/…) are reserved.",
            "source_identity": "CEL for the AWS session's SourceIdentity, which CloudTrail records on every action and "
            "role chaining keeps; empty: none. AWS takes 2–64 characters of letters, digits and _ + = , . @ - "
            "(a value that breaks this denies the exchange): aws_source_identity(value) turns any string into a valid "
            "one, e.g. aws_source_identity(claims.actor). The role's trust policy must allow sts:SetSourceIdentity.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk is None and self.jwtex_shadow:
            self.instance.shadow = True
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

    def unique_scope(self) -> dict:
        if self.instance.shadow:
            self.duplicate_message = "This tenant's candidate set already has a rule named “{value}”."
        return {"shadow": self.instance.shadow}  # the live set and the candidate set have their own names

    def clean_mapper_timeout_ms(self):
        value = self.cleaned_data.get("mapper_timeout_ms")
        return MAPPER_DEFAULT_TIMEOUT_MS if value is None else value

    def clean(self):
        cleaned = super().clean()
        tenant_id = self.tenant_id()
        issuers = cleaned.get("issuers")
        if tenant_id is not None and issuers is not None:
            foreign = [str(i) for i in issuers if i.tenant_id != tenant_id]
            if foreign:
                self.add_error("issuers", f"These issuers belong to another tenant: {', '.join(foreign)}.")
        if issuers is not None:  # for the owner pin and the platform's warnings (Rule.clean, the rule check)
            self.instance.jwtex_issuers = tuple((issuer.issuer, issuer.static_jwks is not None) for issuer in issuers)
        return cleaned


AWS_SNIPPETS_ONLY = "Only fills in the overview's snippets; changes nothing the exchange does."


class TenantForm(forms.ModelForm):
    aws_account_ids = LinesField(
        label="AWS account ids",
        required=False,
        rows=2,
        help_text="One per line, 12 digits each (e.g. 111122223333): the accounts whose roles trust this tenant. "
        "The overview shows a trust policy and role ARN per account. " + AWS_SNIPPETS_ONLY,
    )
    # Not required: a form posted without it (a script of before AWS KMS) keeps the tenant's backend.
    key_backend = forms.ChoiceField(
        label="key backend",
        choices=KeyBackend.choices,
        required=False,
        initial=KeyBackend.LOCAL,
        help_text="Where new signing keys are made: here (encrypted at rest), or in AWS KMS, whose private key "
        "never leaves it (every token is signed by a KMS Sign call). Changing it changes the next key: the current "
        "one signs until it is rotated (Signing keys → rotate now).",
    )

    class Meta:
        model = Tenant
        fields = "__all__"
        widgets = {
            "max_token_lifetime": SecondsInput,
            "key_rotation_interval": SecondsInput,
            "key_prepublish_window": SecondsInput,
        }
        labels = {
            "aws_region": "AWS region",
            "aws_role_name": "IAM role name",
            "kms_region": "AWS KMS region",
            "kms_account_id": "AWS KMS account id",
        }
        help_texts = {
            "aws_region": "e.g. eu-west-1: the region of the CloudFormation stack, Terraform provider and CI jobs. "
            + AWS_SNIPPETS_ONLY,
            "aws_role_name": "The role the CI jobs assume (1–64 letters, digits and _+=,.@-); empty: "
            "jwtex-TENANT-example. " + AWS_SNIPPETS_ONLY,
            "kms_region": "AWS KMS: the region where the tenant's keys are made and sign, e.g. eu-west-1 "
            "(needed for AWS KMS; the credentials are jwtex's own, from the standard AWS chain).",
            "kms_account_id": "AWS KMS, optional: the 12-digit account the keys must be in; a key made elsewhere "
            "(jwtex running with another account's credentials) is refused and scheduled for deletion.",
        }

    def clean_key_backend(self):
        return self.cleaned_data.get("key_backend") or self.instance.key_backend or KeyBackend.LOCAL

    def clean_published_issuer_url(self):
        # The check jwtex_apply makes too (exchange.publish.documents).
        value = self.cleaned_data.get("published_issuer_url") or ""
        slug = self.instance.slug or self.data.get("slug") or ""
        problem = published_url_problem_for(value=value, exclude_slugs=[slug] if slug else [])
        if problem:
            raise forms.ValidationError(problem)
        return value
