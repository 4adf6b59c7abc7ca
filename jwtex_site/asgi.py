import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jwtex_site.settings")
application = get_asgi_application()

from exchange.checks import startup_checks_enforce  # noqa: E402 - needs the apps loaded above

startup_checks_enforce("web application")
