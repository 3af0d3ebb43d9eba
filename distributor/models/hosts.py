from __future__ import annotations

from datetime import timedelta

from django.db import models, transaction
from django.db.models import DateTimeField, ExpressionWrapper
from django.db.models.functions import Now
from django.utils import timezone

MAX_RETRY_WAIT_S = 3600  # a faulty host's retries stop doubling here


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
    places that target's machines on other hosts; at ``retry_at`` it places
    one machine here again, as a probe, for the cause may have been mended
    (a disk freed, a bridge set up): a task-set that finishes lifts the
    fault, another fault doubles the wait, from the pool's
    ``health_check_every`` up to an hour. The operator's ``host NAME
    resume`` lifts it at once. Other targets still run here. Apart from a
    target's own faults (which slots are healthy): this is which hosts are."""

    host = models.CharField(max_length=63)
    target = models.ForeignKey("distributor.Target", on_delete=models.CASCADE, related_name="host_faults")
    cause = models.TextField()
    seen_at = models.DateTimeField()
    # Probes that found the fault again, in a row: the back-off's exponent.
    faults_in_a_row = models.PositiveSmallIntegerField(default=1)
    retry_at = models.DateTimeField(null=True, blank=True)
    probed_at = models.DateTimeField(null=True, blank=True)  # the last probe's placement

    class Meta:
        # record() looks a pair up; the reconciler reads them all each tick.
        constraints = [models.UniqueConstraint(fields=["host", "target"], name="one_fault_per_host_and_target")]

    def __str__(self) -> str:
        return f"{self.host} cannot run {self.target_id}: {self.cause}"

    @classmethod
    def record(cls, host: str, target, cause: str) -> "HostTargetFault":
        """A machine of ``target`` on ``host`` met the fault. Found again by a
        probe (once its retry time came) the next wait doubles; machines
        that met it together count once."""
        now = timezone.now()
        with transaction.atomic():
            fault, created = cls.objects.select_for_update().get_or_create(
                host=host, target=target, defaults={"cause": cause[:4000], "seen_at": now})
            if not created and fault.probed_at is not None and fault.probed_at > fault.seen_at:
                fault.faults_in_a_row += 1  # a probe found it again
            fault.cause, fault.seen_at = cause[:4000], now
            fault.retry_at = now + fault.wait(target)
            fault.save()
        return fault

    def wait(self, target) -> timedelta:
        return timedelta(seconds=min(target.health_check_every * 2 ** (self.faults_in_a_row - 1), MAX_RETRY_WAIT_S))

    @classmethod
    def pairs(cls) -> tuple[set[tuple[str, int]], set[tuple[str, int]]]:
        """(host, target id) of every fault, and of those not yet due for a
        retry: where the reconciler places nothing (one query, each tick)."""
        now, faulty, blocked = timezone.now(), set(), set()
        for host, target_id, retry_at in cls.objects.values_list("host", "target_id", "retry_at"):
            faulty.add((host, target_id))
            if retry_at is not None and retry_at > now:
                blocked.add((host, target_id))
        return faulty, blocked

    @classmethod
    def retry_due(cls, host: str, target) -> bool:
        """Claim a due retry (compare-and-set): the next one is pushed out by a
        full wait, so one probe goes at a time and a probe whose machine dies
        is tried again later."""
        now = timezone.now()
        fault = cls.objects.filter(host=host, target=target).first()
        if fault is None:
            return True
        if fault.retry_at is not None and fault.retry_at > now:
            return False
        return bool(cls.objects.filter(pk=fault.pk, retry_at=fault.retry_at).update(
            retry_at=now + fault.wait(target), probed_at=now))

    @classmethod
    def lift(cls, host: str, target_id: int) -> bool:
        """A task-set finished on this host's machine of that target: the cause is mended."""
        return bool(cls.objects.filter(host=host, target_id=target_id).delete()[0])
