import os

from celery import Celery
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jwtex_site.settings")

app = Celery("jwtex")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# The whole schedule, in one place. Sweeps run every minute and pick what is due from the
# database (intervals are fields on tenants and issuers, editable in the admin).
app.conf.beat_schedule = {
    "sweep-issuers": {"task": "exchange.sweep_issuers", "schedule": 60.0, "options": {"expires": 55}},
    "sweep-signing-keys": {"task": "exchange.sweep_signing_keys", "schedule": 60.0, "options": {"expires": 55}},
    "sweep-exchange-records": {
        "task": "exchange.sweep_exchange_records",
        "schedule": crontab(hour=3, minute=17),
        "options": {"expires": 3600},
    },
}
