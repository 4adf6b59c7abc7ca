import os
import sys

from celery import Celery
from celery.schedules import crontab
from celery.signals import beat_init, celeryd_init, setup_logging, worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jwtex_site.settings")

app = Celery("jwtex")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# The whole schedule, in one place. Sweeps run every minute and pick what is due from the
# database (intervals are fields on tenants and issuers, editable in the admin).
app.conf.beat_schedule = {
    "sweep-issuers": {"task": "exchange.sweep_issuers", "schedule": 60.0, "options": {"expires": 55}},
    "sweep-signing-keys": {"task": "exchange.sweep_signing_keys", "schedule": 60.0, "options": {"expires": 55}},
    "sweep-issuer-publications": {
        "task": "exchange.sweep_issuer_publications",
        "schedule": 60.0,
        "options": {"expires": 55},
    },
    "drain-audit-spool": {"task": "exchange.drain_audit_spool", "schedule": 60.0, "options": {"expires": 55}},
    "sweep-exchange-records": {
        "task": "exchange.sweep_exchange_records",
        "schedule": crontab(hour=3, minute=17),
        "options": {"expires": 3600},
    },
}


@worker_init.connect
@beat_init.connect
def _refuse_unsafe_start(sender=None, **kwargs) -> None:
    """An unsafe production configuration never runs a worker or beat (the jwtex.E00x checks).
    SystemExit, because Celery logs and ignores ordinary exceptions raised by signal handlers."""
    from django.core.exceptions import ImproperlyConfigured

    from exchange.checks import startup_checks_enforce

    try:
        startup_checks_enforce("Celery worker" if "beat" not in str(sender).lower() else "Celery beat")
    except ImproperlyConfigured as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(1) from None


@celeryd_init.connect  # early: before the worker's own start-up warnings
@setup_logging.connect  # a receiver here also keeps Celery from configuring logging its own way
def _log_like_the_web(**kwargs) -> None:
    """Worker and beat log as the web does (settings.LOGGING): one format everywhere."""
    import logging.config

    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)
    logging.captureWarnings(True)  # Python warnings (e.g. Celery's) as log records, same format
    _say_in_the_log_format()


def _say_in_the_log_format() -> None:
    """Celery's signal handlers print a few lines ("worker: Warm shutdown") straight to the
    console, bypassing logging (a signal handler must not take logging's locks). Format them
    as log records with the configured formatter and write them the same lock-free way."""
    import logging

    import celery.apps.worker as celery_worker

    handler = next(iter(logging.getLogger().handlers), None)
    if handler is None or getattr(celery_worker.safe_say, "jwtex", False):
        return

    def say(msg, f=None):  # always stderr, where every log line goes
        record = logging.LogRecord("celery.worker", logging.WARNING, __file__, 0, str(msg).strip(), None, None)
        try:
            sys.__stderr__.write(handler.format(record) + "\n")
            sys.__stderr__.flush()
        except Exception:  # noqa: BLE001 - as Celery's own: never fail a shutdown over a console line
            pass

    say.jwtex = True
    celery_worker.safe_say = say


def _banners_as_log_lines() -> None:
    """The worker's and beat's start-up banners are printed to stdout, bypassing logging: say
    the same as one log line each, in the log format (docs/operations.md#logs: one JSON object per line)."""
    import logging

    from celery.apps import beat as celery_beat, worker as celery_worker

    def worker_banner(self) -> None:
        info = " ".join(
            line.strip(" .-*") for line in self.startup_info(artlines=False).splitlines() if line.strip(" .-*")
        )
        logging.getLogger("celery.worker").info("worker starting: %s", info)

    beat_run = celery_beat.Beat.run

    def beat_quietly(self) -> None:
        logging.getLogger("celery.beat").info("beat starting (schedule: %s)", self.schedule)
        self.quiet = True  # no banner on stdout; the scheduler logs what it does
        beat_run(self)

    celery_worker.Worker.emit_banner = worker_banner
    celery_beat.Beat.run = beat_quietly


_banners_as_log_lines()
