"""Publish tenants' issuer documents once, in the foreground, or only check what is published
(docs/endpoints.md#published-issuer-url): the same service as the Celery task."""

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from exchange.publish.service import issuer_publish
from tenants.models import Tenant


class Command(BaseCommand):
    help = (
        "Publish the discovery document and JWKS of every tenant with a published issuer URL (or of --tenant) "
        "to JWTEX_PUBLISH_TARGET, read them back and compare. --check only reads back and compares. "
        "Exits 1 when any tenant's published documents are not confirmed."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", action="append", dest="tenants", metavar="SLUG", help="only these tenants")
        parser.add_argument("--check", action="store_true", help="write nothing: read back and compare only")

    def handle(self, *args, tenants=None, check=False, **options):
        queryset = Tenant.objects.exclude(published_issuer_url="")
        if tenants:
            known = Tenant.objects.filter(slug__in=tenants)
            missing = sorted(set(tenants) - set(known.values_list("slug", flat=True)))
            if missing:
                raise CommandError(f"unknown tenant(s): {', '.join(missing)}")
            without = sorted(known.filter(published_issuer_url="").values_list("slug", flat=True))
            if without:
                raise CommandError(f"no published issuer URL: {', '.join(without)}")
            queryset = queryset.filter(slug__in=tenants)
        failed = []
        for tenant in queryset.order_by("slug"):
            result = issuer_publish(tenant_id=tenant.pk, now=timezone.now(), check_only=check)
            if result.skipped:
                self.stdout.write(f"{tenant.slug}: skipped ({result.skipped})")
                failed.append(tenant.slug)
            elif result.confirmed:
                verb = "matches what jwtex serves" if check else "published and read back"
                self.stdout.write(
                    f"{tenant.slug}: {verb} at {tenant.published_issuer_url}; live keys: "
                    f"{', '.join(result.live) or 'none'}"
                )
            else:
                self.stdout.write(f"{tenant.slug}: NOT CONFIRMED: {result.error}")
                failed.append(tenant.slug)
        if failed:
            raise CommandError(f"not confirmed: {', '.join(failed)}", returncode=1)
