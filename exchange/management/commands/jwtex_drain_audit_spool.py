"""``manage.py jwtex_drain_audit_spool``: write this host's spooled audit records to the database now."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from exchange.audit.writer import audit_writer, spool_drain


class Command(BaseCommand):
    help = (
        "Write the audit records that processes of this host spooled while the database was down "
        "(and that are no longer being written by a live process) to the database, each exactly once."
    )

    def handle(self, *args, **options):
        spool = audit_writer().spool
        count = spool_drain(spool)
        self.stdout.write(f"{count} spooled audit record(s) written; {spool.pending()} still waiting.")
