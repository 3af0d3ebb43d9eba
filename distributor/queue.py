"""The queue: jobs go in, machines take task-sets out.

Submitting stores one Job row whatever the number of variants. Machines take
the job's queued task-sets, lowest variant first (so task-sets put back in the
queue run before fresh ones): each claim locks one task-set row and skips
those other machines hold (``FOR UPDATE SKIP LOCKED``; SQLite has one writer
anyway), so any number of machines on any number of hosts claim at once
without waiting for each other. When a job has no queued task-set left, a
machine turns its next BLOCK fresh variants into queued task-sets: the job's
``cursor`` moves under the job's row lock, once per block rather than once per
task-set, and the rows appear in the same transaction. A machine that finds
nothing left in a job ends it if none of its task-sets still runs: the job's
end follows the commit of its last result, whichever machine stored it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from distributor import taskfile
from distributor.models import Attempt, DistributorConfig, Job, Machine, Orders, Target, Task, TaskSet
from distributor.models.rows import (database_time, db_value, execute, fetch, insert_rows, now_sql, on_postgresql,
                                     placeholders, table)

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
    orders: Orders  # the operator's, read with the claim


def claim_next(machine: Machine) -> Claim | None:
    """The next task-set for this machine's target, or None when there is none.

    One read finds the active jobs in queue order and whether each has
    queued task-sets or variants left, so an idle machine polls without
    taking any lock. The claimed task-set carries its job (options, monitors,
    admission goal), so running it costs no further reads of the job."""
    for job_id, created_at, state, fresh_left, queued in _queue_of(machine.target_id):
        job = _job_of(job_id, created_at)
        job.state = state
        for _ in range(3):  # others may empty a new block before this machine gets to it
            claim = _claim_queued(job, machine) if queued else None
            if claim:
                return claim
            queued = fresh_left and _open_block(job)
            if not queued:
                break
        job.end_if_done()  # it gave this machine nothing: it may have just had its last result
    return None


def _queue_of(target_id: int) -> list[tuple]:
    return fetch(
        f"SELECT j.id, j.created_at, j.state, j.{CURSOR} < j.variant_count,"
        f" EXISTS (SELECT 1 FROM {table(TaskSet)} t WHERE t.job_id = j.id AND t.state = %s)"
        f" FROM {table(Job)} j WHERE j.target_id = %s AND j.state IN (%s, %s) ORDER BY j.priority DESC, j.id",
        [TaskSet.State.QUEUED, target_id, *Job.ACTIVE_STATES],
    )


def _claim_queued(job: Job, machine: Machine) -> Claim | None:
    """The job's lowest queued task-set, started with its attempt and the
    machine marked busy, all or nothing; None when another machine was
    quicker. Raises Fenced if this machine lost its lease."""
    now = timezone.now()
    claim = _claim_in_one_statement if on_postgresql() else _claim_in_one_transaction
    found = claim(job, machine, database_time(now))
    if found is None:
        return None
    (taskset_id, variant, attempts, runs, losses), orders, task_rows = found
    taskset = TaskSet(pk=taskset_id, job=job, variant=variant, state=TaskSet.State.RUNNING, attempts=attempts,
                      runs=runs, losses=losses, machine=machine, started_at=now)
    tasks = [{"id": row[1], **dict(zip(Task.FIELDS, row[2:]))} for row in task_rows]
    return Claim(taskset, tasks, {row[1]: row[0] for row in task_rows}, Orders(*orders))


def _claim_in_one_statement(job: Job, machine: Machine, at):
    """PostgreSQL: one statement, so one round trip and one commit. The
    machine's row is locked first (a machine declared dead claims nothing),
    then the lowest queued task-set that no other claim holds (``SKIP
    LOCKED``: machines never wait for each other); the rows that come back
    are the task-set's tasks, none if the machine is not live with its lease."""
    rows = fetch(_claim_statement(), {
        "machine": machine.pk, "lease": db_value(Machine, "lease", machine.lease), "live": list(Machine.LIVE_STATES),
        "job": job.pk, "queued": TaskSet.State.QUEUED, "running": TaskSet.State.RUNNING, "at": at,
        "busy": Machine.State.BUSY, "activity": f"running job {job.pk} variant ",
    })
    if not rows:
        raise Fenced(f"machine {machine.pk} lost its lease")
    if rows[0][0] is None:
        return None  # nothing queued that another claim did not hold
    return rows[0][:5], rows[0][5:7], [row[7:] for row in rows]


@lru_cache(maxsize=1)
def _claim_statement() -> str:
    return f"""
        WITH fence AS (
            SELECT id FROM {table(Machine)} WHERE id = %(machine)s AND lease = %(lease)s AND state = ANY(%(live)s)
            FOR UPDATE
        ), started AS (
            UPDATE {table(TaskSet)} SET state = %(running)s, machine_id = %(machine)s, attempts = attempts + 1,
                runs = runs + 1, started_at = %(at)s, ended_at = NULL
            WHERE id = (SELECT id FROM {table(TaskSet)} WHERE job_id = %(job)s AND state = %(queued)s
                        ORDER BY variant LIMIT 1 FOR UPDATE SKIP LOCKED)
              AND state = %(queued)s AND EXISTS (SELECT FROM fence)
            RETURNING id, variant, attempts, runs, losses
        ), attempt AS (
            INSERT INTO {table(Attempt)} (taskset_id, number, machine_id, started_at, result, error)
            SELECT id, runs, %(machine)s, %(at)s, '', '' FROM started
        ), busy AS (
            UPDATE {table(Machine)} m SET state = %(busy)s, current_id = started.id, current_since = %(at)s,
                heartbeat_at = STATEMENT_TIMESTAMP(), activity = %(activity)s || started.variant
            FROM started WHERE m.id = %(machine)s
            RETURNING m.stop_mode, m.reboot_requested
        )
        SELECT started.*, busy.*, task.id, task.task_id, {', '.join(f'task.{f}' for f in TASK_FIELD_NAMES)}
        FROM fence LEFT JOIN started ON TRUE LEFT JOIN busy ON TRUE
        LEFT JOIN {table(Task)} task ON task.taskset_id = started.id
        ORDER BY task.task_id"""


def _claim_in_one_transaction(job: Job, machine: Machine, at):
    """SQLite (one writer): the same writes in one transaction."""
    with transaction.atomic():
        started = fetch(
            f"UPDATE {table(TaskSet)} SET state = %s, machine_id = %s, attempts = attempts + 1, runs = runs + 1,"
            f" started_at = %s, ended_at = NULL WHERE id = (SELECT id FROM {table(TaskSet)} WHERE job_id = %s"
            " AND state = %s ORDER BY variant LIMIT 1) AND state = %s RETURNING id, variant, attempts, runs, losses",
            [TaskSet.State.RUNNING, machine.pk, at, job.pk, TaskSet.State.QUEUED, TaskSet.State.QUEUED])
        if not started:
            return None
        taskset_id, variant, _, runs, _ = started[0]
        execute(f"INSERT INTO {table(Attempt)} (taskset_id, number, machine_id, started_at, result, error)"
                " VALUES (%s, %s, %s, %s, %s, %s)", [taskset_id, runs, machine.pk, at, "", ""])
        orders = fetch(
            f"UPDATE {table(Machine)} SET state = %s, current_id = %s, current_since = %s, heartbeat_at = {now_sql()},"
            f" activity = %s WHERE id = %s AND lease = %s AND state IN {placeholders(len(Machine.LIVE_STATES))}"
            " RETURNING stop_mode, reboot_requested",
            [Machine.State.BUSY, taskset_id, at, f"running job {job.pk} variant {variant}",
             machine.pk, db_value(Machine, "lease", machine.lease), *Machine.LIVE_STATES])
        if not orders:
            raise Fenced(f"machine {machine.pk} lost its lease")  # rolls the claim back
        tasks = fetch(f"SELECT id, task_id, {TASK_FIELDS} FROM {table(Task)} WHERE taskset_id = %s ORDER BY task_id",
                      [taskset_id])
        return started[0], orders[0], tasks


def _open_block(job: Job) -> bool:
    """Turn the job's next BLOCK fresh variants into queued task-sets with their
    tasks; False when none are left. The job's row is locked for this alone."""
    now = timezone.now()
    at = database_time(now)
    with transaction.atomic():
        row = (Job.objects.select_for_update().filter(pk=job.pk, state__in=Job.ACTIVE_STATES)
               .values_list("cursor", "variant_count").first())
        if row is None or row[0] >= row[1]:
            return False
        first, end = row[0], min(row[0] + BLOCK, row[1])
        execute(f"UPDATE {table(Job)} SET {CURSOR} = %s, state = %s, started_at = COALESCE(started_at, %s)"
                " WHERE id = %s", [end, Job.State.RUNNING, at, job.pk])
        insert_rows(TaskSet, TASKSET_COLUMNS, [
            (job.pk, variant, TaskSet.State.QUEUED, "", 0, 0, 0, "", None, at, None) for variant in range(first, end)
        ])
        created = fetch(f"SELECT id, variant FROM {table(TaskSet)} WHERE job_id = %s AND variant >= %s"
                        " AND variant < %s", [job.pk, first, end])  # new: the cursor moved under the lock
        expander = _expander_of(job.pk, job.created_at)
        insert_rows(Task, TASK_COLUMNS, [
            (taskset_id, task["id"], *(task[f] for f in Task.FIELDS))
            for taskset_id, variant in created for task in expander.variant(variant)
        ])
    return True


BLOCK = 16  # fresh variants queued at a time: one lock of the job's row per BLOCK task-sets
CURSOR = '"cursor"'  # a reserved word in SQL, quoted alike on both databases
TASKSET_COLUMNS = ("job_id", "variant", "state", "outcome", "attempts", "runs", "losses", "last_error",
                   "machine_id", "created_at", "started_at")
TASK_COLUMNS = ("taskset_id", "task_id", *Task.FIELDS)
TASK_FIELD_NAMES = tuple(f'"{name}"' for name in Task.FIELDS)  # "offset" is a reserved word
TASK_FIELDS = ", ".join(TASK_FIELD_NAMES)


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
