# PostgreSQL: the audit table partitioned by day, online (see _audit_upgrade: concurrent index
# builds, a swap that holds its lock for a moment, rollups seeded in batches). Not atomic: CREATE
# INDEX CONCURRENTLY cannot run in a transaction. Nothing to do on SQLite (done in 0012).

from django.db import migrations

from ._audit_upgrade import upgrade
from ._vendor import OnVendor


def forwards(apps, schema_editor):
    upgrade(schema_editor.connection, say=print)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("exchange", "0012_audit_shape"),
    ]

    operations = [
        OnVendor("postgresql", [migrations.RunPython(forwards, elidable=False)]),
    ]
