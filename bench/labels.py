"""Analytic labels: the time of one task-set's labels, and the rate of relabel.

    python bench/labels.py [--sets 100000] [--samples 2000]
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/dist_bench python bench/labels.py

(a) ``distributor.analysis.analyse`` on random 5-task sets drawn as
``manage.py campaign random`` draws them (UUniFast; here U 0.3 to 1.0,
periods 10-1000 ms log-uniform, pkg pi / tumatmul / idle, 5 jobs a task, its
default; the default execution-time model), rate-monotonic and EDF
(priority 128) apart: p50 and p90 in ms. Target: p50 < 1 ms.

(b) ``distributor.labels.relabel`` of ``--sets`` stored task-sets of 5
tasks each (the same kind of sets, without labels), timed from the call to
its return: reading the sets and their tasks, the analysis, and writing the
labels, a transaction per chunk. On a scratch SQLite file
(``DATA_DIR/bench-labels.sqlite3``, made afresh) and, when ``DATABASE_URL``
names PostgreSQL, on that database too (created if missing; only the
benchmark job's rows are replaced). Each database runs in a child process of
its own. The relabel uses the command's default number of worker processes
(``RELABEL_WORKERS=N`` to choose); the CPU printed is this process's and
its workers', the database server's not included. Target: 100,000 sets in
under 60 s on each.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
TASKS_PER_SET, JOBS_PER_TASK = 5, 5
DRAWN = 2000  # distinct random sets; stored sets cycle through them


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=100_000, help="stored task-sets to relabel")
    parser.add_argument("--samples", type=int, default=2000, help="random sets timed per policy")
    parser.add_argument("--relabel-only", choices=["sqlite", "postgresql"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.relabel_only:
        return relabel_here(args.sets)
    print(f"load average {os.getloadavg()[0]:.2f}")
    time_analysis(args.samples)
    for database, url in databases():
        env = {**os.environ, "DATABASE_URL": url}
        subprocess.run([sys.executable, __file__, "--sets", str(args.sets), "--relabel-only", database],
                       env=env, check=True)


def databases() -> list[tuple[str, str]]:
    """SQLite always; PostgreSQL when DATABASE_URL names it."""
    data = Path(os.environ.setdefault("DATA_DIR", "/tmp/distributor-bench"))
    data.mkdir(parents=True, exist_ok=True)
    found = [("sqlite", f"sqlite:///{data.resolve() / 'bench-labels.sqlite3'}")]
    url = os.environ.get("DATABASE_URL", "")
    if urlsplit(url).scheme in {"postgres", "postgresql", "pgsql"}:
        found.append(("postgresql", url))
    return found


# -- (a) one task-set's labels --------------------------------------------------------


def random_sets(policy: str, count: int, seed: int = 1) -> list[list[dict]]:
    """Sets as a random campaign stores them: every task field filled in, ids 0…4."""
    from distributor.campaigns.generate import RandomParams, concrete, random_tasksets
    from sessions import etm

    params = RandomParams(tasks=TASKS_PER_SET, utilisation=(0.3, 1.0), periods={"range": [10, 1000, 1]},
                          distribution="loguniform", packages={"pi": 1, "tumatmul": 1, "idle": 1}, count=count,
                          jobs=JOBS_PER_TASK, priorities=policy)
    drawn = random_tasksets(params, seed, etm.load("default"))
    return [[{"id": k, **concrete(task)} for k, task in enumerate(tasks)] for tasks in drawn]


def time_analysis(samples: int) -> None:
    from distributor.analysis import analyse
    from sessions import etm

    model = etm.load("default")
    for policy in ("rm", "edf"):
        times = []
        for tasks in random_sets(policy, samples):
            started = time.perf_counter()
            analyse(tasks, model)
            times.append((time.perf_counter() - started) * 1000)
        deciles = statistics.quantiles(times, n=10)
        print(f"analyse, 5 tasks x {JOBS_PER_TASK} jobs, {policy:3}: p50 {statistics.median(times):.3f} ms, "
              f"p90 {deciles[8]:.3f} ms ({samples} sets; target p50 < 1 ms)")


# -- (b) relabel -------------------------------------------------------------------------


def relabel_here(count: int) -> None:
    """In the child: fresh rows on this process's database, then one timed relabel."""
    database = setup_django()
    from distributor.labels import DEFAULT_WORKERS, relabel
    from distributor.models import TaskSet

    job = fill(count)
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    workers = int(os.environ.get("RELABEL_WORKERS", DEFAULT_WORKERS))
    done = relabel([job.pk], workers=workers)
    seconds = time.perf_counter() - started
    cpu = cpu_seconds() - cpu_before
    unlabelled = TaskSet.objects.filter(job=job, analysis__isnull=True).count()
    assert done.count == count and unlabelled == 0, (done.count, unlabelled)
    print(f"relabel, {database:10}: {count:,} task-sets of {TASKS_PER_SET} tasks in {seconds:.1f} s, "
          f"{count / seconds:,.0f} sets/s, {workers} worker(s), CPU {cpu:.1f} s (target < 60 s); "
          f"load average {os.getloadavg()[0]:.2f}",
          flush=True)


def cpu_seconds() -> float:
    """User + system CPU of this process and its ended children (the workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def setup_django() -> str:
    """This process's database, migrated; SQLite starts from an empty file."""
    url = os.environ["DATABASE_URL"]
    if url.startswith("sqlite:"):
        Path(urlsplit(url).path).unlink(missing_ok=True)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)
        return "SQLite"
    from pg_common import setup_django as setup_postgresql

    setup_postgresql()
    return "PostgreSQL"


def fill(count: int):
    """``count`` finished task-sets without labels, 5 tasks each, on a bench job."""
    from django.db import connection, transaction

    from distributor.models import Task, TaskSet
    from distributor.models.rows import insert_rows
    from pg_common import bench_job

    job = bench_job("labels")
    Task.objects.filter(taskset__job=job).delete()
    TaskSet.objects.filter(job=job).delete()
    drawn = random_sets("rm", DRAWN // 2) + random_sets("edf", DRAWN // 2)
    with transaction.atomic():
        insert_rows(TaskSet, ("job_id", "variant", "state", "outcome", "attempts", "runs", "losses", "last_error",
                              "created_at", "first_miss_kind"),
                    [(job.pk, v, "finished", "schedulable", 1, 1, 0, "", "2024-01-01 00:00:00+00:00", "")
                     for v in range(count)])
    ids = TaskSet.objects.filter(job=job).order_by("variant").values_list("pk", flat=True)
    columns = ("taskset_id", "task_id", *Task.FIELDS)
    for start in range(0, count, 10_000):
        with transaction.atomic():
            insert_rows(Task, columns, [(pk, task["id"], *(task[name] for name in Task.FIELDS))
                                        for offset, pk in enumerate(ids[start:start + 10_000])
                                        for task in drawn[(start + offset) % len(drawn)]])
    if connection.vendor == "postgresql":
        # What autovacuum does soon after a big change: without statistics the
        # planner takes the job's index and sorts all its rows for every chunk.
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE distributor_taskset, distributor_task")
    return job


if __name__ == "__main__":
    main()
