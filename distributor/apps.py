from importlib import import_module

from django.apps import AppConfig
from django.conf import settings


class DistributorApp(AppConfig):
    """Named apart from DistributorConfig (models/config.py), the operator's settings row."""

    name = "distributor"
    verbose_name = "Distributor"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Session kinds of the site's own (DISTRIBUTOR_SESSION_MODULES) register
        # themselves on import, in every process: web, clusters and commands.
        for module in settings.DISTRIBUTOR_SESSION_MODULES:
            import_module(module)
        # The reconciler sits above the queue and the campaigns: they reach it
        # through these registrations, never by importing it.
        from distributor import calibration, notifications, queue, reconciler
        from distributor.campaigns.services import advance_all

        reconciler.add_step(advance_all)
        reconciler.add_step(notifications.step)
        reconciler.add_step(calibration.step)
        if reconciler.wake not in queue.SUBMITTED_HOOKS:
            queue.SUBMITTED_HOOKS.append(reconciler.wake)
