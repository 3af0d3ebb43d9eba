"""Task-job rows stored per second on PostgreSQL: the engine's path against COPY.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/dist_bench \\
        python bench/store_rate.py [--tasksets 1000] [--tasks 4] [--jobs 50] [--rounds 2]

The engine stores a finished task-set's task-jobs in the statement that ends
the task-set: ``TaskSet.finish`` ends the task-set, its attempt and the
machine's turn, adds it to the machine's tally of the job and inserts the rows
from one array per column (``unnest``; distributor/models/rows.py), all in
one statement. This script runs exactly that, one call per
task-set, then stores the very same rows with a bare COPY: once per task-set
(the same transaction granularity, nothing else) and once as a single COPY of
everything (the ceiling). The table is emptied before each method; the
fastest of ``--rounds`` rounds counts. Target: the engine's rate ≥ 1/3 of
COPY's.
"""
from __future__ import annotations

import argparse
import time

from pg_common import bench_job, rate, setup_django

COLUMNS = ("taskset_id", "task_id", "job_number", "release_ms", "start_ms", "end_ms", "exit_type")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasksets", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=50, help="task-jobs per task")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    setup_django()
    job, sets = make_tasksets(args.tasksets, args.tasks)
    rows = {ts: [row for task in tasks for row in task_rows(ts, task, args.jobs)] for ts, tasks in sets.items()}
    total = sum(map(len, rows.values()))
    best = {"engine": float("inf"), "copy_per_set": float("inf"), "copy_once": float("inf")}
    for _ in range(args.rounds):
        for method in best:
            empty_table(job)
            started = time.perf_counter()
            globals()[f"store_{method}"](rows)
            best[method] = min(best[method], time.perf_counter() - started)
    empty_table(job)
    print(f"task-jobs: {args.tasksets} task-sets × {args.tasks} tasks × {args.jobs} jobs = {total:,} rows")
    print(f"engine path (TaskSet.finish per task-set): {rate(total, best['engine'])}")
    print(f"COPY per task-set:                         {rate(total, best['copy_per_set'])}")
    print(f"COPY of all rows at once:                  {rate(total, best['copy_once'])}")
    print(f"ratio engine / COPY per task-set: {best['copy_per_set'] / best['engine']:.2f}")
    print(f"ratio engine / COPY at once:      {best['copy_once'] / best['engine']:.2f} (target ≥ 0.33)")


def make_tasksets(count: int, tasks: int):
    """Task-set and task rows (once), running on one machine; returns the job
    and task-set id → its task ids."""
    import os

    from distributor.models import Attempt, Machine, Task, TaskSet

    job = bench_job("store-rate")
    TaskSet.objects.filter(job=job).delete()
    Machine.objects.filter(host="bench-store").delete()
    for slot in range(count):  # one running task-set per machine: a machine each
        Machine.objects.create(target=job.target, slot=slot, host="bench-store").take(os.getpid())
    sets = TaskSet.objects.bulk_create([TaskSet(job=job, variant=v, state=TaskSet.State.FINISHED) for v in range(count)])
    Attempt.objects.bulk_create([Attempt(taskset=ts, number=1) for ts in sets])
    made = Task.objects.bulk_create([
        Task(taskset=ts, task_id=k, pkg="pi", arg1=k, priority=k, deadline=0, period=100, offset=0, numberofjobs=1,
             criticaltime=0, quota="5M", caps=50, cores=1, coreoffset=0)
        for ts in sets for k in range(tasks)
    ], batch_size=5000)
    result: dict[int, list[int]] = {}
    for task in made:
        result.setdefault(task.taskset_id, []).append(task.pk)
    return job, result


def task_rows(taskset: int, task: int, jobs: int) -> list[tuple]:
    return [(taskset, task, n, n * 100, n * 100 + 3, n * 100 + 40, "EXIT", n * 100 + 100, True) for n in range(jobs)]


def empty_table(job) -> None:
    """Only this benchmark's rows (the database may hold other data); its
    task-sets run again on the benchmark's machine."""
    from django.db import connection

    from distributor.models import Attempt, Machine, TaskSet

    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM distributor_taskjob WHERE taskset_id IN "
                       "(SELECT id FROM distributor_taskset WHERE job_id = %s)", [job.pk])
    Machine.objects.filter(host="bench-store").update(state=Machine.State.BUSY)
    machines = Machine.objects.filter(host="bench-store").order_by("slot").values_list("pk", flat=True)
    for taskset, machine in zip(TaskSet.objects.filter(job=job).order_by("variant").values_list("pk", flat=True), machines):
        TaskSet.objects.filter(pk=taskset).update(state=TaskSet.State.RUNNING, machine=machine, outcome="")
    Attempt.objects.filter(taskset__job=job).update(ended_at=None, result="")
    job.__class__.objects.filter(pk=job.pk).update(state="running", variant_count=10**9, cursor=10**9)
    job.tallies.all().delete()


def store_engine(rows: dict[int, list[tuple]]) -> None:
    """What a machine does when a task-set finishes: TaskSet.finish with its rows."""
    from distributor.models import TaskSet

    tasksets = TaskSet.objects.filter(pk__in=list(rows)).select_related("job", "machine")
    for taskset in tasksets:
        assert taskset.finish(taskset.machine, TaskSet.Outcome.SCHEDULABLE, rows[taskset.pk])


def _copy(cursor, values) -> None:
    with cursor.copy(f"COPY distributor_taskjob ({', '.join(COLUMNS)}) FROM STDIN") as copy:
        for row in values:
            copy.write_row(row)


def store_copy_per_set(rows: dict[int, list[tuple]]) -> None:
    from django.db import connection, transaction

    for values in rows.values():
        with transaction.atomic():
            with connection.cursor() as cursor:
                _copy(cursor.cursor, values)


def store_copy_once(rows: dict[int, list[tuple]]) -> None:
    from django.db import connection, transaction

    with transaction.atomic():
        with connection.cursor() as cursor:
            _copy(cursor.cursor, (row for values in rows.values() for row in values))


if __name__ == "__main__":
    main()
