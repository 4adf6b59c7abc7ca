from django.apps import AppConfig


class ExchangeConfig(AppConfig):
    name = "exchange"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, invalidation, runtime  # noqa: F401  (system checks; cache invalidation and its receiver)
