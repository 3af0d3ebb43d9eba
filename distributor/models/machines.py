from __future__ import annotations

import uuid
from typing import NamedTuple

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now


class Orders(NamedTuple):
    """What the operator asks of a running machine (``Machine.stop_mode`` and
    ``reboot_requested``), read back by the statements that claim and finish
    its task-sets, and by its lifeline between them."""

    stop_mode: str
    reboot: bool


class Machine(models.Model):
    """One launch of a worker that owns one target (slot ``slot`` of a pool).

    A row per launch keeps each machine's history; the slot decides the
    target's address, tap device and MAC, and the database allows one live
    machine per slot.
    """

    class State(models.TextChoices):
        LAUNCHING = "launching"  # row created, launch message sent
        STARTING = "starting"  # a worker took it; its target is booting
        IDLE = "idle"  # target ready, waiting for work
        BUSY = "busy"  # running a task-set
        STOPPED = "stopped"  # exited cleanly
        FAILED = "failed"  # exited with an error (see last_error)
        DEAD = "dead"  # declared dead by the reconciler: heartbeat stale

    class StopMode(models.TextChoices):
        NONE = ""
        DRAIN = "drain"  # finish the current task-set, then stop
        KILL = "kill"  # stop now, put the task-set back untouched

    LIVE_STATES = (State.LAUNCHING, State.STARTING, State.IDLE, State.BUSY)

    target = models.ForeignKey("distributor.Target", on_delete=models.PROTECT, related_name="machines")
    slot = models.PositiveSmallIntegerField()
    host = models.CharField(max_length=63, help_text="the distributor host whose cluster runs it")
    address = models.CharField(max_length=255, blank=True, default="")
    state = models.CharField(max_length=16, choices=State.choices, default=State.LAUNCHING)
    stop_mode = models.CharField(max_length=8, choices=StopMode.choices, blank=True, default=StopMode.NONE)
    reboot_requested = models.BooleanField(default=False)
    # Fencing token: set when a worker takes the row; every later write checks it.
    lease = models.UUIDField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    launched_at = models.DateTimeField(db_default=Now())
    started_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    current = models.ForeignKey(
        "distributor.TaskSet", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    current_since = models.DateTimeField(null=True, blank=True)
    activity = models.CharField(max_length=200, blank=True, default="")
    tasksets_done = models.PositiveIntegerField(default=0)
    target_boots = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    pid = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["target", "slot"],
                condition=Q(state__in=["launching", "starting", "idle", "busy"]),
                name="one_live_machine_per_slot",
            ),
        ]
        indexes = [
            # tick and the dashboard: live machines
            models.Index(fields=["state", "host"], name="machine_by_state"),
        ]

    def __str__(self) -> str:
        return f"machine {self.pk} ({self.target_id}:{self.slot})"

    @property
    def is_live(self) -> bool:
        return self.state in self.LIVE_STATES

    def take(self, pid: int) -> uuid.UUID | None:
        """A worker takes this launch (compare-and-set); a duplicate delivery
        of the launch message gets None and must exit at once."""
        lease = uuid.uuid4()
        taken = Machine.objects.filter(pk=self.pk, state=self.State.LAUNCHING, lease__isnull=True).update(
            state=self.State.STARTING, lease=lease, pid=pid, started_at=Now(), heartbeat_at=Now(),
            activity="starting target",
        )
        if not taken:
            return None
        self.refresh_from_db()
        return lease
