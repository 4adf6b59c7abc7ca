import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jwtex_site.settings")
django_application = get_wsgi_application()

# An unsafe production configuration never serves (docs/environment.md#production-mode; the jwtex.E00x system checks).
from exchange.checks import refuse_unsafe_start  # noqa: E402  (needs the apps loaded above)

refuse_unsafe_start("web application")

# Audit records an earlier process spooled and never drained reach the database now.
from exchange.audit.writer import drain_at_start  # noqa: E402

drain_at_start()

# The exchange and the issuer documents take the lean route (exchange/api/fast.py).
from exchange.api.fast import MachineRoutes  # noqa: E402

application = MachineRoutes(django_application)
