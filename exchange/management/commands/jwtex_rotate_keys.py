"""Run key rotation once, in the foreground: the same service as the Celery task
(docs/design/key-lifecycle.md#rotate-now-and-revoke, docs/operations.md#foreground-commands)."""

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from exchange.keys import signing_key_revoke, signing_key_rotate
from exchange.models import SigningKey
from tenants.models import Tenant


class Command(BaseCommand):
    help = (
        "Advance every tenant's signing-key rotation (a new tenant gets its first key). "
        "--now starts a rotation at once (the safe path, shortened); --revoke KID withdraws a key at once."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", action="append", dest="tenants", metavar="SLUG", help="only these tenants")
        group = parser.add_mutually_exclusive_group()
        group.add_argument(
            "--now", action="store_true", help="rotate now: publish a new key that signs after the JWKS max-age"
        )
        group.add_argument("--revoke", metavar="KID", help="revoke this key now (needs exactly one --tenant)")

    def handle(self, *args, tenants=None, now=False, revoke=None, **options):
        at = timezone.now()
        queryset = Tenant.objects.all()
        if tenants:
            queryset = queryset.filter(slug__in=tenants)
            missing = sorted(set(tenants) - set(queryset.values_list("slug", flat=True)))
            if missing:
                raise CommandError(f"unknown tenant(s): {', '.join(missing)}")
        if revoke:
            if not tenants or len(tenants) != 1:
                raise CommandError("--revoke needs exactly one --tenant")
            try:
                result = signing_key_revoke(tenant=queryset.get(), kid=revoke, now=at)
            except SigningKey.DoesNotExist as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(
                f"{result.tenant}: revoked {revoke}; signing now with {result.activated or 'the active key'}"
            )
            return
        for tenant in queryset.order_by("slug"):
            result = signing_key_rotate(tenant_id=tenant.pk, now=at, force=now)
            if result.skipped:
                self.stdout.write(f"{tenant.slug}: skipped (another worker is rotating it)")
                continue
            parts = [
                f"created {', '.join(result.created)}" if result.created else "",
                f"activated {result.activated}" if result.activated else "",
                f"retiring {', '.join(result.retiring)}" if result.retiring else "",
                f"retired {', '.join(result.retired)}" if result.retired else "",
            ]
            self.stdout.write(f"{tenant.slug}: " + ("; ".join(p for p in parts if p) or "nothing due"))
