from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache

from django.db import models, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from distributor.models.rows import (EVENT_COLUMNS, TASKJOB_COLUMNS, column_arrays, database_time, db_value, execute,
                                     fetch, insert_head, insert_rows, now_sql, on_postgresql, placeholders,
                                     prepared_cursor, table, unnest_select)
from sessions.base import TASK_FIELDS
from sessions.outcomes import Miss


Labeller = Callable[["TaskSet"], "dict | None"]


class TaskSet(models.Model):
    """One variant of a job, created queued (with its tasks) in a block of
    variants when machines reach it (``distributor.queue``).

    Every state change below is a compare-and-set on ``state`` (and
    ``machine`` for a running one): a machine that was declared dead and
    comes back finds its task-set gone and writes nothing, so a result is
    stored at most once.
    """

    class State(models.TextChoices):
        QUEUED = "queued"  # put back in the queue; runs before fresh variants
        RUNNING = "running"
        FINISHED = "finished"  # ran to the end: a result, schedulable or not
        BAD = "bad"  # the target failed on it `tries` times: no result
        CANCELLED = "cancelled"

    class Outcome(models.TextChoices):
        """What a finished run means, under the outcome model (sessions.outcomes)."""

        SCHEDULABLE = "schedulable"  # every job met its deadline
        UNSCHEDULABLE = "unschedulable"  # a timing miss: late, killed, or never run
        RESOURCE = "resource"  # out of quota or caps, and no timing miss

    # No index of its own: the unique (job, variant) index leads with it.
    job = models.ForeignKey("distributor.Job", on_delete=models.CASCADE, related_name="tasksets", db_index=False)
    variant = models.PositiveBigIntegerField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, blank=True, default="")
    attempts = models.PositiveSmallIntegerField(default=0, help_text="tries counted against the job's tries")
    # Every start, forgiven or not: it numbers attempts and their events, so a
    # dead machine's late events can never mix with the retry's.
    runs = models.PositiveSmallIntegerField(default=0)
    # Times its machine died under it; forgiven like an operator's kill until
    # it happens `tries` times (a task-set that crashes its host is bad).
    losses = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    machine = models.ForeignKey(
        "distributor.Machine", null=True, blank=True, on_delete=models.SET_NULL, related_name="tasksets"
    )
    # The slot whose target failed it last: its retry goes to another slot
    # while another one of the pool is live (the claim).
    failed_slot = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    # The first miss of a finished run, in time (sessions.outcomes.Miss).
    first_miss_task = models.PositiveSmallIntegerField(null=True, blank=True)
    first_miss_job = models.PositiveIntegerField(null=True, blank=True)
    first_miss_kind = models.CharField(max_length=16, blank=True, default="", db_default="")  # raw inserts omit it
    first_miss_ms = models.BigIntegerField(null=True, blank=True)
    # Analytic schedulability labels (utilisation, bound tests, RTA, EDF),
    # on every ended set: the analysis needs no run (distributor.labels).
    analysis = models.JSONField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "variant"], name="one_row_per_variant"),
            models.UniqueConstraint(
                fields=["machine"], condition=Q(state="running"), name="one_running_taskset_per_machine"
            ),
        ]
        indexes = [
            # progress counts and the job page's filters: tasksets of a job by state
            models.Index(fields=["job", "state", "variant"], name="taskset_job_state"),
            # claim: requeued task-sets come first
            models.Index(fields=["job", "variant"], condition=Q(state="queued"), name="taskset_requeued"),
        ]

    # The first miss's columns, in the exports' order (``_miss_fields`` writes them).
    MISS_COLUMNS = ("first_miss_task", "first_miss_job", "first_miss_kind", "first_miss_ms")

    def __str__(self) -> str:
        return f"job {self.job_id} variant {self.variant}"

    @property
    def first_miss(self) -> Miss | None:
        """The first miss of its run, or None: nothing missed, or no result."""
        return self.miss_in({name: getattr(self, name) for name in self.MISS_COLUMNS})

    @staticmethod
    def miss_in(columns: Mapping) -> Miss | None:
        """The first miss stored in ``columns`` (a row's values by
        MISS_COLUMNS name; the exports read rows as dicts), or None."""
        return _stored_miss(columns)

    # -- the queue: a block of variants in, one task-set out -------------------

    @classmethod
    def queue_block(cls, job, tasks_of: Callable[[int], list[dict]]) -> bool:
        """Turn the job's next BLOCK fresh variants into queued task-sets with
        their tasks (``tasks_of(variant)``); False when none are left. The
        job's row is locked for this alone, once per BLOCK task-sets."""
        return _queue_block(job, tasks_of)

    @classmethod
    def claim(cls, job, machine):
        """The job's lowest queued task-set, started with its attempt and the
        machine marked busy, all or nothing: (task-set, tasks as dicts, task
        id → Task row, the operator's orders), or None when another machine
        was quicker. Raises Fenced if the machine lost its lease."""
        now = timezone.now()
        claim = _claim_in_one_statement if on_postgresql() else _claim_in_one_transaction
        found = claim(job, machine, database_time(now))
        if found is None:
            return None
        started, orders, task_rows = found
        taskset = TaskSet(pk=started["id"], job=job, variant=started["variant"], state=cls.State.RUNNING,
                          attempts=started["attempts"], runs=started["runs"], losses=started["losses"],
                          machine=machine, started_at=now)
        tasks = [{"id": row[1], **dict(zip(Task.FIELDS, row[2:]))} for row in task_rows]
        return taskset, tasks, {row[1]: row[0] for row in task_rows}, orders

    # -- state changes (compare-and-set, inside the caller's transaction) --

    def _running_on(self, machine) -> models.QuerySet:
        return TaskSet.objects.filter(pk=self.pk, state=self.State.RUNNING, machine=machine)

    def finish(self, machine, outcome: str, taskjobs: Sequence[tuple], events: Sequence[tuple] = (),
               analysis: dict | None = None, first_miss: Miss | None = None):
        """Store the result and end the task-set, all or nothing. Returns the
        operator's orders for the machine (``Orders``, read on the way), or
        None if the task-set or the machine's lease was taken away: then
        nothing is written. ``taskjobs`` and ``events`` are rows in the order
        of ``rows.TASKJOB_COLUMNS`` and ``rows.EVENT_COLUMNS``.

        The machine row is locked first, in the reconciler's order when it
        declares a machine dead, so the two never wait for each other; the
        machine stays busy until its next claim or until it finds none (no
        indexed column changes, so PostgreSQL updates the row in place); the
        job's count goes to the machine's own tally. Nothing is shared with
        other machines."""
        now = timezone.now()
        store = _finish_in_one_statement if on_postgresql() else _finish_in_one_transaction
        miss = _miss_fields(first_miss)
        orders = store(self, machine, outcome, miss, taskjobs, events, analysis, database_time(now))
        if orders is not None:
            self.state, self.outcome, self.ended_at = self.State.FINISHED, outcome, now
            for name, value in miss.items():
                setattr(self, name, value)
        return orders

    # A task-set that ends bad keeps any labels it has, else gets the ones its
    # caller gives: ``analysis`` (the machine has the tasks and the model at
    # hand) or ``labeller(task-set)``, called only if it does turn bad
    # (``distributor.labels.label_stored``, which sits above the models).

    def fail(self, machine, error: str, final: bool = False, analysis: dict | None = None,
             slot_out_of_service: bool = False) -> str | None:
        """An infrastructure failure: queue it again, or call it bad after the
        job's tries (at once when ``final``: the task-set itself cannot run).
        A target failure that puts its slot out of service (the quarantine
        confirms the target is at fault) is forgiven: not counted against the
        tries. Returns the new state, or None if it was taken away."""
        if slot_out_of_service and not final:
            with transaction.atomic():
                if not self._forgiven_enough():
                    return self._end_attempt(machine, Attempt.Result.FORGIVEN, error, bad=False, forgive=True,
                                             counter=None, failed_slot=machine.slot)
        # Read again: a quarantine elsewhere may have forgiven one of its attempts since the claim.
        attempts = TaskSet.objects.values_list("attempts", flat=True).get(pk=self.pk)
        bad = final or attempts >= self.job.tries
        return self._end_attempt(machine, Attempt.Result.FAILED, error, bad=bad, forgive=False, counter=machine.pk,
                                 analysis=analysis, failed_slot=None if final else machine.slot)

    def _forgiven_enough(self) -> bool:
        """Quarantines forgive a task-set's target failures at most its job's
        tries times: one that goes on failing on slot after slot, each of
        which then passes its health check, fails by itself (a binary that
        crashes the target) and must end bad, not travel the pool for ever.
        Inside the caller's transaction, with the task-set's row locked until
        it ends: two quarantines at once count each other's forgiveness."""
        list(TaskSet.objects.select_for_update().filter(pk=self.pk).values_list("pk", flat=True))
        return Attempt.objects.filter(taskset_id=self.pk, result=Attempt.Result.FORGIVEN).count() >= self.job.tries

    @classmethod
    def forgive_slot_failures(cls, machines: models.QuerySet, since) -> int:
        """A slot was quarantined: the target failures of its streak (attempts
        that failed on its machines since ``since``) were the target's fault,
        so none counts against its task-set's tries (unless the task-set was
        forgiven enough already); a task-set they made bad is queued again
        (its job reopened). Returns the attempts forgiven."""
        from distributor.models import Job

        failed = Attempt.objects.filter(machine__in=machines, result=Attempt.Result.FAILED, ended_at__gte=since)
        forgiven = 0
        for attempt in failed.select_related("taskset__job"):
            with transaction.atomic():
                if attempt.taskset._forgiven_enough():
                    continue
                if not Attempt.objects.filter(pk=attempt.pk, result=Attempt.Result.FAILED).update(
                        result=Attempt.Result.FORGIVEN):
                    continue
                forgiven += 1
                taskset = attempt.taskset
                steps_back = TaskSet.objects.filter(pk=taskset.pk, attempts__gt=0)
                if steps_back.filter(state=cls.State.BAD, job__state__in=[*Job.ACTIVE_STATES, Job.State.FINISHED]).update(
                        state=cls.State.QUEUED, attempts=F("attempts") - 1, ended_at=None):
                    taskset.job.add_counts(bad=-1)
                    taskset.job.reopen()
                else:  # queued, running or ended since: the count of tries it used is right again
                    steps_back.exclude(state=cls.State.BAD).update(attempts=F("attempts") - 1)
        return forgiven

    def recover_from_dead_machine(self, machine, reason: str, labeller: Labeller | None = None) -> str | None:
        """Its machine stopped beating: queue it again and forgive the attempt
        (an operator's kill -9 is not the task-set's fault), unless machines
        keep dying under this very task-set."""
        losses = self.losses + 1
        bad = losses >= max(self.job.tries, 1)
        error = f"{reason}; its machine died {losses} time(s)" if bad else reason
        analysis = labeller(self) if bad and labeller else None
        return self._end_attempt(machine, Attempt.Result.LOST, error, bad=bad, forgive=not bad, lost=True, counter=None,
                                 analysis=analysis)

    def put_back(self, machine) -> bool:
        """Kill all: back in the queue untouched (the attempt is not counted)."""
        with transaction.atomic():
            if not self._running_on(machine).update(
                state=self.State.QUEUED, attempts=F("attempts") - 1, runs=F("runs") - 1
            ):
                return False
            self._discard_attempt_events()
            self._open_attempt().delete()
            self.state = self._queued_unless_cancelled()
        return True

    def end_cancelled(self, machine, reason: str = "its job was cancelled") -> bool:
        """Its job was cancelled now and its machine stopped it: it ends
        cancelled, not bad, and is counted nowhere (a cancelled job counts its
        cancelled task-sets); the attempt's events stay with the attempt,
        marked cancelled. False if it was taken away."""
        now = timezone.now()
        with transaction.atomic():
            if not self._running_on(machine).update(state=self.State.CANCELLED, ended_at=now, last_error=reason[:4000]):
                return False
            self._open_attempt().update(ended_at=now, result=Attempt.Result.CANCELLED, error=reason[:4000])
        self.state, self.ended_at, self.last_error = self.State.CANCELLED, now, reason
        return True

    def requeue_bad(self) -> bool:
        """The operator gives a bad task-set one more try (its attempts and
        events stay as evidence); the job's counters step back and a finished
        job runs again."""
        from distributor.models import Job

        with transaction.atomic():
            if not TaskSet.objects.filter(
                pk=self.pk, state=self.State.BAD, job__state__in=[*Job.ACTIVE_STATES, Job.State.FINISHED]
            ).update(state=self.State.QUEUED, losses=0, ended_at=None):
                return False
            self.job.add_counts(bad=-1)  # counter 0's may go below zero; the sum cannot
            self.job.reopen()
        self.state = self.State.QUEUED
        return True

    def give_up(self, reason: str, labeller: Labeller | None = None) -> bool:
        """The operator calls a queued task-set bad (one known to break its
        target); a running one is left alone: its machine owns it. It gets
        labels like any bad one."""
        now = timezone.now()
        labels = _labels_unless_present(labeller(self) if labeller else None)
        with transaction.atomic():
            if not TaskSet.objects.filter(pk=self.pk, state=self.State.QUEUED).update(
                state=self.State.BAD, ended_at=now, last_error=reason[:4000], **labels
            ):
                return False
            self.job.add_counts(bad=1)
        self.job.end_if_done()  # it may have been the last one left
        self.state, self.last_error = self.State.BAD, reason
        return True

    def _end_attempt(self, machine, result: str, error: str, *, bad: bool, forgive: bool, counter: int | None,
                     lost: bool = False, analysis: dict | None = None, failed_slot: int | None = None):
        now = timezone.now()
        new_state = self.State.BAD if bad else self.State.QUEUED
        changes = {"state": new_state, "last_error": error[:4000], "ended_at": now if bad else None}
        if failed_slot is not None:
            changes["failed_slot"] = failed_slot
        if bad:  # labelled before the transaction: no lock waits on the analysis
            changes.update(_labels_unless_present(analysis))
        if forgive:
            changes["attempts"] = F("attempts") - 1
        if lost:
            changes["losses"] = F("losses") + 1
        with transaction.atomic():
            # The failed attempt's raw events stay, marked with its number: they
            # are the evidence of what went wrong. Only its task-jobs would be
            # results, and those are written at finish alone.
            if not self._running_on(machine).update(**changes):
                return None
            self._open_attempt().update(ended_at=now, result=result, error=error[:4000])
            if bad:
                self.job.add_counts(bad=1, machine_id=counter)
            else:
                new_state = self._queued_unless_cancelled()
        self.state, self.last_error = new_state, error
        return new_state

    def _queued_unless_cancelled(self) -> str:
        """Just put back in the queue: if its job was cancelled meanwhile it
        ends cancelled, as the cancel ended the job's other queued task-sets
        (else it would wait forever in a job that hands out nothing)."""
        if TaskSet.cancel_queued(self.job_id, only=self.pk):
            return self.State.CANCELLED
        return self.State.QUEUED

    @classmethod
    def cancel_queued(cls, job, only: int | None = None) -> int:
        """The queued task-sets of a cancelled job (``only`` the one with
        that id) end cancelled, unrun, whether the cancel finds them queued
        (``Job.cancel``) or they come back to the queue after it. They end
        now, like any set that ends: exports select by ``ended_at``
        (``Selection.since``). The job's state is checked in the same
        statement, so a job continued meanwhile keeps them queued. Returns
        how many ended."""
        from distributor.models import Job

        queued = TaskSet.objects.filter(job=job, state=cls.State.QUEUED, job__state=Job.State.CANCELLED)
        if only is not None:
            queued = queued.filter(pk=only)
        return queued.update(state=cls.State.CANCELLED, ended_at=timezone.now())

    @classmethod
    def requeue_cancelled(cls, job) -> int:
        """A cancelled job continues (``Job.reopen_cancelled``): the sets its
        cancel ended unrun, or stopped (cancel now), are queued again as if
        they had never ended. Returns how many."""
        return TaskSet.objects.filter(job=job, state=cls.State.CANCELLED).update(
            state=cls.State.QUEUED, ended_at=None, last_error="")

    def _open_attempt(self) -> models.QuerySet:
        """The attempt in progress (a forgiven attempt's number is used again)."""
        return self.attempt_set.filter(ended_at__isnull=True)

    def _discard_attempt_events(self) -> None:
        self.events.filter(attempt=self.runs).delete()


# -- claims and blocks -------------------------------------------------------------
# Raw SQL because a claim is the hot path: on PostgreSQL one statement (a
# data-modifying CTE the ORM cannot write), on SQLite one transaction of plain
# prepared statements; rows come back by name (``STARTED``).

BLOCK = 16  # fresh variants queued at a time: one lock of the job's row per BLOCK task-sets
CURSOR = '"cursor"'  # a reserved word in SQL, quoted alike on both databases
STARTED = ("id", "variant", "attempts", "runs", "losses")  # what a claim returns of the task-set
QUEUED_COLUMNS = ("job_id", "variant", "state", "outcome", "attempts", "runs", "losses", "last_error",
                  "machine_id", "created_at", "started_at")


# A retry never goes straight back to the slot whose target failed it while
# another slot of the pool has a live machine to take it. The subquery does
# not depend on the row, so PostgreSQL runs it once per claim, and only
# queued task-sets that failed on this very slot reach it.
_NOT_STRAIGHT_BACK = (
    "(failed_slot IS NULL OR failed_slot <> {slot} OR NOT EXISTS (SELECT 1 FROM {machine} other"
    " WHERE other.target_id = {target} AND other.slot <> {slot} AND other.state {live}))"
)


def _task_columns() -> str:
    return ", ".join(f'task."{name}"' for name in Task.FIELDS)  # "offset" is a reserved word


def _claim_in_one_statement(job, machine, at):
    """PostgreSQL: one statement, so one round trip and one commit. The
    machine's row is locked first (a machine declared dead claims nothing),
    then the lowest queued task-set that no other claim holds (``SKIP
    LOCKED``: machines never wait for each other); the rows that come back
    are the task-set's tasks, none if the machine is not live with its lease."""
    from distributor.models import Fenced, Machine, Orders

    rows = fetch(_claim_statement(), {
        "machine": machine.pk, "lease": db_value(Machine, "lease", machine.lease), "live": list(Machine.LIVE_STATES),
        "slot": machine.slot, "target": machine.target_id, "job": job.pk, "queued": TaskSet.State.QUEUED, "running": TaskSet.State.RUNNING, "at": at,
        "busy": Machine.State.BUSY, "activity": f"running job {job.pk} variant ",
    })
    if not rows:
        raise Fenced(f"machine {machine.pk} lost its lease")
    width = len(STARTED)
    if rows[0][0] is None:
        return None  # nothing queued that another claim did not hold
    return (dict(zip(STARTED, rows[0][:width])), Orders(*rows[0][width:width + 2]),
            [row[width + 2:] for row in rows])


@lru_cache(maxsize=1)
def _claim_statement() -> str:
    from distributor.models import Machine

    return f"""
        WITH fence AS (
            SELECT id FROM {table(Machine)} WHERE id = %(machine)s AND lease = %(lease)s AND state = ANY(%(live)s)
            FOR UPDATE
        ), started AS (
            UPDATE {table(TaskSet)} SET state = %(running)s, machine_id = %(machine)s, attempts = attempts + 1,
                runs = runs + 1, started_at = %(at)s, ended_at = NULL
            WHERE id = (SELECT id FROM {table(TaskSet)} WHERE job_id = %(job)s AND state = %(queued)s
                        AND {_NOT_STRAIGHT_BACK.format(machine=table(Machine), live="= ANY(%(live)s)",
                                                       slot="%(slot)s", target="%(target)s")}
                        ORDER BY variant LIMIT 1 FOR UPDATE SKIP LOCKED)
              AND state = %(queued)s AND EXISTS (SELECT FROM fence)
            RETURNING {", ".join(STARTED)}
        ), attempt AS (
            INSERT INTO {table(Attempt)} (taskset_id, number, machine_id, started_at, result, error)
            SELECT id, runs, %(machine)s, %(at)s, '', '' FROM started
        ), busy AS (
            UPDATE {table(Machine)} m SET state = %(busy)s, current_id = started.id, current_since = %(at)s,
                heartbeat_at = STATEMENT_TIMESTAMP(), activity = %(activity)s || started.variant
            FROM started WHERE m.id = %(machine)s
            RETURNING m.stop_mode, m.reboot_requested
        )
        SELECT started.*, busy.*, task.id, task.task_id, {_task_columns()}
        FROM fence LEFT JOIN started ON TRUE LEFT JOIN busy ON TRUE
        LEFT JOIN {table(Task)} task ON task.taskset_id = started.id
        ORDER BY task.task_id"""


def _claim_in_one_transaction(job, machine, at):
    """SQLite (one writer): the same writes in one transaction."""
    from distributor.models import Fenced, Machine, Orders

    live = f"IN {placeholders(len(Machine.LIVE_STATES))}"
    with transaction.atomic():
        rows = fetch(
            f"UPDATE {table(TaskSet)} SET state = %s, machine_id = %s, attempts = attempts + 1, runs = runs + 1,"
            f" started_at = %s, ended_at = NULL WHERE id = (SELECT id FROM {table(TaskSet)} WHERE job_id = %s"
            f" AND state = %s AND {_NOT_STRAIGHT_BACK.format(machine=table(Machine), slot='%s', target='%s', live=live)}"
            f" ORDER BY variant LIMIT 1) AND state = %s RETURNING {', '.join(STARTED)}",
            [TaskSet.State.RUNNING, machine.pk, at, job.pk, TaskSet.State.QUEUED, machine.slot, machine.target_id,
             machine.slot, *Machine.LIVE_STATES, TaskSet.State.QUEUED])
        if not rows:
            return None
        started = dict(zip(STARTED, rows[0]))
        execute(f"INSERT INTO {table(Attempt)} (taskset_id, number, machine_id, started_at, result, error)"
                " VALUES (%s, %s, %s, %s, %s, %s)", [started["id"], started["runs"], machine.pk, at, "", ""])
        orders = fetch(
            f"UPDATE {table(Machine)} SET state = %s, current_id = %s, current_since = %s, heartbeat_at = {now_sql()},"
            f" activity = %s WHERE id = %s AND lease = %s AND state IN {placeholders(len(Machine.LIVE_STATES))}"
            " RETURNING stop_mode, reboot_requested",
            [Machine.State.BUSY, started["id"], at, f"running job {job.pk} variant {started['variant']}",
             machine.pk, db_value(Machine, "lease", machine.lease), *Machine.LIVE_STATES])
        if not orders:
            raise Fenced(f"machine {machine.pk} lost its lease")  # rolls the claim back
        tasks = fetch(f"SELECT task.id, task.task_id, {_task_columns()} FROM {table(Task)} task"
                      " WHERE task.taskset_id = %s ORDER BY task.task_id", [started["id"]])
        return started, Orders(*orders[0]), tasks


def _queue_block(job, tasks_of: Callable[[int], list[dict]]) -> bool:
    """Raw SQL: the cursor, a reserved word, moves in the statement that also
    starts the job, and the block's rows go in through the hot path's bulk
    insert (``rows.insert_rows``)."""
    from distributor.models import Job

    at = database_time(timezone.now())
    with transaction.atomic():
        row = (Job.objects.select_for_update().filter(pk=job.pk, state__in=Job.ACTIVE_STATES)
               .values_list("cursor", "variant_count").first())
        if row is None or row[0] >= row[1]:
            return False
        first, end = row[0], min(row[0] + BLOCK, row[1])
        execute(f"UPDATE {table(Job)} SET {CURSOR} = %s, state = %s, started_at = COALESCE(started_at, %s)"
                " WHERE id = %s", [end, Job.State.RUNNING, at, job.pk])
        insert_rows(TaskSet, QUEUED_COLUMNS, [
            (job.pk, variant, TaskSet.State.QUEUED, "", 0, 0, 0, "", None, at, None) for variant in range(first, end)
        ])
        created = fetch(f"SELECT id, variant FROM {table(TaskSet)} WHERE job_id = %s AND variant >= %s"
                        " AND variant < %s", [job.pk, first, end])  # new: the cursor moved under the lock
        insert_rows(Task, ("taskset_id", "task_id", *Task.FIELDS), [
            (taskset_id, task["id"], *(task[f] for f in Task.FIELDS))
            for taskset_id, variant in created for task in tasks_of(variant)
        ])
    return True


class _TakenAway(Exception):
    """Rolls a finish back: its machine or its task-set is no longer its own."""


def _labels_unless_present(analysis: dict | None) -> dict:
    """The ``analysis`` change of an update that fills the labels only where
    there are none (a set requeued after ending bad, or relabelled, keeps
    its own); no change without labels."""
    if analysis is None:
        return {}
    return {"analysis": Coalesce(F("analysis"), Value(analysis, output_field=models.JSONField()))}


def _miss_fields(miss: Miss | None) -> dict:
    """The TaskSet columns of a first miss, all empty when nothing missed
    (the kind "", which no miss has: it is DEADLINE or a kill's exit type)."""
    if miss is None:
        return dict(zip(TaskSet.MISS_COLUMNS, (None, None, "", None)))
    return dict(zip(TaskSet.MISS_COLUMNS, (miss.task, miss.job, miss.kind, miss.at_ms)))


def _stored_miss(columns: Mapping) -> Miss | None:
    """``_miss_fields`` read back: a miss only when all four columns hold
    one, as the writer leaves them; an empty kind is never read as some
    kind of miss."""
    task, job, kind, at_ms = (columns[name] for name in TaskSet.MISS_COLUMNS)
    if not kind or None in (task, job, at_ms):
        return None
    return Miss(task, job, kind, at_ms)


def _finish_in_one_statement(taskset: TaskSet, machine, outcome, miss, taskjobs, events, analysis, at):
    """PostgreSQL: the whole finish is one statement, so one round trip and one
    commit (a machine against a fast target finishes hundreds a second)."""
    from distributor.models import Event, Machine, Orders, TaskJob

    params = {
        "machine": machine.pk, "lease": db_value(Machine, "lease", machine.lease), "busy": Machine.State.BUSY,
        "taskset": taskset.pk, "running": TaskSet.State.RUNNING, "finished": TaskSet.State.FINISHED,
        "result": Attempt.Result.FINISHED,
        "outcome": outcome, **miss, "at": at, "analysis": db_value(TaskSet, "analysis", analysis),
        "job": taskset.job_id,
        "activity": f"finished job {taskset.job_id} variant {taskset.variant}",
        **column_arrays(Event, EVENT_COLUMNS, events), **column_arrays(TaskJob, TASKJOB_COLUMNS, taskjobs),
    }
    rows = fetch(_finish_statement(), params)
    return Orders(*rows[0]) if rows else None


@lru_cache(maxsize=1)
def _finish_statement() -> str:
    from distributor.models import Event, Machine, TaskJob
    from distributor.models.jobs import tally_upsert

    return f"""
        WITH fence AS (
            SELECT id FROM {table(Machine)} WHERE id = %(machine)s AND lease = %(lease)s AND state = %(busy)s
            FOR UPDATE
        ), ended AS (
            UPDATE {table(TaskSet)} SET state = %(finished)s, outcome = %(outcome)s, ended_at = %(at)s,
                analysis = %(analysis)s, first_miss_task = %(first_miss_task)s, first_miss_job = %(first_miss_job)s,
                first_miss_kind = %(first_miss_kind)s, first_miss_ms = %(first_miss_ms)s
            WHERE id = %(taskset)s AND state = %(running)s AND machine_id = %(machine)s AND EXISTS (SELECT FROM fence)
            RETURNING id
        ), attempt AS (
            UPDATE {table(Attempt)} SET ended_at = %(at)s, result = %(result)s
            WHERE taskset_id IN (SELECT id FROM ended) AND ended_at IS NULL
        ), tally AS (
            {tally_upsert("SELECT %(job)s, %(machine)s, 1, 0 FROM ended")}
        ), events AS (
            {insert_head(Event._meta.db_table, EVENT_COLUMNS)}
            {unnest_select(Event, EVENT_COLUMNS)} WHERE EXISTS (SELECT FROM ended)
        ), taskjobs AS (
            {insert_head(TaskJob._meta.db_table, TASKJOB_COLUMNS)}
            {unnest_select(TaskJob, TASKJOB_COLUMNS)} WHERE EXISTS (SELECT FROM ended)
        )
        UPDATE {table(Machine)} SET tasksets_done = tasksets_done + 1, activity = %(activity)s,
            heartbeat_at = STATEMENT_TIMESTAMP()
        WHERE id IN (SELECT id FROM fence) AND EXISTS (SELECT FROM ended)
        RETURNING stop_mode, reboot_requested"""


def _finish_in_one_transaction(taskset: TaskSet, machine, outcome, miss, taskjobs, events, analysis, at):
    """SQLite (one writer, in process): the same writes in one transaction."""
    from distributor.models import Event, Machine, Orders, TaskJob

    try:
        with transaction.atomic():
            orders = fetch(f"UPDATE {table(Machine)} SET tasksets_done = tasksets_done + 1, activity = %s,"
                           f" heartbeat_at = {now_sql()} WHERE id = %s AND lease = %s AND state = %s"
                           " RETURNING stop_mode, reboot_requested",
                           [f"finished job {taskset.job_id} variant {taskset.variant}", machine.pk,
                            db_value(Machine, "lease", machine.lease), Machine.State.BUSY])
            if not orders or not execute(
                f"UPDATE {table(TaskSet)} SET state = %s, outcome = %s, ended_at = %s, analysis = %s,"
                f" {', '.join(f'{name} = %s' for name in miss)} WHERE id = %s AND state = %s AND machine_id = %s",
                [TaskSet.State.FINISHED, outcome, at, db_value(TaskSet, "analysis", analysis), *miss.values(),
                 taskset.pk, TaskSet.State.RUNNING, machine.pk],
            ):
                raise _TakenAway  # rolls all of it back
            execute(f"UPDATE {table(Attempt)} SET ended_at = %s, result = %s WHERE taskset_id = %s AND ended_at IS NULL",
                    [at, Attempt.Result.FINISHED, taskset.pk])
            taskset.job.add_counts(finished=1, machine_id=machine.pk)
            insert_rows(Event, EVENT_COLUMNS, events)
            insert_rows(TaskJob, TASKJOB_COLUMNS, taskjobs)
    except _TakenAway:
        return None
    return Orders(*orders[0])


class Task(models.Model):
    """One task of a task-set with every attribute of the task-set file."""

    taskset = models.ForeignKey(TaskSet, on_delete=models.CASCADE, related_name="tasks", db_index=False)  # see Meta
    task_id = models.PositiveSmallIntegerField()
    pkg = models.CharField(max_length=15)
    arg1 = models.BigIntegerField(default=0)
    priority = models.PositiveSmallIntegerField()
    deadline = models.PositiveBigIntegerField()
    period = models.PositiveBigIntegerField()
    offset = models.PositiveBigIntegerField()
    numberofjobs = models.PositiveIntegerField()
    criticaltime = models.PositiveBigIntegerField()
    quota = models.CharField(max_length=16)
    caps = models.PositiveIntegerField()
    cores = models.PositiveSmallIntegerField()
    coreoffset = models.PositiveSmallIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["taskset", "task_id"], name="one_task_per_id")]
        ordering = ["taskset", "task_id"]

    def __str__(self) -> str:
        return f"{self.task_id}:{self.pkg}({self.arg1})"

    FIELDS = TASK_FIELDS  # the task model's fields, said once (sessions.base)

    def as_dict(self) -> dict:
        return {"id": self.task_id, **{name: getattr(self, name) for name in self.FIELDS}}


class Attempt(models.Model):
    """One try of a task-set on a machine, kept with its error."""

    class Result(models.TextChoices):
        FINISHED = "finished"
        FAILED = "failed"  # target failure: counted against tries
        FORGIVEN = "forgiven"  # target failure that its slot's quarantine confirmed: not counted
        LOST = "lost"  # its machine died
        CANCELLED = "cancelled"  # its job was cancelled now: stopped unfinished

    taskset = models.ForeignKey(TaskSet, on_delete=models.CASCADE, db_index=False)  # see Meta
    number = models.PositiveSmallIntegerField()
    machine = models.ForeignKey("distributor.Machine", null=True, blank=True, on_delete=models.SET_NULL)
    started_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)
    result = models.CharField(max_length=16, choices=Result.choices, blank=True, default="")
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["taskset", "number", "started_at"]
        constraints = [models.UniqueConstraint(fields=["taskset", "number"], name="one_attempt_per_run")]

    def __str__(self) -> str:
        return f"{self.taskset} attempt {self.number}"


def store_analyses(labels: Sequence[tuple[int, str]], job_ids: Iterable[int]) -> None:
    """Write many task-sets' labels, given as (id, JSON text), of the jobs
    ``job_ids`` (``distributor.labels.relabel``), and mark those jobs'
    stored results stale (``Job.labels_changed``) in the same transaction:
    labels stored never leave a summary of the old ones taken as current.

    Plain SQL, not ``bulk_update``: the ORM writes a CASE of one WHEN per
    row and compiles it object by object, five times the cost on SQLite and
    three times on PostgreSQL, JSON encoding included (bench/README.md). PostgreSQL
    takes the chunk as one statement, the labels as one JSON array (parsed
    once by the server, no value adapted in Python); SQLite, in process,
    runs one prepared UPDATE per row."""
    from distributor.models import Job

    with transaction.atomic():
        _write_analyses(labels)
        Job.labels_changed(job_ids)


def _write_analyses(labels: Sequence[tuple[int, str]]) -> None:
    if on_postgresql():
        execute(_store_analyses_statement(), ["{" + ",".join(str(pk) for pk, _ in labels) + "}",
                                              "[" + ",".join(text for _, text in labels) + "]"])
        return
    with prepared_cursor() as cursor:
        cursor.executemany(f"UPDATE {table(TaskSet)} SET analysis = %s WHERE id = %s",
                           [(text, pk) for pk, text in labels])


@lru_cache(maxsize=1)
def _store_analyses_statement() -> str:
    return (f"UPDATE {table(TaskSet)} AS taskset SET analysis = labels.analysis"
            " FROM ROWS FROM (unnest(%s::bigint[]), jsonb_array_elements(%s::jsonb)) AS labels (id, analysis)"
            " WHERE taskset.id = labels.id")
