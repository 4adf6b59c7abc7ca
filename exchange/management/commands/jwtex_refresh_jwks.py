"""Refresh upstream JWKS once, in the foreground: the same service as the Celery task
(docs/operations.md#foreground-commands)."""

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from exchange.models import Issuer
from exchange.upstream.issuer_keys import issuer_jwks_refresh


class Command(BaseCommand):
    help = "Fetch every enabled issuer's discovery and JWKS now (static-JWKS issuers are skipped)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--issuer",
            action="append",
            dest="issuers",
            metavar="TENANT/ID",
            help="only these issuers, e.g. acme/github",
        )
        parser.add_argument("--tenant", action="append", dest="tenants", metavar="SLUG")

    def handle(self, *args, issuers=None, tenants=None, **options):
        queryset = Issuer.objects.select_related("tenant").filter(enabled=True).order_by("tenant__slug", "issuer_id")
        if tenants:
            queryset = queryset.filter(tenant__slug__in=tenants)
        selected = list(queryset)
        if issuers:
            wanted = set(issuers)
            selected = [i for i in selected if f"{i.tenant.slug}/{i.issuer_id}" in wanted]
            missing = wanted - {f"{i.tenant.slug}/{i.issuer_id}" for i in selected}
            if missing:
                raise CommandError(f"unknown issuer(s): {', '.join(sorted(missing))}")
        failures = 0
        for issuer in selected:
            label = f"{issuer.tenant.slug}/{issuer.issuer_id}"
            if issuer.static_jwks is not None:
                self.stdout.write(f"{label}: static JWKS, nothing to fetch")
                continue
            changed = issuer_jwks_refresh(issuer=issuer, now=timezone.now(), force=True)
            issuer.refresh_from_db()
            if issuer.jwks_last_error_at and (
                not issuer.jwks_fetched_at or issuer.jwks_last_error_at >= issuer.jwks_fetched_at
            ):
                failures += 1
                self.stderr.write(f"{label}: FAILED: {issuer.jwks_last_error}")
                continue
            kids = [k.get("kid") for k in (issuer.jwks or {}).get("keys", [])]
            self.stdout.write(
                f"{label}: {'changed' if changed else 'unchanged'}, {len(kids)} key(s): {', '.join(map(str, kids))}"
            )
        if failures:
            raise CommandError(f"{failures} issuer(s) could not be refreshed")
