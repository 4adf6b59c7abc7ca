"""gunicorn's configuration for ``make serve`` (jwtex_site/serve.py): threads per process, so
concurrent requests of one process share audit commits (group commit), and gunicorn's own
start-up, access and error lines in the service's log format (one JSON object per line)."""

import os

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY") or os.cpu_count() or 1)
worker_class = "gthread"
threads = int(os.environ.get("JWTEX_SERVER_THREADS") or 8)
keepalive = 5
timeout = 30
graceful_timeout = 20  # SIGTERM: requests in flight finish within it (serve.py's GRACEFUL_SECONDS)
_access = os.environ.get("JWTEX_ACCESS_LOG", "1") != "0"
accesslog = "-" if _access else None
errorlog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(B)s %(M)sms'
_formatter = "jwtex_site.logging.TextFormatter" if os.environ.get("JWTEX_LOG_FORMAT") == "text" else (
    "jwtex_site.logging.JsonFormatter"
)
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"jwtex": {"()": _formatter}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "jwtex", "stream": "ext://sys.stderr"}},
    "root": {"handlers": ["stderr"], "level": "INFO"},
    "loggers": {
        "gunicorn.error": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": ["stderr"], "level": "INFO" if _access else "WARNING", "propagate": False},
    },
}
