"""python manage.py hostcluster [--stop drain|kill] [--grace S] — this host's machines cluster, with its heartbeat.

Run it with Q_CLUSTER_NAME=machines-<DISTRIBUTOR_HOST> (``serve`` and
``workers`` do): it is django-q2's qcluster plus the host heartbeat the
reconciler needs before it places machines here, and a stop of its own
(distributor/processes.py): on SIGTERM or SIGINT it takes no new machine,
drains or kills its machines, then stops its workers.
"""
from __future__ import annotations

import os

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from distributor import processes
from distributor.hosts import HostBeat, beat, silence
from distributor.management.options import add_stop_options
from distributor.reconciler import tick


class Command(BaseCommand):
    help = "Run this host's machines cluster and beat the host's heartbeat."

    def add_arguments(self, parser):
        add_stop_options(parser)

    def handle(self, *args, stop, grace, **opts):
        if os.environ.get("Q_CLUSTER_NAME") != settings.MACHINES_CLUSTER:
            raise CommandError(f"set Q_CLUSTER_NAME={settings.MACHINES_CLUSTER} (read by django-q2 before settings load)")
        owned = processes.OwnedCluster(stop, grace)
        owned.start()
        heart = HostBeat(alive=owned.alive)
        heart.start()
        beat()
        tick()  # work that waited for a host gets its machines now
        try:
            if not owned.wait():
                raise CommandError("the machines cluster ended by itself")
            heart.capacity = 0  # no new machine is placed here
            beat(capacity=0)
            processes.stop_machines(owned.signals, grace)
        finally:
            owned.stop()  # also after an error: a sentinel left running would hold the exit forever
            heart.stop()
            silence()
