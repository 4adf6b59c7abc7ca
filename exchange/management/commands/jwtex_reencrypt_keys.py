"""Re-encrypt every stored signing key under the first JWTEX_KEY_ENCRYPTION_KEYS entry."""

from django.core.management.base import BaseCommand, CommandError

from exchange.keys import KeyDecryptionError, signing_keys_reencrypt


class Command(BaseCommand):
    help = "Re-encrypt all signing keys under the first key-encryption key (then the old ones can be dropped)."

    def handle(self, *args, **options):
        try:
            count = signing_keys_reencrypt()
        except KeyDecryptionError as exc:
            raise CommandError(f"{exc}; nothing was changed") from None
        self.stdout.write(f"re-encrypted {count} signing key(s) under the first key-encryption key")
