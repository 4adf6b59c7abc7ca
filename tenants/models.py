from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from exchange.core import limits
from exchange.core.rotation import tenant_rotation_errors

SLUG_PATTERN = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
slug_validator = RegexValidator(
    rf"^{SLUG_PATTERN}\Z",
    "Lower-case letters, digits and inner hyphens, at most 63 characters.",
)


# The optional AWS values of a tenant only fill in the overview's set-up snippets. An account id
# is 12 digits, leading zeros included (so a string); regions look like eu-west-1, us-gov-west-1,
# cn-north-1 or us-isob-east-1; a role name is IAM CreateRole's RoleName: 1-64 ASCII letters,
# digits and _+=,.@- (written out: Python's \w also takes non-ASCII letters, which IAM refuses).
AWS_ACCOUNT_ID_PATTERN = r"[0-9]{12}"
aws_region_validator = RegexValidator(
    r"^[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}\Z", "An AWS region such as eu-west-1, us-gov-west-1 or cn-north-1."
)
aws_role_name_validator = RegexValidator(
    r"^[A-Za-z0-9_+=,.@-]{1,64}\Z",
    "An IAM role name: 1 to 64 letters, digits and _ + = , . @ - (no spaces, no path, no ARN).",
)


def validate_aws_account_ids(value: object) -> None:
    """A list of AWS account ids, each a string of exactly 12 digits, each once."""
    if not isinstance(value, list):
        raise ValidationError("A list of AWS account ids, each a string of exactly 12 digits.")
    for item in value:
        if not isinstance(item, str):
            raise ValidationError(
                "%(value)s is not an AWS account id: write it as a string of exactly 12 digits "
                "(as a number it would lose its leading zeros).", params={"value": repr(item)[:40]},
            )
        if not re.fullmatch(AWS_ACCOUNT_ID_PATTERN, item):
            raise ValidationError(
                "“%(value)s” is not an AWS account id: exactly 12 digits, without dashes or spaces (e.g. 111122223333).",
                params={"value": item[:40]},
            )
    if len(set(value)) != len(value):
        raise ValidationError("Each AWS account id once: one is listed twice.")


class SigningAlgorithm(models.TextChoices):
    ES256 = "ES256", "ES256 (ECDSA P-256)"
    RS256 = "RS256", "RS256 (RSA 2048)"


class Tenant(models.Model):
    slug = models.CharField(max_length=63, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=200)
    enabled = models.BooleanField(default=True)
    default_audience = models.CharField(max_length=255, default=limits.DEFAULT_AUDIENCE)
    # AWS caps a web-identity session at 12 h; a token living longer is of no use there.
    max_token_lifetime = models.PositiveIntegerField(
        default=3600, validators=[MinValueValidator(60), MaxValueValidator(43200)], help_text="seconds"
    )
    signing_algorithm = models.CharField(
        max_length=8, choices=SigningAlgorithm.choices, default=SigningAlgorithm.ES256
    )
    rate_limit_per_minute = models.PositiveIntegerField(
        default=limits.TENANT_RATE_LIMIT_PER_MINUTE, help_text="exchanges a minute; 0 turns it off"
    )
    key_rotation_interval = models.PositiveIntegerField(
        default=30 * 86400, validators=[MinValueValidator(3600)], help_text="seconds between key rotations"
    )
    key_prepublish_window = models.PositiveIntegerField(
        default=86400,
        validators=[MinValueValidator(limits.JWKS_MAX_AGE)],
        help_text="seconds a new key is published before it signs",
    )
    audit_retention_days = models.PositiveIntegerField(default=90, validators=[MinValueValidator(1)])
    # Optional, for the overview's AWS snippets only: the exchange reads none of them.
    aws_account_ids = models.JSONField(default=list, blank=True, validators=[validate_aws_account_ids])
    aws_region = models.CharField(max_length=32, blank=True, validators=[aws_region_validator])
    aws_role_name = models.CharField(max_length=64, blank=True, validators=[aws_role_name_validator])
    # Bumped whenever anything the exchange reads for this tenant changes, so that the
    # per-process runtime cache knows when to rebuild (see exchange.runtime).
    config_version = models.PositiveBigIntegerField(default=1, editable=False)
    # When the key sweep should next look at this tenant (set by exchange.keys.signing_key_rotate).
    keys_next_check_at = models.DateTimeField(null=True, blank=True, editable=False, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def clean(self) -> None:
        errors = tenant_rotation_errors(
            interval=self.key_rotation_interval or 0,
            prepublish=self.key_prepublish_window or 0,
            max_token_lifetime=self.max_token_lifetime or 0,
        )
        if errors:
            raise ValidationError(errors)

    def __str__(self) -> str:
        return self.slug


class ConfigEpoch(models.Model):
    """One row, bumped after every committed change to any tenant's configuration, so a
    process learns whether anything changed with one read of this row, however many tenants
    there are; only when it moved does it compare its snapshots' versions (exchange.runtime)."""

    value = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"configuration epoch {self.value}"


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    OPERATOR = "operator", "Operator"
    AUDITOR = "auditor", "Auditor"


class Membership(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jwtex_memberships")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.OPERATOR)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "tenant"], name="membership_unique_user_tenant")]
        ordering = ["tenant__slug", "user__username"]

    def __str__(self) -> str:
        return f"{self.user} @ {self.tenant} ({self.role})"
