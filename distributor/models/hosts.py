from __future__ import annotations

from datetime import timedelta

from django.db import models
from django.db.models import DateTimeField, ExpressionWrapper
from django.db.models.functions import Now


def seconds_ago(seconds: int) -> ExpressionWrapper:
    """Database time minus a duration: hosts' clocks never enter a lease."""
    return ExpressionWrapper(Now() - timedelta(seconds=seconds), output_field=DateTimeField())


class Host(models.Model):
    """A distributor host: a machines cluster that beats while it runs.

    The reconciler places machines only on hosts whose heartbeat is fresh and
    that have a free worker; a host that goes silent has its machines declared
    dead and their task-sets put back in the queue.
    """

    name = models.CharField(max_length=63, unique=True)
    # Worker processes of its machines cluster: machines it can run at once.
    capacity = models.PositiveSmallIntegerField()
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)

    def __str__(self) -> str:
        return self.name

    @classmethod
    def live(cls, timeout_s: int) -> models.QuerySet:
        """Hosts that beat within ``timeout_s`` seconds (database time)."""
        return cls.objects.filter(heartbeat_at__gte=seconds_ago(timeout_s))
