"""``manage.py jwtex_export``: print tenants, issuers and rules in the format jwtex_apply reads (SPEC §6).

Standard output carries the document and nothing else, so ``jwtex_export > acme.yaml`` works.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from exchange.config.export import config_export
from exchange.config.files import config_dump
from exchange.config.schema import ConfigError


class Command(BaseCommand):
    help = "Print the configuration of all tenants (or those named with --tenant) as YAML or JSON."

    def add_arguments(self, parser):
        parser.add_argument(
            "--tenant", action="append", dest="tenants", metavar="SLUG", help="export only this tenant (repeatable)"
        )
        parser.add_argument("--format", choices=["yaml", "json"], default="yaml")

    def handle(self, *args, tenants: list[str] | None, format: str, **options):
        try:
            document = config_export(tenant_slugs=tenants)
        except ConfigError as exc:
            for path, message in exc.errors:
                self.stderr.write(f"{path}: {message}")
            raise CommandError("unknown tenant; nothing was exported.") from None
        self.stdout.write(config_dump(document, fmt=format), ending="")
