from django.apps import AppConfig
from django.db.models.signals import post_migrate


class ExchangeConfig(AppConfig):
    name = "exchange"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, invalidation, runtime  # noqa: F401 - system checks; cache invalidation and its receiver
        from .config import revision_documents  # its receiver records a revision after every effective change

        post_migrate.connect(
            revision_documents.revisions_baseline, sender=self, dispatch_uid="jwtex.revisions.baseline"
        )
