"""Work handed to the default django-q2 cluster (the control cluster).

django-q2 queues a task on the cluster of the process that queues it unless
told otherwise, and the reconciler also ticks inside machine workers (a
machine going idle reconciles): its notifications and results summaries
would then take a worker of the host's machines cluster, which is its
machines' capacity. Every background task of the distributor is queued here,
on the default cluster by name, whoever queues it.
"""
from __future__ import annotations

from django.conf import settings
from django_q.tasks import async_task


def run_in_background(task: str, *args, group: str) -> None:
    """Queue ``task`` (a dotted path) with ``args`` on the default cluster."""
    async_task(task, *args, group=group, cluster=settings.Q_CLUSTER["name"])
