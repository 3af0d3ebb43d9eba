from __future__ import annotations

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from distributor.models.fields import OrderedJSONField
from distributor.models.rows import database_time, execute, table


class Job(models.Model):
    """A submission: a task-set file's spec, expanded lazily into variants.

    Variant rows are created a block at a time as machines reach them
    (``cursor`` is the next variant without a row), so a job of 10^9
    variants costs one row.
    """

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        FINISHED = "finished"
        CANCELLED = "cancelled"

    name = models.CharField(max_length=200)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    target = models.ForeignKey("distributor.Target", on_delete=models.PROTECT, related_name="jobs")
    spec = models.JSONField(help_text="the validated task-set file (distributor.taskfile)")
    source_name = models.CharField(max_length=255, blank=True, default="")
    variant_count = models.PositiveBigIntegerField(help_text="variants in the file")
    offset = models.PositiveBigIntegerField(default=0)
    cursor = models.PositiveBigIntegerField(help_text="next variant never started")
    tries = models.PositiveSmallIntegerField(default=3)
    priority = models.SmallIntegerField(default=0, help_text="higher runs first; equal priorities run FIFO")
    admission = OrderedJSONField(null=True, blank=True, help_text="admission-control goal sent with OPTIMIZE, in order")
    monitors = models.JSONField(default=list, blank=True, help_text="extra monitors by name, e.g. ['logging']")
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    finished_count = models.PositiveBigIntegerField(default=0)
    bad_count = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # claim: active jobs of a target in queue order
            models.Index(fields=["state", "target", "-priority", "id"], name="job_queue_order"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.name}"

    ACTIVE_STATES = (State.QUEUED, State.RUNNING)

    @property
    def total(self) -> int:
        """Variants this job runs: those of the file after the offset."""
        return self.variant_count - self.offset

    @property
    def is_active(self) -> bool:
        return self.state in self.ACTIVE_STATES

    def progress(self) -> dict:
        """Counts for progress bars: two counters and one indexed count."""
        from distributor.models import TaskSet

        running = self.tasksets.filter(state=TaskSet.State.RUNNING).count()
        done = self.finished_count + self.bad_count
        cancelled = self.tasksets.filter(state=TaskSet.State.CANCELLED).count() if self.state == self.State.CANCELLED else 0
        if self.state == self.State.CANCELLED:
            cancelled += self.variant_count - self.cursor
        queued = max(self.total - done - running - cancelled, 0)
        return {
            "total": self.total,
            "queued": queued,
            "running": running,
            "finished": self.finished_count,
            "bad": self.bad_count,
            "cancelled": cancelled,
            "percent": round(100 * done / self.total, 1) if self.total else 100.0,
        }

    # -- state changes -----------------------------------------------------

    def mark_started(self) -> None:
        Job.objects.filter(pk=self.pk, state=self.State.QUEUED).update(state=self.State.RUNNING, started_at=timezone.now())

    def count_result(self, bad: bool) -> None:
        """Add one ended task-set to the counters and end the job with its last one.

        Runs inside the transaction that ended the task-set, so the counters
        never disagree with the rows.
        """
        field = "bad_count" if bad else "finished_count"
        last = 'state IN (%s, %s) AND finished_count + bad_count + 1 >= variant_count - "offset"'  # reserved word
        execute(  # one statement: the row stays locked until the commit
            f"UPDATE {table(Job)} SET {field} = {field} + 1, state = CASE WHEN {last} THEN %s ELSE state END,"
            f" ended_at = CASE WHEN {last} THEN %s ELSE ended_at END WHERE id = %s",
            [*self.ACTIVE_STATES, self.State.FINISHED, *self.ACTIVE_STATES, database_time(timezone.now()), self.pk],
        )

    def cancel(self) -> bool:
        """Stop handing out this job's task-sets; the running ones finish."""
        from distributor.models import TaskSet

        with transaction.atomic():
            if not Job.objects.filter(pk=self.pk, state__in=self.ACTIVE_STATES).update(
                state=self.State.CANCELLED, ended_at=timezone.now()
            ):
                return False
            TaskSet.objects.filter(job=self, state=TaskSet.State.QUEUED).update(state=TaskSet.State.CANCELLED)
        self.refresh_from_db()
        return True

    def resubmit(self, owner=None) -> "Job":
        """A new job with the same file and options, queued at the end."""
        return Job.objects.create(
            name=self.name,
            owner=owner or self.owner,
            target=self.target,
            spec=self.spec,
            source_name=self.source_name,
            variant_count=self.variant_count,
            offset=self.offset,
            cursor=self.offset,
            tries=self.tries,
            priority=self.priority,
            admission=self.admission,
            monitors=self.monitors,
        )

