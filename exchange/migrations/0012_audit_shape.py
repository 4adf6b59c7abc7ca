# The audit record's smaller shape (docs/scale.md#the-audit-table) and the rollup trigger.
#
# SQLite (the embedded default) is altered here, simply, with the rollups seeded from the rows it
# has. PostgreSQL only records the new state here: its table is rebuilt online, partitioned by
# day, by the next migration (0013), without stopping exchanges.

import django.db.models.deletion
from django.db import migrations, models

from ._audit_sql import SQLITE_SEED, SQLITE_TRIGGER, SQLITE_TRIGGER_DROP
from ._vendor import OnVendor

RECORD = "exchangerecord"
SHAPE = [
    migrations.RemoveField(model_name=RECORD, name="issuer"),
    migrations.RemoveField(model_name=RECORD, name="rule"),
    migrations.AddField(model_name=RECORD, name="issued_claims_compact", field=models.JSONField(blank=True, null=True)),
    migrations.AlterField(model_name=RECORD, name="created_at", field=models.DateTimeField()),
    migrations.AlterField(model_name=RECORD, name="issued_jti", field=models.CharField(blank=True, max_length=64)),
    migrations.AlterField(
        model_name=RECORD, name="record_id", field=models.UUIDField(blank=True, editable=False, null=True)
    ),
    migrations.AlterField(
        model_name=RECORD,
        name="tenant",
        field=models.ForeignKey(
            db_constraint=False,
            db_index=False,
            on_delete=django.db.models.deletion.CASCADE,
            related_name="exchange_records",
            to="tenants.tenant",
        ),
    ),
    migrations.AlterField(model_name=RECORD, name="upstream_sub", field=models.CharField(blank=True, max_length=512)),
    migrations.RemoveIndex(model_name=RECORD, name="record_tenant_time"),
    migrations.AddIndex(model_name=RECORD, index=models.Index(fields=["created_at", "id"], name="record_time")),
    migrations.AddIndex(
        model_name=RECORD, index=models.Index(fields=["tenant", "created_at"], name="record_tenant_at")
    ),
    migrations.AddIndex(
        model_name=RECORD,
        index=models.Index(
            condition=models.Q(("decision", "denied")), fields=["tenant", "created_at"], name="record_tenant_denied"
        ),
    ),
    migrations.AddIndex(
        model_name=RECORD,
        index=models.Index(
            condition=models.Q(("shadow__isnull", False)), fields=["tenant", "created_at"], name="record_tenant_shadow"
        ),
    ),
    migrations.AddIndex(
        model_name=RECORD,
        index=models.Index(
            condition=models.Q(("upstream_jti", ""), _negated=True), fields=["upstream_jti"], name="record_upstream_jti"
        ),
    ),
    migrations.AddIndex(
        model_name=RECORD,
        index=models.Index(
            condition=models.Q(("issued_jti", ""), _negated=True), fields=["issued_jti"], name="record_issued_jti"
        ),
    ),
    migrations.AddIndex(model_name=RECORD, index=models.Index(fields=["upstream_sub"], name="record_upstream_sub")),
    migrations.AddIndex(
        model_name=RECORD,
        index=models.Index(
            condition=models.Q(("issued_sub", ""), _negated=True), fields=["issued_sub"], name="record_issued_sub"
        ),
    ),
    migrations.AddConstraint(
        model_name=RECORD,
        constraint=models.UniqueConstraint(fields=("record_id", "created_at"), name="record_unique_attempt"),
    ),
]


class Migration(migrations.Migration):
    dependencies = [
        ("exchange", "0011_audit_rollup"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=SHAPE,
            database_operations=[
                OnVendor(
                    "sqlite",
                    [
                        *SHAPE,
                        # After the table's rebuild above (which would drop a trigger made before it).
                        migrations.RunSQL(SQLITE_TRIGGER, SQLITE_TRIGGER_DROP),
                        migrations.RunSQL(SQLITE_SEED, migrations.RunSQL.noop),
                    ],
                ),
            ],
        ),
    ]
