"""python manage.py controlcluster [--stop drain|kill] [--grace S] — the default django-q2 cluster.

It runs the control tasks and the reconciler's schedule, as ``qcluster``
does, and stops as the launcher that started it (``serve``, ``workers``)
wants (distributor/processes.py): on SIGTERM or SIGINT its workers finish
their task (a kill gives them CLUSTER_STOP_SECONDS), and it stops when its
launcher is gone.
"""
from __future__ import annotations

import os

from django.core.management.base import BaseCommand, CommandError

from distributor import processes
from distributor.management.options import add_stop_options


class Command(BaseCommand):
    help = "Run the default (control) django-q2 cluster until SIGTERM or SIGINT."

    def add_arguments(self, parser):
        add_stop_options(parser)

    def handle(self, *args, stop, grace, **opts):
        if os.environ.get("Q_CLUSTER_NAME"):
            raise CommandError("unset Q_CLUSTER_NAME: this is the default cluster")
        owned = processes.OwnedCluster(stop, grace)
        owned.start()
        if not owned.wait():
            raise CommandError("the control cluster ended by itself")
        owned.stop(processes.CLUSTER_STOP_SECONDS if owned.signals.kill else grace + processes.CLUSTER_STOP_SECONDS)
