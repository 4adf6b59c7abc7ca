"""The audit's tables (docs/operations.md#audit, docs/scale.md#the-audit-table): one row per
exchange attempt, and the rollups the overview reads. Apart from the other models
(``exchange.models`` imports them, so Django and every caller find them there) because they are
made for a size the others never reach."""

from __future__ import annotations

from django.db import models

from tenants.models import Tenant

from .core import audit_compact


class AuditDecision(models.TextChoices):
    ALLOWED = "allowed", "allowed"
    DENIED = "denied", "denied"


class ExchangeRecord(models.Model):
    """One audit row per exchange attempt (docs/operations.md#audit). Never holds a raw token.

    Sized for 17 million rows a day (docs/scale.md#the-audit-table): no foreign key constraint (a
    deleted rule or issuer never rewrites old rows; the record keeps their names), the token's
    claims stored without what the columns already hold (``emitted_claims`` reads them whole), and
    only the indexes the admin's queries use. On PostgreSQL the table is partitioned by day on ``created_at``
    (``exchange.audit.partitions``). A trigger keeps ``AuditRollup`` in the same transaction as
    each INSERT (migrations 0012 and 0013; on SQLite, a migration that rebuilds this table must
    make the trigger again, as 0012 does: ``tests/exchange/audit/test_rollups.py`` fails otherwise)."""

    # No database constraint: the admin joins it, Django still deletes a tenant's records with it.
    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="exchange_records", db_constraint=False, db_index=False
    )  # record_tenant_at leads with it
    created_at = models.DateTimeField()
    endpoint = models.CharField(max_length=16)
    decision = models.CharField(max_length=8, choices=AuditDecision.choices)
    error_code = models.CharField(max_length=64, blank=True)
    status_code = models.PositiveSmallIntegerField()
    reason = models.TextField(blank=True)
    issuer_ref = models.CharField("issuer id", max_length=64, blank=True)
    rule_name = models.CharField(max_length=200, blank=True)
    upstream_iss = models.CharField(max_length=512, blank=True)
    upstream_sub = models.CharField(max_length=512, blank=True)
    upstream_jti = models.CharField(max_length=256, blank=True)
    upstream_aud = models.JSONField(null=True, blank=True)
    issued_jti = models.CharField(max_length=64, blank=True)
    issued_kid = models.CharField(max_length=64, blank=True)
    # Empty on an allowed record whose issued subject is the upstream one: ``issued_subject``.
    issued_sub = models.CharField(max_length=512, blank=True)
    issued_aud = models.CharField(max_length=255, blank=True)
    issued_exp = models.DateTimeField(null=True, blank=True)
    # The emitted token's claims: whole (rows written before compact storage, or claims of another
    # shape), or compact (without sub/aud/exp/jti/nbf, tags flattened). Read ``emitted_claims``.
    issued_claims = models.JSONField(null=True, blank=True)
    issued_claims_compact = models.JSONField(null=True, blank=True)
    client_address = models.GenericIPAddressField(null=True, blank=True)
    # A mapper rule's call (docs/mapper.md#audit-and-metrics): what it decided ("allowed", "denied",
    # "failed", "invalid", "circuit open", "busy"), how long it took, and why it failed. Never its
    # Authorization token.
    mapper_outcome = models.CharField(max_length=16, blank=True)
    mapper_latency_ms = models.PositiveIntegerField(null=True, blank=True)
    mapper_error = models.CharField(max_length=500, blank=True)
    # What the tenant's shadow rules would have done, when it differs (docs/operations.md#shadow-rules);
    # else null.
    shadow = models.JSONField(null=True, blank=True)
    # The verified upstream claims, only for a tenant that keeps them (for replaying candidate
    # rules; personal data, kept as long as the record).
    upstream_claims = models.JSONField(null=True, blank=True)
    # Unique per attempt (time-ordered, UUID version 7): a record written twice (a spool drained
    # again) is stored once. With ``created_at`` in its key, as a partitioned table requires.
    record_id = models.UUIDField(null=True, blank=True, editable=False)

    class Meta:
        # The indexes as SQLite has them. PostgreSQL has the same names per partition, the time
        # index being the primary key (created_at, id), the jti ones hash indexes and the subject
        # ones varchar_pattern_ops (prefix search), plus one on id (migration 0011).
        indexes = [
            models.Index(fields=["created_at", "id"], name="record_time"),
            models.Index(fields=["tenant", "created_at"], name="record_tenant_at"),
            models.Index(
                fields=["tenant", "created_at"], condition=models.Q(decision="denied"), name="record_tenant_denied"
            ),
            models.Index(
                fields=["tenant", "created_at"], condition=models.Q(shadow__isnull=False), name="record_tenant_shadow"
            ),
            models.Index(fields=["upstream_jti"], condition=~models.Q(upstream_jti=""), name="record_upstream_jti"),
            models.Index(fields=["issued_jti"], condition=~models.Q(issued_jti=""), name="record_issued_jti"),
            models.Index(fields=["upstream_sub"], name="record_upstream_sub"),
            models.Index(fields=["issued_sub"], condition=~models.Q(issued_sub=""), name="record_issued_sub"),
        ]
        constraints = [models.UniqueConstraint(fields=["record_id", "created_at"], name="record_unique_attempt")]
        ordering = ["-created_at", "-id"]
        verbose_name, verbose_name_plural = "audit record", "audit log"  # "Audit log" everywhere in the admin

    def __str__(self) -> str:
        return f"{self.decision.capitalize()} exchange at {self.created_at:%Y-%m-%d %H:%M:%S} UTC"

    @property
    def issued_subject(self) -> str:
        return audit_compact.issued_subject(
            decision=self.decision, stored=self.issued_sub, upstream_sub=self.upstream_sub
        )

    @property
    def emitted_claims(self) -> dict | None:
        """The emitted token's claims, whole, however they are stored."""
        if self.issued_claims_compact is None:
            return self.issued_claims
        return audit_compact.claims_full(
            self.issued_claims_compact,
            subject=self.issued_subject,
            audience=self.issued_aud,
            expires_at=int(self.issued_exp.timestamp()),
            jti=self.issued_jti,
        )


class AuditRollup(models.Model):
    """Exchange records counted per tenant, hour (UTC), decision, error code and rule: what the
    overview and the candidate report read instead of the records (docs/scale.md#rollups). Written only by the
    database, in the transaction of each INSERT into the audit table (a trigger: exact whatever
    wrote the records — the group commit, the spool's drain, an older release during an upgrade);
    deleted with the hours the retention purge removes. ``shard`` spreads concurrent writers over
    a few rows (PostgreSQL: the connection's pid modulo 8), so they never wait for each other's
    commit; readers add the shards up."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="+", db_constraint=False, db_index=False
    )  # rollup_unique_group leads with it
    hour = models.DateTimeField()
    decision = models.CharField(max_length=8, choices=AuditDecision.choices)
    error_code = models.CharField(max_length=64, blank=True)
    rule_name = models.CharField(max_length=200, blank=True)
    shard = models.PositiveSmallIntegerField(default=0)
    count = models.BigIntegerField(default=0)
    last_seen = models.DateTimeField()  # the group's latest record in that hour
    last_reason = models.TextField(blank=True)  # its reason
    # Records with a shadow divergence (docs/operations.md#shadow-rules), by the candidate report's
    # kinds (they overlap).
    shadow_count = models.BigIntegerField(default=0)
    shadow_deny = models.BigIntegerField(default=0)
    shadow_allow = models.BigIntegerField(default=0)
    shadow_tags = models.BigIntegerField(default=0)
    shadow_other = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "hour", "decision", "error_code", "rule_name", "shard"], name="rollup_unique_group"
            )
        ]

    def __str__(self) -> str:
        return f"{self.count} {self.decision} of {self.tenant_id} at {self.hour:%Y-%m-%d %H}:00 UTC"
