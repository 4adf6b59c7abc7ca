"""gunicorn's configuration for ``make serve`` (jwtex_site/serve.py): threads per process, so
concurrent requests of one process share audit commits (group commit), and gunicorn's own
start-up, access and error lines in the service's log format (one JSON object per line), from
the one logging configuration (jwtex_site/logging.py). The environment is read by
jwtex_site/environment.py."""

from jwtex_site import environment as env
from jwtex_site.logging import configured
from jwtex_site.serve import GRACEFUL_SECONDS

bind = f"{env.text('HOST')}:{env.text('PORT')}"
workers = env.whole("WEB_CONCURRENCY")
worker_class = "gthread"
threads = env.whole("JWTEX_SERVER_THREADS")
keepalive = 5
timeout = 30
graceful_timeout = GRACEFUL_SECONDS  # SIGTERM: requests in flight finish within it
accesslog = "-" if env.access_log() else None
errorlog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(B)s %(M)sms'
logconfig_dict = configured()
