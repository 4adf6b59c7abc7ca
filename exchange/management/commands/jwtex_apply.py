"""``manage.py jwtex_apply FILE``: make tenants, issuers and rules match a YAML or JSON file
(docs/configuration-file.md#how-a-file-is-applied)."""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from exchange.config.apply import config_apply
from exchange.config.files import config_load
from exchange.config.schema import ConfigError
from exchange.services.revisions import revision_actor


class Command(BaseCommand):
    help = (
        "Create or update tenants, issuers and rules from a YAML or JSON file ('-' reads standard input). "
        "All or nothing: any error changes nothing. Signing keys are never touched."
    )
    # call_command(..., stdin=StringIO(...)) in tests; the real command reads sys.stdin.
    stealth_options = ("stdin",)

    def add_arguments(self, parser):
        parser.add_argument("file", help="the configuration file, or '-' for standard input")
        parser.add_argument(
            "--dry-run", action="store_true", help="validate and report what would change, without writing"
        )

    def handle(self, *args, file: str, dry_run: bool, **options):
        try:
            text, source, fmt = self._read(file, options.get("stdin") or sys.stdin)
            document = config_load(text, source=source, fmt=fmt)
            # The revisions this makes say where they came from (docs/operations.md#revisions).
            with revision_actor(author=f"jwtex_apply ({Path(source).name or source})", source="apply"):
                report = config_apply(document=document, now=timezone.now(), dry_run=dry_run)
        except ConfigError as exc:
            for path, message in exc.errors:
                self.stderr.write(f"{path}: {message}")
            count = len(exc.errors)
            raise CommandError(f"{count} error{'s' if count != 1 else ''}; nothing was changed.") from None
        self.stdout.write(report.summary())

    @staticmethod
    def _read(file: str, stdin) -> tuple[str, str, str | None]:
        if file == "-":
            return stdin.read(), "<stdin>", None
        path = Path(file)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([(file, f"cannot read the file: {exc}")]) from None
        suffix = path.suffix.lower()
        fmt = "json" if suffix == ".json" else "yaml" if suffix in (".yaml", ".yml") else None
        return text, file, fmt
