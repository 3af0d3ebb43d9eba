from __future__ import annotations

import uuid
from typing import NamedTuple

from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Now

from distributor.models.rows import db_value, execute, fetch, now_sql, placeholders, table


class Fenced(Exception):
    """This machine's lease is gone (declared dead); it must stop writing."""


class Orders(NamedTuple):
    """What the operator asks of a running machine (``Machine.stop_mode`` and
    ``reboot_requested``), read back by the statements that claim and finish
    its task-sets, and by its lifeline between them. The lifeline's read
    also brings ``cancel``: the id of the task-set the machine runs if its
    job was cancelled now (``Job.cancel``), which it stops and ends cancelled."""

    stop_mode: str
    reboot: bool
    cancel: int | None = None


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
    # Launched to run its slot's health check (distributor/models/slots.py) before any work.
    health_check = models.BooleanField(default=False)
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

    # -- transitions: the only code that writes a machine's state ------------
    #
    # A worker's own writes go through ``_leased``: the row must still carry the
    # worker's lease and not be dead, so a machine declared dead that wakes up
    # writes nothing (it learns so from the row count and stops: ``Fenced``).
    # The operator's and the reconciler's writes are the class methods below.

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

    def _leased(self) -> models.QuerySet:
        return Machine.objects.filter(pk=self.pk, lease=self.lease).exclude(state=self.State.DEAD)

    def _move(self, state: str, **fields) -> None:
        if not self._leased().update(state=state, **fields):
            raise Fenced(f"machine {self.pk} was declared dead")

    def starting(self, activity: str = "", **fields) -> None:
        """Its target is (re)booting."""
        self._move(self.State.STARTING, current=None, **({"activity": activity} if activity else {}), **fields)

    def idle(self, activity: str = "", **fields) -> None:
        """Its target is up and it runs no task-set."""
        self._move(self.State.IDLE, current=None, **({"activity": activity} if activity else {}), **fields)

    def booted(self) -> None:
        """Its target came up once more (the count the dashboard shows)."""
        self._leased().update(target_boots=F("target_boots") + 1)

    def rebooting(self) -> None:
        """The operator's reboot is being carried out: the request is done."""
        self._leased().update(reboot_requested=False)

    def stop(self, state: str, error: str = "") -> None:
        """The worker exits: STOPPED (cleanly; the last error seen is kept for
        the operator) or FAILED. A fenced worker writes nothing."""
        kept = {"last_error": error} if error else {}
        self._leased().update(state=state, stopped_at=Now(), current=None, activity=error[:200] or "stopped", **kept)

    def beat(self) -> bool:
        """Renew the lease with database time; False if it is gone. A plain
        prepared statement: sixteen idle lifelines send it many times a second."""
        return bool(execute(
            f"UPDATE {table(Machine)} SET heartbeat_at = {now_sql()} WHERE id = %s AND lease = %s"
            f" AND state IN {placeholders(len(self.LIVE_STATES))}",
            [self.pk, db_value(Machine, "lease", self.lease), *self.LIVE_STATES],
        ))

    def orders(self) -> Orders | None:
        """The operator's orders as they stand, with the task-set it runs if
        that one's job was cancelled now. A plain statement, like ``beat``:
        idle and long-running machines send it five times a second; the
        join follows primary keys only."""
        from distributor.models import Job, TaskSet

        rows = fetch(
            f"SELECT m.stop_mode, m.reboot_requested, t.id FROM {table(Machine)} m"
            f" LEFT JOIN {table(TaskSet)} t ON t.id = m.current_id AND t.machine_id = m.id AND t.state = %s"
            f" AND EXISTS (SELECT 1 FROM {table(Job)} j WHERE j.id = t.job_id AND j.state = %s AND j.cancel_now)"
            " WHERE m.id = %s",
            [TaskSet.State.RUNNING, Job.State.CANCELLED, self.pk])
        return Orders(*rows[0]) if rows else None

    @classmethod
    def declare_dead(cls, pk: int, still_dead: Q, reason: str) -> bool:
        """The reconciler's verdict, only if the machine is still as dead as it
        looked (it may have beaten since, or another tick was quicker)."""
        return bool(cls.objects.filter(still_dead, pk=pk).update(
            state=cls.State.DEAD, stopped_at=Now(), last_error=reason, current=None, activity="dead"))

    @classmethod
    def cancel_launches(cls, machines: models.QuerySet, why: str) -> int:
        """Launches no worker took yet simply never start."""
        return machines.filter(state=cls.State.LAUNCHING).update(state=cls.State.STOPPED, stopped_at=Now(), activity=why)

    @classmethod
    def order(cls, machines: models.QuerySet, stop_mode: str) -> int:
        """Tell live machines to drain, stop now (kill) or carry on (NONE)."""
        return machines.filter(state__in=cls.LIVE_STATES).update(stop_mode=stop_mode)

    @classmethod
    def request_reboot(cls, machines: models.QuerySet) -> int:
        """Each reboots its target before its next task-set."""
        return machines.filter(state__in=cls.LIVE_STATES).update(reboot_requested=True)
