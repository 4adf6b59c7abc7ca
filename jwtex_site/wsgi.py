import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jwtex_site.settings")
django_application = get_wsgi_application()

# An unsafe production configuration never serves (docs/environment.md#production-mode; the jwtex.E00x system checks).
from exchange.checks import startup_checks_enforce  # noqa: E402 - needs the apps loaded above

startup_checks_enforce("web application")

# Audit records an earlier process spooled and never drained reach the database now; what this
# one spools is written at its exit if the database can take it by then (SIGTERM: the server
# finishes the exchanges in flight first).
from exchange.audit.writer import flush_at_exit_register, spool_drain_at_start  # noqa: E402 - after the checks

spool_drain_at_start()
flush_at_exit_register()

# The exchange and the issuer documents take the lean route (exchange/api/fast.py).
from exchange.api.fast import MachineRoutes  # noqa: E402 - after the checks

application = MachineRoutes(django_application)
