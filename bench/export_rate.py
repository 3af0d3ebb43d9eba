"""taskjobs-csv export rate and memory on PostgreSQL, against COPY … TO STDOUT.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/dist_bench \\
        python bench/export_rate.py [--tasksets 20000] [--tasks 5] [--jobs 100] [--python-path]

Fills a benchmark job with tasksets × tasks × jobs task-job rows (10 million
by default; generated inside PostgreSQL and kept for the next run), then
streams them to /dev/null three ways:

* the export: ``distributor.exports.csv_chunks("taskjobs-csv", …)``, the
  generator the web view and the command use;
* ``COPY (the export's SELECT) TO STDOUT WITH (FORMAT csv)`` read with
  psycopg: the same rows and columns, formatted by the server alone;
* ``COPY distributor_taskjob TO STDOUT``: the bare table, for scale.

Memory: the process's peak RSS (``resource.getrusage``) before and after the
export, and the peak of Python allocations during it (``tracemalloc``, in a
separate pass because tracing slows allocation). Targets: the export's rate
≥ 1/2 of COPY's, peak memory < 200 MB. ``--python-path`` also times the
portable path (server-side cursor + csv module) that SQLite uses.
"""
from __future__ import annotations

import resource
import time
import tracemalloc

from pg_common import bench_job, rate, rows_arguments, setup_django


def main() -> None:
    parser = rows_arguments(__doc__.splitlines()[0])
    args = parser.parse_args()
    setup_django()
    from distributor.exports import Selection

    job = bench_job("export-rate")
    total = fill(job, args.tasksets, args.tasks, args.jobs)
    selection = Selection(jobs=(job.pk,))
    rss_before = peak_rss_mb()
    export_seconds, size = timed(lambda: export(selection, "auto"))
    rss_after = peak_rss_mb()
    copy_seconds, copy_size = timed(lambda: copy_same_select(selection))
    table_seconds, _ = timed(copy_table)
    traced_peak = traced(lambda: export(selection, "auto"))
    print(f"task-jobs: {total:,} rows; export {size / 2**20:,.0f} MiB, COPY of the same SELECT {copy_size / 2**20:,.0f} MiB")
    print(f"export (taskjobs-csv):            {rate(total, export_seconds)}")
    print(f"COPY (same SELECT) TO STDOUT:     {rate(total, copy_seconds)}")
    print(f"COPY distributor_taskjob TO STDOUT: {rate(total, table_seconds)}")
    print(f"ratio export / COPY same SELECT:  {copy_seconds / export_seconds:.2f} (target ≥ 0.5)")
    print(f"ratio export / COPY bare table:   {table_seconds / export_seconds:.2f}")
    print(f"peak RSS of the process: {rss_before:.0f} MB before the export, {rss_after:.0f} MB after (target < 200 MB)")
    print(f"peak of Python allocations during the export (tracemalloc): {traced_peak / 2**20:.1f} MiB")
    if args.python_path:
        python_seconds, _ = timed(lambda: export(selection, "python"))
        print(f"portable path (cursor + csv):     {rate(total, python_seconds)}; "
              f"ratio to COPY {copy_seconds / python_seconds:.2f}")


def fill(job, tasksets: int, tasks: int, jobs: int) -> int:
    """The benchmark rows; kept between runs when the shape is unchanged."""
    from django.db import connection

    from distributor.models import Task, TaskJob, TaskSet

    wanted = tasksets * tasks * jobs
    existing = TaskJob.objects.filter(taskset__job=job).count()
    if existing == wanted:
        return wanted
    print(f"filling {wanted:,} task-job rows (kept for the next run) …", flush=True)
    with connection.cursor() as cursor:
        for table in ("distributor_taskjob", "distributor_task"):
            cursor.execute(f"DELETE FROM {table} WHERE taskset_id IN "
                           "(SELECT id FROM distributor_taskset WHERE job_id = %s)", [job.pk])
    TaskSet.objects.filter(job=job).delete()
    sets = TaskSet.objects.bulk_create([TaskSet(job=job, variant=v, state=TaskSet.State.FINISHED, outcome="schedulable")
                                       for v in range(tasksets)], batch_size=5000)
    Task.objects.bulk_create([
        Task(taskset=ts, task_id=k, pkg=("pi", "hey", "tumatmul")[k % 3], arg1=7 * k, priority=k, deadline=0,
             period=100 * (k + 1), offset=0, numberofjobs=jobs, criticaltime=0, quota="5M", caps=50, cores=1,
             coreoffset=0)
        for ts in sets for k in range(tasks)
    ], batch_size=5000)
    with connection.cursor() as cursor:
        cursor.execute("""
            INSERT INTO distributor_taskjob (taskset_id, task_id, job_number, release_ms, start_ms, end_ms, exit_type)
            SELECT t.taskset_id, t.id, n, n * t.period, n * t.period + 1 + n %% 7, n * t.period + 9 + n %% 13,
                   CASE WHEN n %% 50 = 49 THEN 'EXIT_PERIOD' ELSE 'EXIT' END
            FROM distributor_task t JOIN distributor_taskset s ON s.id = t.taskset_id,
                 generate_series(0, %s - 1) AS n
            WHERE s.job_id = %s""", [jobs, job.pk])
        cursor.execute("ANALYZE distributor_taskset, distributor_task, distributor_taskjob")
    return wanted


def export(selection, method: str) -> int:
    from distributor.exports import taskjobs_csv

    size = 0
    with open("/dev/null", "w") as sink:
        for chunk in taskjobs_csv(selection, method=method):
            size += len(chunk)
            sink.write(chunk)
    return size


def copy_same_select(selection) -> int:
    from distributor.exports import taskjob_rows

    sql, params = taskjob_rows(selection).query.sql_with_params()
    return _copy_out(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)", params)


def copy_table() -> int:
    return _copy_out("COPY distributor_taskjob TO STDOUT", None)


def _copy_out(statement: str, params) -> int:
    from django.db import connection

    connection.ensure_connection()
    size = 0
    with open("/dev/null", "wb") as sink, connection.connection.cursor() as cursor:
        with cursor.copy(statement, params) as copy:
            for data in copy:
                size += len(data)
                sink.write(data)
    return size


def timed(action) -> tuple[float, int]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def traced(action) -> int:
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
