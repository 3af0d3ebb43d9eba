"""python manage.py hostcluster — this host's machines cluster, with its heartbeat.

Run it with Q_CLUSTER_NAME=machines-<DISTRIBUTOR_HOST> (``serve`` and
``workers`` do): it is django-q2's qcluster plus the host heartbeat the
reconciler needs before it places machines here.
"""
from __future__ import annotations

import os
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from distributor.reconciler import tick
from distributor.hosts import HostBeat, beat, silence


class Command(BaseCommand):
    help = "Run this host's machines cluster and beat the host's heartbeat."

    def handle(self, *args, **opts):
        if os.environ.get("Q_CLUSTER_NAME") != settings.MACHINES_CLUSTER:
            raise CommandError(f"set Q_CLUSTER_NAME={settings.MACHINES_CLUSTER} (read by django-q2 before settings load)")
        from django_q.cluster import Cluster

        cluster = Cluster()
        connections.close_all()  # the cluster forks: no connection may be shared
        cluster.start()  # SIGTERM/SIGINT stop it (django-q2's own handler)
        heart = HostBeat(alive=lambda: cluster.sentinel.is_alive())
        heart.start()
        beat()
        tick()  # work that waited for a host gets its machines now
        try:
            while cluster.sentinel.is_alive():
                time.sleep(0.5)
        finally:
            heart.stop()
            silence()
