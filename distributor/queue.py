"""The queue: jobs go in, machines take task-sets out.

Submitting stores one Job row whatever the number of variants. Claiming is a
compare-and-set in the database, so any number of machines on any number of
hosts can claim at once and each task-set goes to exactly one of them: first
the task-sets put back in the queue, then the next fresh variant (the job's
``cursor`` moves by one under a conditional UPDATE and the variant's rows are
created in the same transaction).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from distributor import taskfile
from distributor.models import Attempt, DistributorConfig, Job, Machine, Target, Task, TaskSet
from distributor.models.rows import database_time, db_value, execute, insert_returning_ids, insert_rows, table

MAX_TRIES = 100


def submit_job(
    data: bytes | str,
    *,
    filename: str = "",
    target: Target | str | None = None,
    name: str = "",
    offset: int = 0,
    tries: int | None = None,
    priority: int = 0,
    admission: dict | None = None,
    monitors: list[str] | tuple = (),
    owner=None,
) -> Job:
    """Validate a task-set file and its options and queue it as one job.

    Raises ``taskfile.TaskFileError`` for the file and ``ValidationError``
    (keyed by option) for the rest; nothing is stored unless all is valid.
    """
    parsed = taskfile.parse(data, filename)
    options = check_options(parsed, target=target, offset=offset, tries=tries, priority=priority,
                            admission=admission, monitors=monitors)
    unstorable = {key: "must be text without control characters or unpaired surrogates"
                  for key, value in (("name", name), ("filename", filename)) if not _storable(value)}
    if unstorable:
        raise ValidationError(unstorable)
    job = Job.objects.create(
        name=(name or parsed.spec.get("name") or filename or "job")[:200],
        owner=owner,
        spec=parsed.spec,
        source_name=filename[:255],
        variant_count=parsed.variant_count,
        cursor=options["offset"],
        **options,
    )
    transaction.on_commit(_wake_reconciler)
    return job


def check_options(parsed: taskfile.ParsedFile, *, target, offset, tries, priority, admission, monitors) -> dict:
    """The job options of a submission, validated; errors keyed by option."""
    from distributor.monitors import MONITORS

    errors: dict[str, str] = {}
    resolved = _resolve_target(target, errors)
    if not _is_int(offset) or not 0 <= offset < parsed.variant_count:
        errors["offset"] = f"must be an integer from 0 to {parsed.variant_count - 1} (the file has {parsed.variant_count} variants)"
    if tries is None:
        tries = DistributorConfig.get().default_tries
    if not _is_int(tries) or not 1 <= tries <= MAX_TRIES:
        errors["tries"] = f"must be an integer from 1 to {MAX_TRIES}"
    if not _is_int(priority) or not -1000 <= priority <= 1000:
        errors["priority"] = "must be an integer from -1000 to 1000"
    if admission is not None and not _valid_admission(admission):
        errors["admission"] = "must be an object of names to finite numbers or short strings without control characters"
    unknown = [m for m in monitors if m not in MONITORS]
    if unknown:
        errors["monitors"] = f"unknown monitor(s) {', '.join(map(str, unknown))}; known: {', '.join(sorted(MONITORS))}"
    if errors:
        raise ValidationError(errors)
    return {"target": resolved, "offset": offset, "tries": tries, "priority": priority,
            "admission": admission or None, "monitors": list(monitors)}


def _resolve_target(target, errors: dict) -> Target | None:
    if target is None or target == "":
        return Target.default()
    if isinstance(target, Target):
        return target
    if not _storable(target):  # PostgreSQL refuses a NUL even in a query
        errors["target"] = "must be a target's name, without control characters or unpaired surrogates"
        return None
    found = Target.objects.filter(name=target).first()
    if found is None:
        known = ", ".join(Target.objects.values_list("name", flat=True)) or "none"
        errors["target"] = f"no target named {target!r} (known: {known})"
    return found


def _valid_admission(admission) -> bool:
    """Numbers must be finite and strings storable: jsonb has no NaN, no NUL."""
    return isinstance(admission, dict) and len(admission) <= 64 and all(
        isinstance(key, str) and 0 < len(key) <= 64 and key.isidentifier()
        and (isinstance(value, int) and not isinstance(value, bool)
             or isinstance(value, float) and math.isfinite(value)
             or isinstance(value, str) and len(value) <= 256 and _storable(value))
        for key, value in admission.items()
    )


def _storable(text) -> bool:
    """Text PostgreSQL can hold (no NUL, no lone surrogate) and a name needs (no control characters)."""
    return isinstance(text, str) and not taskfile.UNSTORABLE.search(text)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _wake_reconciler() -> None:
    from distributor.engine import tick

    tick()


# -- claims -------------------------------------------------------------------


class Fenced(Exception):
    """This machine's lease is gone (declared dead); it must stop writing."""


@dataclass
class Claim:
    taskset: TaskSet
    tasks: list[dict]
    task_pks: dict[int, int]  # task id -> Task row, for the task-jobs of the result


def claim_next(machine: Machine) -> Claim | None:
    """The next task-set for this machine's target, or None when there is none.

    One read finds the active jobs in queue order and whether each has
    task-sets put back or variants left, so an idle machine polls without
    taking any lock. The claimed task-set carries its job (options, monitors,
    admission goal), so running it costs no further reads of the job."""
    for job_id, created_at, state, fresh_left, requeued in _queue_of(machine.target_id):
        job = _job_of(job_id, created_at)
        job.state = state
        claim = (requeued and _claim_requeued(job, machine)) or (fresh_left and _claim_fresh(job, machine))
        if claim:
            return claim
    return None


def _queue_of(target_id: int) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT j.id, j.created_at, j.state, j.{CURSOR} < j.variant_count,"
            f" EXISTS (SELECT 1 FROM {table(TaskSet)} t WHERE t.job_id = j.id AND t.state = %s)"
            f" FROM {table(Job)} j WHERE j.target_id = %s AND j.state IN (%s, %s) ORDER BY j.priority DESC, j.id",
            [TaskSet.State.QUEUED, target_id, *Job.ACTIVE_STATES],
        )
        return cursor.fetchall()


def _claim_requeued(job: Job, machine: Machine) -> Claim | None:
    candidates = TaskSet.objects.filter(job=job, state=TaskSet.State.QUEUED).order_by("variant")
    for pk in candidates.values_list("pk", flat=True)[:8]:
        with transaction.atomic():
            taken = TaskSet.objects.filter(pk=pk, state=TaskSet.State.QUEUED).update(
                state=TaskSet.State.RUNNING, machine=machine, attempts=F("attempts") + 1, runs=F("runs") + 1,
                started_at=timezone.now(), ended_at=None,
            )
            if not taken:
                continue  # another machine was quicker
            taskset = TaskSet.objects.get(pk=pk)
            taskset.job = job
            Attempt.objects.create(taskset=taskset, number=taskset.runs, machine=machine)
            _mark_busy(machine, taskset)
            rows = list(taskset.tasks.all())
        return Claim(taskset, [task.as_dict() for task in rows], {task.task_id: task.pk for task in rows})
    return None


def _claim_fresh(job: Job, machine: Machine) -> Claim | None:
    """The job's next variant. Moving the cursor is the claim: one UPDATE that
    locks the job's row (SQLite's IMMEDIATE transaction does the same) until
    the variant's rows exist, so concurrent machines queue for it instead of
    losing a compare-and-set and retrying."""
    now = timezone.now()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table(Job)} SET {CURSOR} = {CURSOR} + 1, state = %s, started_at = COALESCE(started_at, %s)"
                f" WHERE id = %s AND state IN (%s, %s) AND {CURSOR} < variant_count RETURNING {CURSOR}",
                [Job.State.RUNNING, database_time(now), job.pk, *Job.ACTIVE_STATES],
            )
            moved = cursor.fetchone()
        if moved is None:
            return None
        variant = moved[0] - 1
        tasks = _expander_of(job.pk, job.created_at).variant(variant)
        taskset, task_pks = _create_running_taskset(job, variant, machine, now, tasks)
        _mark_busy(machine, taskset)
    return Claim(taskset, tasks, task_pks)


def _create_running_taskset(job: Job, variant: int, machine: Machine, now, tasks: list[dict]) -> tuple[TaskSet, dict]:
    """The variant's task-set, tasks and first attempt: three plain INSERTs
    (the claim runs thousands of times a minute, under the job's lock)."""
    at = database_time(now)
    running = TaskSet.State.RUNNING
    [taskset_pk] = insert_returning_ids(TaskSet._meta.db_table, TASKSET_COLUMNS, [
        (job.pk, variant, running, "", 1, 1, 0, "", machine.pk, at, at),
    ])
    task_pks = insert_returning_ids(Task._meta.db_table, TASK_COLUMNS, [
        (taskset_pk, t["id"], *(t[f] for f in Task.FIELDS)) for t in tasks
    ])
    insert_rows(Attempt._meta.db_table, ATTEMPT_COLUMNS, [(taskset_pk, 1, machine.pk, at, "", "")])
    taskset = TaskSet(pk=taskset_pk, job=job, variant=variant, state=running, attempts=1, runs=1, losses=0,
                      machine=machine, created_at=now, started_at=now)
    return taskset, {t["id"]: pk for t, pk in zip(tasks, task_pks)}


CURSOR = '"cursor"'  # a reserved word in SQL, quoted alike on both databases
TASKSET_COLUMNS = ("job_id", "variant", "state", "outcome", "attempts", "runs", "losses", "last_error",
                   "machine_id", "created_at", "started_at")
TASK_COLUMNS = ("taskset_id", "task_id", *Task.FIELDS)
ATTEMPT_COLUMNS = ("taskset_id", "number", "machine_id", "started_at", "result", "error")


@lru_cache(maxsize=64)
def _job_of(job_id: int, created_at) -> Job:
    """A job's options never change once submitted, so each machine reads them
    once; its state comes with every look at the queue."""
    return Job.objects.defer("spec").get(pk=job_id)


@lru_cache(maxsize=64)
def _expander_of(job_id: int, created_at) -> taskfile.Expander:
    """A job's spec never changes, so its expander is kept per process; the
    creation time is in the key because an id can come back after a rollback."""
    return taskfile.Expander(Job.objects.values_list("spec", flat=True).get(pk=job_id))


def _mark_busy(machine: Machine, taskset: TaskSet) -> None:
    """Part of the claim's transaction: a fenced machine claims nothing."""
    if not execute(
        f"UPDATE {table(Machine)} SET state = %s, current_id = %s, current_since = %s, activity = %s"
        " WHERE id = %s AND lease = %s AND state IN (%s, %s, %s, %s)",
        [Machine.State.BUSY, taskset.pk, database_time(timezone.now()),
         f"running job {taskset.job_id} variant {taskset.variant}",
         machine.pk, db_value(Machine, "lease", machine.lease), *Machine.LIVE_STATES],
    ):
        raise Fenced(f"machine {machine.pk} lost its lease")
