# The audit rollups (docs/scale.md#rollups): counts per tenant, hour, decision, error code and rule.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("exchange", "0010_revision"),
        ("tenants", "0006_keep_upstream_claims"),
    ]

    operations = [
        migrations.CreateModel(
            name="AuditRollup",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("hour", models.DateTimeField()),
                ("decision", models.CharField(choices=[("allowed", "allowed"), ("denied", "denied")], max_length=8)),
                ("error_code", models.CharField(blank=True, max_length=64)),
                ("rule_name", models.CharField(blank=True, max_length=200)),
                ("shard", models.PositiveSmallIntegerField(default=0)),
                ("count", models.BigIntegerField(default=0)),
                ("last_seen", models.DateTimeField()),
                ("last_reason", models.TextField(blank=True)),
                ("shadow_count", models.BigIntegerField(default=0)),
                ("shadow_deny", models.BigIntegerField(default=0)),
                ("shadow_allow", models.BigIntegerField(default=0)),
                ("shadow_tags", models.BigIntegerField(default=0)),
                ("shadow_other", models.BigIntegerField(default=0)),
                (
                    "tenant",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="tenants.tenant",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("tenant", "hour", "decision", "error_code", "rule_name", "shard"),
                        name="rollup_unique_group",
                    )
                ],
            },
        ),
    ]
