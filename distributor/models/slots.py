"""A slot's health, as LAVA keeps a device's: the TARGET's fault, kept apart
from task-set results and from a host's own faults.

A slot (target, index) is healthy until its target fails a task-set; then
suspect; after ``quarantine_after`` target failures in a row (a target
setting, default 3) quarantined: the reconciler starts nothing on it but a
health check, on a back-off schedule, which returns it to healthy when it
passes. The operator puts a slot into maintenance and back. Rows are made
when a slot first needs one; a slot without a row is healthy.
"""
from __future__ import annotations

from datetime import timedelta

from django.db import models, transaction
from django.utils import timezone

MAX_CHECK_WAIT_S = 3600  # the back-off between health checks stops doubling here


class Slot(models.Model):
    class Health(models.TextChoices):
        HEALTHY = "healthy"
        SUSPECT = "suspect"  # its target failed lately, fewer than quarantine_after times in a row
        QUARANTINED = "quarantined"  # failed too often: only health checks run on it
        MAINTENANCE = "maintenance"  # the operator took it out of service

    OUT_OF_SERVICE = (Health.QUARANTINED, Health.MAINTENANCE)

    target = models.ForeignKey("distributor.Target", on_delete=models.CASCADE, related_name="slots")
    index = models.PositiveSmallIntegerField()
    health = models.CharField(max_length=16, choices=Health.choices, default=Health.HEALTHY)
    cause = models.TextField(blank=True, default="")
    failures_in_a_row = models.PositiveSmallIntegerField(default=0)
    # The task-set it failed last: a task-set failing again where it failed
    # (a pool of one slot) is evidence against the task-set, not the slot.
    last_failed_taskset = models.BigIntegerField(null=True, blank=True)
    # When the current streak of failures began: the attempts a quarantine forgives.
    failing_since = models.DateTimeField(null=True, blank=True)
    checks_failed = models.PositiveSmallIntegerField(default=0)  # since the quarantine: the back-off's exponent
    next_check_at = models.DateTimeField(null=True, blank=True)
    changed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["target", "index"], name="one_row_per_slot")]
        indexes = [
            # tick: slots out of service, and quarantined slots due for a check
            models.Index(fields=["health", "next_check_at"], name="slot_by_health"),
        ]

    def __str__(self) -> str:
        return f"{self.target_id}:{self.index} {self.health}"

    @property
    def label(self) -> str:
        return f"{self.target.name}:{self.index}"

    @classmethod
    def of(cls, target, index: int) -> "Slot":
        """The slot's row, made healthy when it has none yet."""
        slot, _ = cls.objects.get_or_create(target=target, index=index)
        return slot

    @classmethod
    def _locked(cls, target, index: int) -> "Slot":
        cls.of(target, index)
        return cls.objects.select_for_update().get(target=target, index=index)

    # -- what machines report ------------------------------------------------------

    @classmethod
    def record_failure(cls, target, index: int, cause: str, taskset_id: int | None = None) -> "Slot":
        """Its target failed a task-set (or did not start): suspect, or
        quarantined after the target's ``quarantine_after`` failures of
        different task-sets in a row. A slot already out of service stays as
        it is (its cause is the operator's or the first)."""
        now = timezone.now()
        with transaction.atomic():
            slot = cls._locked(target, index)
            if slot.health in cls.OUT_OF_SERVICE:
                return slot
            again = taskset_id is not None and taskset_id == slot.last_failed_taskset
            slot.last_failed_taskset = taskset_id
            slot.failures_in_a_row += 0 if again else 1
            slot.failing_since = slot.failing_since or now
            if slot.failures_in_a_row >= target.quarantine_after:
                slot.health = cls.Health.QUARANTINED
                slot.cause = f"{slot.failures_in_a_row} target failures in a row; the last: {cause}"[:4000]
                slot.checks_failed = 0
                slot.next_check_at = now + timedelta(seconds=target.health_check_every)
            else:
                slot.health, slot.cause = cls.Health.SUSPECT, cause[:4000]
            slot.changed_at = now
            slot.save()
        return slot

    @classmethod
    def record_success(cls, target, index: int) -> None:
        """A task-set finished on it: a suspect slot is healthy again."""
        cls.objects.filter(target=target, index=index, health__in=[cls.Health.HEALTHY, cls.Health.SUSPECT]).exclude(
            failures_in_a_row=0, health=cls.Health.HEALTHY
        ).update(health=cls.Health.HEALTHY, cause="", failures_in_a_row=0, failing_since=None,
                 last_failed_taskset=None, changed_at=timezone.now())

    @classmethod
    def check_due(cls, target, index: int) -> bool:
        """Claim a due health check (compare-and-set): its next one is pushed
        out by a full wait, so a check whose machine dies is tried again."""
        now = timezone.now()
        return bool(cls.objects.filter(target=target, index=index, health=cls.Health.QUARANTINED,
                                       next_check_at__lte=now)
                    .update(next_check_at=now + timedelta(seconds=target.health_check_every)))

    @classmethod
    def check_passed(cls, target, index: int) -> bool:
        """Its health check passed: back in service (unless the operator took it out meanwhile)."""
        return bool(cls.objects.filter(target=target, index=index, health=cls.Health.QUARANTINED).update(
            health=cls.Health.HEALTHY, cause="", failures_in_a_row=0, failing_since=None, last_failed_taskset=None,
            checks_failed=0,
            next_check_at=None, changed_at=timezone.now()))

    @classmethod
    def check_failed(cls, target, index: int, cause: str) -> None:
        """Its health check failed: the next one waits twice as long (at most an hour)."""
        with transaction.atomic():
            slot = cls._locked(target, index)
            if slot.health != cls.Health.QUARANTINED:
                return
            slot.checks_failed += 1
            wait = min(target.health_check_every * 2 ** slot.checks_failed, MAX_CHECK_WAIT_S)
            slot.next_check_at = timezone.now() + timedelta(seconds=wait)
            slot.cause = f"{slot.cause.split('; health check ', 1)[0]}; health check {slot.checks_failed} failed: {cause}"[:4000]
            slot.save(update_fields=["checks_failed", "next_check_at", "cause"])

    # -- the operator ----------------------------------------------------------------

    @classmethod
    def set_maintenance(cls, target, index: int, cause: str = "") -> "Slot":
        """Out of service until the operator says healthy; its machine drains (the reconciler)."""
        with transaction.atomic():
            slot = cls._locked(target, index)
            slot.health, slot.cause = cls.Health.MAINTENANCE, (cause or "maintenance")[:4000]
            slot.next_check_at, slot.changed_at = None, timezone.now()
            slot.save()
        return slot

    @classmethod
    def set_healthy(cls, target, index: int) -> "Slot":
        """Back in service, its record of failures forgotten."""
        with transaction.atomic():
            slot = cls._locked(target, index)
            slot.health, slot.cause, slot.failures_in_a_row, slot.failing_since = cls.Health.HEALTHY, "", 0, None
            slot.last_failed_taskset = None
            slot.checks_failed, slot.next_check_at, slot.changed_at = 0, None, timezone.now()
            slot.save()
        return slot

    # -- what the reconciler asks -----------------------------------------------------

    @classmethod
    def out_of_service(cls, target) -> set[int]:
        return set(cls.objects.filter(target=target, health__in=cls.OUT_OF_SERVICE).values_list("index", flat=True))

    @classmethod
    def due_for_check(cls) -> models.QuerySet:
        return cls.objects.filter(health=cls.Health.QUARANTINED, next_check_at__lte=timezone.now()).select_related("target")

