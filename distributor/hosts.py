"""This host's heartbeat: the proof that its machines cluster is running.

The process that runs a machines cluster (``manage.py hostcluster``, which
``serve`` and ``workers`` start) beats every second with database time; the
reconciler launches machines only on hosts that beat. The same thread runs
the reconciler every few seconds, so a dead machine's task-set goes back to
the queue within seconds rather than at the next minute's schedule: one
reconciler per host, not one per machine.
"""
from __future__ import annotations

import logging
import os
import threading
import time

from django.conf import settings
from django.db import connection
from django.db.models.functions import Now

from distributor.models import Host
from distributor.reconciler import tick

log = logging.getLogger("distributor")
BEAT_SECONDS = 1.0
RECONCILE_EVERY_SECONDS = 5.0


def beat(capacity: int | None = None, name: str | None = None) -> None:
    """Record that this host's machines cluster is alive (and its capacity:
    0 while it stops, so that no machine is placed here)."""
    name = name or settings.DISTRIBUTOR_HOST
    capacity = settings.DISTRIBUTOR_MACHINE_WORKERS if capacity is None else capacity
    updated = Host.objects.filter(name=name).update(heartbeat_at=Now(), capacity=capacity, pid=os.getpid())
    if not updated:
        Host.objects.get_or_create(name=name, defaults={"capacity": capacity, "heartbeat_at": Now(),
                                                         "started_at": Now(), "pid": os.getpid()})


def silence(name: str | None = None) -> None:
    """A clean stop: the host stops counting at once instead of timing out."""
    Host.objects.filter(name=name or settings.DISTRIBUTOR_HOST).update(heartbeat_at=None)


class HostBeat(threading.Thread):
    """Beats until stopped; ``alive`` says whether the cluster still runs."""

    def __init__(self, alive=lambda: True):
        super().__init__(name="host-beat", daemon=True)
        self.alive = alive
        self.capacity: int | None = None  # None: the configured workers
        self.stopped = threading.Event()

    def run(self) -> None:
        next_tick = time.monotonic() + RECONCILE_EVERY_SECONDS
        try:
            while not self.stopped.wait(BEAT_SECONDS):
                if not self.alive():
                    continue
                try:
                    beat(self.capacity)
                    if time.monotonic() >= next_tick:
                        next_tick = time.monotonic() + RECONCILE_EVERY_SECONDS
                        tick()
                except Exception:  # noqa: BLE001 - the database may be briefly away
                    log.exception("host heartbeat or reconciler failed")
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)
