from __future__ import annotations

from datetime import timedelta

from django.db import models, transaction
from django.db.models import DateTimeField, ExpressionWrapper
from django.db.models.functions import Now
from django.utils import timezone


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
    # The operator's drain: no new machines here until resumed.
    drained = models.BooleanField(default=False)

    def __str__(self) -> str:
        return self.name

    @classmethod
    def live(cls, timeout_s: int) -> models.QuerySet:
        """Hosts that beat within ``timeout_s`` seconds (database time)."""
        return cls.objects.filter(heartbeat_at__gte=seconds_ago(timeout_s))

    def is_live(self, timeout_s: int) -> bool:
        return Host.live(timeout_s).filter(pk=self.pk).exists()

    def drain(self) -> None:
        """No new machines on this host (those it runs are told apart, by the caller)."""
        Host.objects.filter(pk=self.pk).update(drained=True)
        self.drained = True

    def resume(self) -> int:
        """New machines may come here again, for every target: the drain and the
        host's faults are lifted (the operator fixed the cause). Returns the
        faults lifted."""
        with transaction.atomic():
            Host.objects.filter(pk=self.pk).update(drained=False)
            lifted, _ = HostTargetFault.objects.filter(host=self.name).delete()
        self.drained = False
        return lifted

    def forget(self) -> None:
        """A host gone for good: its row and its faults (its machines' rows stay, as history)."""
        with transaction.atomic():
            HostTargetFault.objects.filter(host=self.name).delete()
            self.delete()


class HostTargetFault(models.Model):
    """This host cannot run this target's machines, and why (a file it cannot
    cache, no bridge or DHCP, no QEMU binary): found by a machine before it
    contacted its target (``sessions.errors.HostFault``). The reconciler
    places that target's machines on other hosts until the operator resumes
    the host; other targets still run here. Apart from a target's own faults
    (which slots are healthy): this is which hosts are."""

    host = models.CharField(max_length=63)
    target = models.ForeignKey("distributor.Target", on_delete=models.CASCADE, related_name="host_faults")
    cause = models.TextField()
    seen_at = models.DateTimeField()

    class Meta:
        # record() looks a pair up; the reconciler reads them all each tick.
        constraints = [models.UniqueConstraint(fields=["host", "target"], name="one_fault_per_host_and_target")]

    def __str__(self) -> str:
        return f"{self.host} cannot run {self.target_id}: {self.cause}"

    @classmethod
    def record(cls, host: str, target_id: int, cause: str) -> None:
        cls.objects.update_or_create(host=host, target_id=target_id,
                                     defaults={"cause": cause[:4000], "seen_at": timezone.now()})

    @classmethod
    def pairs(cls) -> set[tuple[str, int]]:
        """(host, target id) of every fault: where the reconciler places nothing."""
        return set(cls.objects.values_list("host", "target_id"))
