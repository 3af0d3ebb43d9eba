from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import F, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from distributor.models.fields import OrderedJSONField
from distributor.models.rows import database_time, execute, fetch, table
from distributor.models.targets import JobContent


class JobQuerySet(models.QuerySet):
    def with_counts(self) -> "JobQuerySet":
        """Each job's ``finished_count`` and ``bad_count``: the sums of its tallies."""
        return self.annotate(**{
            f"{column}_count": Coalesce(
                Subquery(Tally.objects.filter(job=OuterRef("pk")).order_by().values("job")
                         .annotate(n=Sum(column)).values("n")),
                Value(0), output_field=models.BigIntegerField())
            for column in ("finished", "bad")
        })


class JobManager(models.Manager.from_queryset(JobQuerySet)):
    """Jobs come with their counts, wherever they are read (pages, API, exports)."""

    def get_queryset(self) -> JobQuerySet:
        return super().get_queryset().with_counts()


class Job(models.Model):
    """A submission: a task-set file's spec, expanded lazily into variants.

    Variant rows are created a block at a time as machines reach them
    (``cursor`` is the next variant without a row), so a job of 10^9
    variants costs one row. Its counts of ended task-sets are not on this row
    but in its tallies, one per counting machine (see ``Tally``), so that
    machines finishing task-sets never queue for one shared row.
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
    time_limit_s = models.PositiveIntegerField(
        null=True, blank=True, help_text="wall-clock seconds a task-set may run before its target counts as failed "
                                         "(empty: from each task-set's own task model)")
    admission = OrderedJSONField(null=True, blank=True, help_text="admission-control goal sent with OPTIMIZE, in order")
    monitors = models.JSONField(default=list, blank=True, help_text="extra monitors by name, e.g. ['logging']")
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    # Cancelled "now": machines stop its running task-sets at their next look
    # and end them cancelled (Machine.orders, TaskSet.end_cancelled).
    cancel_now = models.BooleanField(default=False, help_text="cancelled now: its running task-sets are stopped too")
    # Its notify addresses also hear of task-sets turned bad, at most once a
    # BAD_NOTICE_PAUSE (distributor.notifications): how many were told, and when.
    notify_bad = models.BooleanField(default=False, help_text="notify when task-sets turn bad, at most once a minute")
    bad_notified = models.BigIntegerField(default=0, help_text="bad task-sets its notify addresses were told of")
    bad_notified_at = models.DateTimeField(null=True, blank=True)
    # Bumped (labels_changed) in the transaction of anything that changes its
    # figures without changing its ended counts (a relabel): part of its
    # results' key (distributor.summaries), so a stored summary is never taken
    # as current.
    results_generation = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    objects = JobManager()

    class Meta:
        base_manager_name = "objects"  # a task-set's job has its counts too
        indexes = [
            # claim: active jobs of a target in queue order
            models.Index(fields=["state", "target", "-priority", "id"], name="job_queue_order"),
        ]

    # The sums of the tallies, annotated by the manager; a job just created has none.
    finished_count = 0
    bad_count = 0

    def __str__(self) -> str:
        return f"#{self.pk} {self.name}"

    ACTIVE_STATES = (State.QUEUED, State.RUNNING)

    @property
    def total(self) -> int:
        """Variants this job runs: those of the file after the offset."""
        return self.variant_count - self.offset

    @property
    def started(self) -> int:
        """Task-sets that exist: a row for every variant ever started, so no row is counted."""
        return self.cursor - self.offset

    @property
    def is_active(self) -> bool:
        return self.state in self.ACTIVE_STATES

    def progress(self) -> dict:
        """Counts for progress bars: two counters and one indexed count."""
        from distributor.models import TaskSet

        running = self.tasksets.filter(state=TaskSet.State.RUNNING).count()
        cancelled = self.tasksets.filter(state=TaskSet.State.CANCELLED).count() if self.state == self.State.CANCELLED else 0
        return self.progress_from(running, cancelled)

    def progress_from(self, running: int, cancelled_rows: int) -> dict:
        """The progress counts from the task-sets running and, of a cancelled
        job, cancelled (counted by the caller: one job, or a page of jobs in
        grouped queries, webapp.progress); variants never started count as
        cancelled once the job is."""
        done = self.finished_count + self.bad_count
        cancelled = cancelled_rows + self.variant_count - self.cursor if self.state == self.State.CANCELLED else 0
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

    @classmethod
    def queue_of(cls, target_id: int) -> list[tuple]:
        """The target's active jobs in queue order: (id, created_at, state, has
        fresh variants, has queued task-sets). A plain statement because idle
        machines send it several times a second, and the EXISTS is cheaper than
        a count."""
        from distributor.models import TaskSet

        return fetch(
            f'SELECT j.id, j.created_at, j.state, j."cursor" < j.variant_count,'
            f" EXISTS (SELECT 1 FROM {table(TaskSet)} t WHERE t.job_id = j.id AND t.state = %s)"
            f" FROM {table(Job)} j WHERE j.target_id = %s AND j.state IN (%s, %s) ORDER BY j.priority DESC, j.id",
            [TaskSet.State.QUEUED, target_id, *cls.ACTIVE_STATES],
        )

    def refresh_from_db(self, *args, **kwargs) -> None:
        super().refresh_from_db(*args, **kwargs)
        counts = Job.objects.filter(pk=self.pk).values("finished_count", "bad_count").first()
        if counts:
            self.finished_count, self.bad_count = counts["finished_count"], counts["bad_count"]

    def add_counts(self, *, finished: int = 0, bad: int = 0, machine_id: int | None = None) -> None:
        """Add ended task-sets to the tally of the machine that ended them (the
        operator and the reconciler share counter 0), inside the transaction
        that ended them, so the counts never disagree with the rows. No other
        machine writes a machine's tally row: finishes never wait for each other."""
        execute(tally_upsert("VALUES (%s, %s, %s, %s)"), [self.pk, machine_id or 0, finished, bad])

    def end_if_done(self) -> bool:
        """Mark the job finished once every variant has a row and none is queued or
        running. Run after the commit that ended a task-set (the claim that
        follows a result, the reconciler): the last result's commit is then
        visible, whichever machine stored it. One statement, which locks the
        row only when it ends the job."""
        from distributor.models import TaskSet

        return bool(execute(
            f"UPDATE {table(Job)} SET state = %s, ended_at = %s WHERE id = %s AND state IN (%s, %s)"
            f' AND "cursor" >= variant_count AND NOT EXISTS (SELECT 1 FROM {table(TaskSet)} t'
            " WHERE t.job_id = %s AND t.state IN (%s, %s))",
            [self.State.FINISHED, database_time(timezone.now()), self.pk, *self.ACTIVE_STATES,
             self.pk, TaskSet.State.QUEUED, TaskSet.State.RUNNING],
        ))

    def reopen(self) -> bool:
        """A finished job runs again: the operator gave a bad task-set one more try."""
        return bool(Job.objects.filter(pk=self.pk, state=self.State.FINISHED).update(
            state=self.State.RUNNING, ended_at=None))

    def cancel(self, now: bool = False) -> bool:
        """Stop handing out this job's task-sets; the running ones finish, or,
        ``now``, their machines stop them at their next look (a fraction of a
        second: the lifeline's read of ``Machine.orders``) and they end
        cancelled, not bad. ``now`` also stops what still runs of a job
        cancelled before. False when there was nothing to change."""
        from distributor.models import TaskSet

        with transaction.atomic():
            changed = Job.objects.filter(pk=self.pk, state__in=self.ACTIVE_STATES).update(
                state=self.State.CANCELLED, ended_at=timezone.now(), cancel_now=now)
            if not changed and now:
                changed = Job.objects.filter(pk=self.pk, state=self.State.CANCELLED, cancel_now=False).update(
                    cancel_now=True)
            if not changed:
                return False
            TaskSet.cancel_queued(self)
        self.refresh_from_db()
        return True

    def reopen_cancelled(self) -> bool:
        """A cancelled job runs again (a campaign continued where it stopped):
        the task-sets its cancel ended unrun are queued again, the variants
        it never reached are still to come, and what ended stays ended. Its
        notifications wait for its new end. False if it was not cancelled."""
        from distributor.models import Notification, TaskSet

        with transaction.atomic():
            started = Job.objects.filter(pk=self.pk).values_list("started_at", flat=True).first()
            if not Job.objects.filter(pk=self.pk, state=self.State.CANCELLED).update(
                    state=self.State.RUNNING if started else self.State.QUEUED, ended_at=None, cancel_now=False):
                return False
            TaskSet.requeue_cancelled(self)
            Notification.rearm(self)
        self.refresh_from_db()
        return True

    @classmethod
    def labels_changed(cls, job_ids: Iterable[int]) -> int:
        """Their task-sets' labels were stored anew (a relabel): their figures
        changed while their ended counts did not, so the next generation keeps
        their stored results summaries from being taken as current
        (``distributor.summaries``). In the transaction that stored the labels
        (``tasksets.store_analyses`` calls it). Returns the jobs changed."""
        return Job.objects.filter(pk__in=list(job_ids)).update(results_generation=F("results_generation") + 1)

    def note_bad(self, told: int, total: int) -> bool:
        """``total`` bad task-sets are being told of, ``told`` were before:
        compare-and-set, so two reconcilers never tell the same ones twice."""
        return bool(Job.objects.filter(pk=self.pk, bad_notified=told).update(
            bad_notified=total, bad_notified_at=timezone.now()))

    def set_priority(self, priority: int) -> bool:
        """Move a job that has not ended in the queue (claims read the priority
        on every look, so machines follow at once); False once it has ended.
        Raises ValidationError for a priority out of range."""
        if isinstance(priority, bool) or not isinstance(priority, int) or not -1000 <= priority <= 1000:
            raise ValidationError({"priority": "must be an integer from -1000 to 1000"})
        if not Job.objects.filter(pk=self.pk, state__in=self.ACTIVE_STATES).update(priority=priority):
            return False
        self.priority = priority
        return True

    def as_dict(self) -> dict:
        """What a script reads of a job (``jobs show --json``): options, times, progress."""
        return {
            "id": self.pk, "name": self.name, "state": self.state, "target": self.target.name,
            "owner": self.owner.username if self.owner else None, "source_name": self.source_name,
            "variant_count": self.variant_count, "offset": self.offset, "tries": self.tries,
            "priority": self.priority, "admission": self.admission, "monitors": self.monitors,
            "time_limit_s": self.time_limit_s,
            "cancel_now": self.cancel_now, "notify_bad": self.notify_bad,
            "notify": [{"url": n.url, "event": n.event, "state": n.state, "attempts": n.attempts}
                       for n in self.notifications.all()],
            **{key: moment.isoformat() if moment else None for key, moment in (
                ("created_at", self.created_at), ("started_at", self.started_at), ("ended_at", self.ended_at))},
            "progress": self.progress(),
            "contents": JobContent.of_job(self.pk),
        }


class Tally(models.Model):
    """A job's ended task-sets as counted by one machine (``counter`` is its id;
    0 counts the operator's and the reconciler's). The job's counts are the
    sums: a machine storing a result adds to its own row, which no other
    machine writes, instead of to the job's, which every one would."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="tallies", db_index=False)  # see Meta
    counter = models.BigIntegerField()
    finished = models.BigIntegerField(default=0)
    bad = models.BigIntegerField(default=0)  # an operator's retry of a bad task-set takes one off counter 0's

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "counter"], name="one_tally_per_counter")]

    def __str__(self) -> str:
        return f"job {self.job_id} counter {self.counter}: {self.finished} finished, {self.bad} bad"


def tally_upsert(source: str) -> str:
    """Adds ``source``'s rows (job, counter, finished, bad) to their tallies:
    a VALUES list, or a SELECT inside a larger statement."""
    tally = table(Tally)
    return (f"INSERT INTO {tally} (job_id, counter, finished, bad) {source}"
            f" ON CONFLICT (job_id, counter) DO UPDATE SET finished = {tally}.finished + excluded.finished,"
            f" bad = {tally}.bad + excluded.bad")
