"""Development only (used by ``make run``): make sure a superuser exists and say how to log in."""

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from exchange.conf import jwtex_settings


class Command(BaseCommand):
    # Development helpers: the configuration warnings are make run's to print (once).
    requires_system_checks = []
    help = "Create a development superuser 'admin' (password kept in var/admin-password) and print the admin URL."

    def add_arguments(self, parser):
        parser.add_argument("--url", default=jwtex_settings.public_url)

    def handle(self, *args, url, **options):
        if jwtex_settings.production:
            raise CommandError("jwtex_dev_admin is for development only; use createsuperuser in production.")
        password_file = jwtex_settings.var_dir / "admin-password"
        User = get_user_model()
        user = User.objects.filter(username="admin").first()
        if user is None:
            password = secrets.token_urlsafe(12)
            User.objects.create_superuser("admin", "admin@localhost", password)
            password_file.write_text(password + "\n")
            password_file.chmod(0o600)
        password = password_file.read_text().strip() if password_file.exists() else "(as you set it)"
        self.stdout.write(
            f"\n  jwtex admin:  {url.rstrip('/')}/admin/\n"
            f"  log in as:    admin / {password}   (kept in {password_file})\n"
            f"  API docs:     {url.rstrip('/')}/api/docs/\n"
        )
