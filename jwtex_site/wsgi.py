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

# Benchmark-only (never in production mode): the slowest exchanges' timelines (exchange/timeline.py).
from exchange.conf import jwtex_settings  # noqa: E402 - needs the apps loaded above

if jwtex_settings.bench_timeline and not jwtex_settings.production:
    from exchange import timeline

    timeline.enable(jwtex_settings.var_dir)

# The exchange and the issuer documents take the lean route (exchange/api/fast.py).
from exchange.api.fast import MachineRoutes  # noqa: E402 - after the checks

application = MachineRoutes(django_application)

# What start-up made lives as long as the process: frozen, the garbage collector's full
# collections no longer walk it (about 125,000 objects: 0.1–0.25 s with every request thread
# stopped, on the README's benchmark machine).
# The lean route freezes once more after its first requests (exchange/api/fast.py).
import gc  # noqa: E402 - beside the freeze it serves, after everything start-up makes

gc.collect()
gc.freeze()
