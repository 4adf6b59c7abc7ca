"""``manage.py jwtex_export``: print tenants, issuers and rules in the format jwtex_apply reads
(docs/configuration-file.md#commands).

Standard output carries the document and nothing else, so ``jwtex_export > acme.yaml`` works.
``--tenant T --revision N`` prints revision N of tenant T exactly as it was stored (docs/operations.md#revisions).
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from exchange.config.export import config_export
from exchange.config.files import config_dump, config_load
from exchange.config.schema import ConfigError
from exchange.services.revisions import revision_get
from tenants.models import Tenant


class Command(BaseCommand):
    help = "Print the configuration of all tenants (or those named with --tenant) as YAML or JSON."

    def add_arguments(self, parser):
        parser.add_argument(
            "--tenant", action="append", dest="tenants", metavar="SLUG", help="export only this tenant (repeatable)"
        )
        parser.add_argument("--format", choices=["yaml", "json"], default="yaml")
        parser.add_argument(
            "--revision", type=int, metavar="N", help="print revision N of the one --tenant, as it was recorded"
        )

    def handle(self, *args, tenants: list[str] | None, format: str, revision: int | None = None, **options):
        if revision is not None:
            self.stdout.write(self._revision(tenants, revision, format), ending="")
            return
        try:
            document = config_export(tenant_slugs=tenants)
        except ConfigError as exc:
            for path, message in exc.errors:
                self.stderr.write(f"{path}: {message}")
            raise CommandError("unknown tenant; nothing was exported.") from None
        self.stdout.write(config_dump(document, fmt=format), ending="")

    @staticmethod
    def _revision(tenants: list[str] | None, number: int, format: str) -> str:
        if not tenants or len(tenants) != 1:
            raise CommandError("--revision needs exactly one --tenant.")
        tenant = Tenant.objects.filter(slug=tenants[0]).first()
        found = revision_get(tenant=tenant, number=number) if tenant is not None else None
        if found is None:
            raise CommandError(f"tenant {tenants[0]!r} has no revision {number}; nothing was exported.")
        if format == "yaml":
            return found.document  # byte for byte what jwtex_export printed then
        try:
            return config_dump(config_load(found.document, source=f"revision {number}", fmt="yaml"), fmt="json")
        except ConfigError as exc:  # a row that is not what jwtex wrote
            raise CommandError("; ".join(f"{path}: {message}" for path, message in exc.errors)) from None
