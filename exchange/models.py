"""Tenant-owned rows: every model here carries a ``tenant`` foreign key
(docs/design/layout.md#the-tenant-is-explicit)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from tenants.models import KeyBackend, SigningAlgorithm, Tenant

from .conf import jwtex_settings
from .console.presets import preset_claim_types
from .core import limits
from .core.jwks import static_jwks_clean
from .core.rules.spec import MAPPER_DEFAULT_TIMEOUT_MS, MAPPER_MAX_TIMEOUT_MS, RuleSpec, rule_spec_of
from .core.validators import Problem, issuer_problems, rule_problems
from .core.values import IssuerConfig, IssuerSnapshot
from .records import AuditDecision, AuditRollup, ExchangeRecord  # noqa: F401 - the audit's tables (exchange.records)

issuer_id_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", "Letters, digits, '_', '.', '-'; at most 64 characters."
)


class OrderedJSONField(models.JSONField):
    """JSON that keeps the order of object members as written. PostgreSQL's ``jsonb``
    reorders keys, so session tags and claims would come back in another order than the
    operator wrote them (and than ``jwtex_export`` printed); the plain ``json`` type keeps
    the text as is. Nothing queries inside these fields, so jsonb's operators are not needed."""

    def db_type(self, connection):
        if connection.vendor == "postgresql":
            return "json"
        return super().db_type(connection)

    def get_db_prep_value(self, value, connection, prepared=False):
        if connection.vendor == "postgresql" and value is not None:
            from psycopg.types.json import Json

            return Json(value, dumps=lambda v: json.dumps(v, cls=self.encoder))
        return super().get_db_prep_value(value, connection, prepared)

    def from_db_value(self, value, expression, connection):
        # psycopg already decodes the ``json`` type (in document order); Django expects text.
        if value is not None and not isinstance(value, (str, bytes, bytearray)):
            return value
        return super().from_db_value(value, expression, connection)


def default_algorithms() -> list[str]:
    return list(limits.DEFAULT_ALGORITHMS)


class Issuer(models.Model):
    """An upstream OIDC issuer whose tokens a tenant accepts."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="issuers")
    issuer_id = models.CharField("id", max_length=64, validators=[issuer_id_validator])
    issuer = models.CharField(
        "issuer URL", max_length=512, help_text="compared with the token's iss exactly, character for character"
    )
    audiences = models.JSONField(default=list, help_text="the token's aud must contain one of these")
    algorithms = models.JSONField(default=default_algorithms)
    leeway = models.PositiveIntegerField(default=limits.DEFAULT_LEEWAY, validators=[MaxValueValidator(600)])
    max_token_age = models.PositiveIntegerField(
        default=limits.DEFAULT_MAX_TOKEN_AGE, validators=[MinValueValidator(1)], help_text="largest exp − iat, seconds"
    )
    jwks_uri = models.CharField("JWKS URI", max_length=1024, blank=True, help_text="default: from discovery")
    static_jwks = models.JSONField(
        "static JWKS", null=True, blank=True, help_text="for private clusters: the key set itself; nothing is fetched"
    )
    enabled = models.BooleanField(default=True)
    jwks_refresh_interval = models.PositiveIntegerField(
        default=3600, validators=[MinValueValidator(300), MaxValueValidator(86400)], help_text="seconds"
    )
    replay_protection = models.BooleanField(
        "one-time tokens",
        default=False,
        help_text="accept each upstream token (by its jti) once while it is valid; tokens without jti are refused",
    )
    # Last good upstream key set and the health of its refresh (written by exchange.jwks).
    jwks = models.JSONField("cached JWKS", null=True, blank=True, editable=False)
    jwks_fetched_at = models.DateTimeField(null=True, blank=True, editable=False)
    jwks_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    jwks_etag = models.CharField(max_length=256, blank=True, editable=False)
    jwks_resolved_uri = models.CharField(max_length=1024, blank=True, editable=False)
    jwks_changed_at = models.DateTimeField(null=True, blank=True, editable=False)
    jwks_last_error = models.TextField(blank=True, editable=False)
    jwks_last_error_at = models.DateTimeField(null=True, blank=True, editable=False)
    jwks_consecutive_failures = models.PositiveIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "issuer_id"], name="issuer_unique_id_per_tenant")]
        ordering = ["tenant__slug", "issuer_id"]

    def __str__(self) -> str:  # the names an operator knows, not a path of slugs
        return f"{self.issuer_id} of {self.tenant.name}"

    def snapshot(self) -> IssuerSnapshot:
        """This row as the exchange reads it: a frozen value, safe to share across threads."""
        return IssuerSnapshot(
            pk=self.pk,
            tenant_id=self.tenant_id,
            config=IssuerConfig(
                issuer_id=self.issuer_id,
                issuer=self.issuer,
                audiences=tuple(self.audiences or ()),
                algorithms=tuple(self.algorithms or limits.DEFAULT_ALGORITHMS),
                leeway=self.leeway,
                max_token_age=self.max_token_age,
            ),
            replay_protection=self.replay_protection,
            static_jwks=self.static_jwks,
            jwks=self.jwks,
            jwks_fetched_at=self.jwks_fetched_at,
            jwks_expires_at=self.jwks_expires_at,
        )

    def problems(self) -> list[Problem]:
        """What is wrong with this issuer beyond its fields' own validators, as (field, where in
        it, message): the one check (``core.validators.issuer_problems``) that ``clean()`` raises
        for the admin's forms and ``jwtex_apply`` reports at its paths (docs/configuration-file.md#validation)."""
        return issuer_problems(
            issuer=self.issuer,
            jwks_uri=self.jwks_uri,
            audiences=self.audiences,
            algorithms=self.algorithms,
            static_jwks=self.static_jwks,
            allow_insecure=jwtex_settings.allow_insecure_issuers,
            allowlist=jwtex_settings.allowed_upstream_issuers,
        )

    def clean(self) -> None:
        problems = self.problems()
        if problems:
            errors: dict[str, list[str]] = {}
            for field, where, message in problems:
                errors.setdefault(field, []).append(f"{field}{where}: {message}" if where else message)
            raise ValidationError(errors)
        if self.static_jwks is not None:
            # Only the members a JWK defines are kept, within a size bound (docs/configuration-file.md#issuer-keys).
            self.static_jwks = static_jwks_clean(self.static_jwks)


class Effect(models.TextChoices):
    ALLOW = "allow", "allow"
    DENY = "deny", "deny"
    MAPPER = "mapper", "mapper (a webhook decides)"


# What the rule check and the engine read of a row (``Rule.rule_fields``, ``core.rules.spec.rule_spec_of``).
RULE_FIELDS = (
    "name",
    "when",
    "effect",
    "subject",
    "audience",
    "audiences",
    "lifetime",
    "session_tags",
    "transitive_tag_keys",
    "claims",
    "any_owner",
    "mapper_url",
    "mapper_timeout_ms",
    "source_identity",
)


class Rule(models.Model):
    """One CEL rule; the first enabled rule (by position) that matches decides (docs/rules.md#how-rules-decide)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="rules")
    position = models.PositiveIntegerField(default=0, db_index=True)
    name = models.CharField(max_length=200, blank=True)  # blank: the rule check refuses it, in its words
    enabled = models.BooleanField(default=True)
    issuers = models.ManyToManyField(Issuer, related_name="rules")
    when = models.TextField("condition (CEL)", default="true")
    effect = models.CharField(max_length=8, choices=Effect.choices, default=Effect.DENY)
    subject = models.TextField("subject (CEL)", blank=True, help_text="default: claims.sub")
    audience = models.CharField(max_length=255, blank=True, help_text="default: the tenant's default audience")
    audiences = models.JSONField(default=list, blank=True, help_text="other audiences a caller may request")
    lifetime = models.PositiveIntegerField(null=True, blank=True, help_text="seconds, at least 60")
    session_tags = OrderedJSONField(
        default=dict,
        blank=True,
        help_text='AWS tag key → CEL expression, or {"value": CEL, "optional": true} to leave the tag out when its '
        "claim is missing or empty",
    )
    transitive_tag_keys = models.JSONField(default=list, blank=True)
    claims = OrderedJSONField("extra claims", default=dict, blank=True, help_text="claim name → CEL expression")
    source_identity = models.TextField(
        "source identity (CEL)",
        blank=True,
        help_text="the AWS session's SourceIdentity, which CloudTrail records on every action "
        "(docs/rules.md#source-identity), e.g. aws_source_identity(claims.actor); empty: none",
    )
    mapper_url = models.CharField(
        "mapper URL",
        max_length=1024,
        blank=True,
        help_text="effect mapper: the https webhook that decides and shapes the token (docs/mapper.md)",
    )
    mapper_timeout_ms = models.PositiveIntegerField(
        "mapper timeout (ms)",
        default=MAPPER_DEFAULT_TIMEOUT_MS,
        help_text=f"effect mapper: how long the webhook may take, at most {MAPPER_MAX_TIMEOUT_MS} ms",
    )
    # A rule of the tenant's candidate set (docs/operations.md#shadow-rules): decides every exchange beside
    # the live set, without effect on the answer; what it would have done differently goes into the audit.
    shadow = models.BooleanField("candidate (shadow)", default=False, db_index=True, editable=False)
    any_owner = models.BooleanField(
        "any owner",
        default=False,
        help_text="Allow tokens of every customer of a shared CI issuer (github.com, gitlab.com, Buildkite, HCP "
        "Terraform) without testing an owner claim. Leave off: an allow rule for such an issuer must test who owns "
        "the repository or project (e.g. claims.repository_owner_id), or any of the platform's users could use it.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "shadow", "name"], name="rule_unique_name_per_tenant_set")
        ]
        ordering = ["tenant__slug", "position", "id"]

    def __str__(self) -> str:
        return self.name

    def spec(self, *, issuer_ids: frozenset[str] = frozenset()) -> RuleSpec:
        """This rule as the engine reads it (``issuer_ids``: the enabled issuers it applies to)."""
        return rule_spec_of(self.rule_fields(), issuers=issuer_ids, rule_id=self.pk)

    def rule_fields(self) -> dict[str, Any]:
        """The values the rule check and the engine read, by model field."""
        return {name: getattr(self, name) for name in RULE_FIELDS}

    # The issuers the rule is being saved with, as (URL, has a static JWKS): set by whoever knows
    # them before validating (the admin's form, jwtex_apply), for the owner pin a shared CI issuer
    # needs and the warnings that depend on the platform (a claim it sends as a string compared with a number).
    jwtex_issuers: tuple[tuple[str, bool], ...] = ()
    # What the last clean() warned about, as (field path, message): shown beside a rule that saves.
    jwtex_warnings: tuple[tuple[str, str], ...] = ()

    def findings(self) -> tuple[list[Problem], list[Problem]]:
        """What is wrong with this rule beyond its fields' own bounds, as (field, where in it, message),
        and its warnings: the one rule check (``core.validators.rule_problems``) that ``clean()``
        raises for the admin's forms and ``jwtex_apply`` reports at its paths
        (docs/rules.md#checked-when-a-rule-is-saved, docs/configuration-file.md#validation)."""
        return rule_problems(
            self.rule_fields(),
            issuer_urls=[url for url, _ in self.jwtex_issuers],
            claim_types=preset_claim_types(self.jwtex_issuers),
            allow_insecure=jwtex_settings.allow_insecure_issuers,
        )

    def problems(self) -> list[Problem]:
        return self.findings()[0]

    def clean_fields(self, exclude=None) -> None:
        # The effect is judged by the rule check, in its words; its column's choices would say it again.
        super().clean_fields(exclude={*(exclude or ()), "effect"})

    def clean(self) -> None:
        """The rule check's problems, by field (``session_tags.repo: …`` for a part of one); its
        warnings are kept in ``jwtex_warnings``. The issuers (many-to-many) are checked by the
        form, which sees them."""
        problems, warnings = self.findings()
        self.jwtex_warnings = tuple((field + where, message) for field, where, message in warnings)
        if problems:
            errors: dict[str, list[str]] = {}
            for field, where, message in problems:
                errors.setdefault(field, []).append(f"{field}{where}: {message}" if where else message)
            raise ValidationError(errors)


class KeyState(models.TextChoices):
    NEXT = "next", "next (published, not yet signing)"
    ACTIVE = "active", "active (signing)"
    RETIRING = "retiring", "retiring (published until its tokens expire)"
    RETIRED = "retired", "retired (private part destroyed)"
    REVOKED = "revoked", "revoked (withdrawn at once)"


PUBLISHED_KEY_STATES = (KeyState.NEXT, KeyState.ACTIVE, KeyState.RETIRING)


class SigningKey(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="signing_keys")
    kid = models.CharField(max_length=64, help_text="RFC 7638 JWK thumbprint")
    algorithm = models.CharField(max_length=8, choices=SigningAlgorithm.choices)
    state = models.CharField(max_length=16, choices=KeyState.choices, default=KeyState.NEXT, db_index=True)
    public_jwk = models.JSONField()
    # Fernet token of the PKCS#8 private key under JWTEX_KEY_ENCRYPTION_KEYS; emptied on retirement.
    # Always empty for an AWS KMS key: its private part never leaves KMS.
    private_key_encrypted = models.BinaryField(editable=False)
    backend = models.CharField(max_length=16, choices=KeyBackend.choices, default=KeyBackend.LOCAL, editable=False)
    kms_key_id = models.CharField("AWS KMS key ARN", max_length=256, blank=True, editable=False)
    # When ScheduleKeyDeletion succeeded for this retired or revoked KMS key (retried until it does).
    kms_deletion_scheduled_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(db_index=True)
    activate_after = models.DateTimeField(null=True, blank=True, help_text="earliest time it may sign")
    activated_at = models.DateTimeField(null=True, blank=True)
    retiring_at = models.DateTimeField(null=True, blank=True, help_text="when it stopped signing")
    retire_after = models.DateTimeField(null=True, blank=True, help_text="when its last token has expired")
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "kid"], name="signingkey_unique_kid_per_tenant"),
            models.UniqueConstraint(
                fields=["tenant"], condition=models.Q(state="active"), name="signingkey_one_active_per_tenant"
            ),
        ]
        ordering = ["tenant__slug", "-created_at"]

    def __str__(self) -> str:
        return f"{self.kid[:12]}… of {self.tenant.name} ({self.state})"


class IssuerPublication(models.Model):
    """What jwtex last published of a tenant's issuer documents, and what it read back
    (docs/endpoints.md#published-issuer-url). Written only by exchange.publish; read by the
    rotation (a next key is promoted only once confirmed live) and the runtime (a key signs only
    once confirmed live), the admin and /metrics."""

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="publication")
    url = models.CharField(max_length=255, help_text="the published issuer URL this state is about")
    # {kid: epoch seconds first read back live at ``url``}: the keys that may sign there.
    live = models.JSONField(default=dict)
    in_sync = models.BooleanField(default=False, help_text="the published JWKS lists exactly the keys jwtex serves")
    published_at = models.DateTimeField(null=True, blank=True, help_text="last publish confirmed by its read-back")
    checked_at = models.DateTimeField(null=True, blank=True, help_text="last read-back, publish or check")
    failures = models.PositiveIntegerField(default=0, help_text="failed attempts in a row")
    error = models.CharField(max_length=500, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)

    def __str__(self) -> str:
        return f"{self.tenant.slug} published at {self.url}"

    @classmethod
    def live_keys(cls, tenant: Tenant) -> dict[str, datetime]:
        """The keys read back live at the tenant's current published issuer URL, with when each
        was first confirmed there (empty when nothing is confirmed, or for another URL)."""
        row = cls.objects.filter(tenant=tenant).only("url", "live").first()
        if row is None or row.url != tenant.published_issuer_url or not isinstance(row.live, dict):
            return {}
        return {kid: datetime.fromtimestamp(float(at), UTC) for kid, at in row.live.items()}


class SweepRun(models.Model):
    """When each Celery sweep last finished without an error (for /metrics and its alerts)."""

    name = models.CharField(max_length=64, primary_key=True)
    succeeded_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} succeeded at {self.succeeded_at:%Y-%m-%d %H:%M:%S} UTC"


class RevisionSource(models.TextChoices):
    CREATED = "created", "tenant created"
    BASELINE = "baseline", "history starts here"
    ADMIN = "admin", "admin"
    APPLY = "apply", "jwtex_apply"
    RESTORE = "restore", "restore"
    PROMOTE = "promote", "shadow rules promoted"
    SYSTEM = "system", "system"


class Revision(models.Model):
    """One effective change of a tenant's configuration (docs/operations.md#revisions): the whole
    configuration as ``jwtex_export --tenant T`` printed it then (YAML text, byte for byte), numbered
    per tenant from 1. Written only by exchange.services.revisions; kept for as long as the tenant."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField()
    created_at = models.DateTimeField(db_index=True)
    author = models.CharField(max_length=200, help_text='a username, "jwtex_apply (file)" or "system"')
    source = models.CharField(max_length=16, choices=RevisionSource.choices)
    summary = models.CharField(max_length=500)
    document = models.TextField(help_text="the tenant's configuration in the docs/configuration-file.md format (YAML)")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "number"], name="revision_unique_number_per_tenant")]
        ordering = ["tenant__slug", "-number"]

    def __str__(self) -> str:
        return f"revision {self.number} of {self.tenant_id}"
