"""How fast the pages people keep open answer on a big database.

    python bench/web_pages.py [--tasksets 100000] [--machines 16] [--requests 40]

Builds a scratch database (a fresh DATA_DIR under /tmp, removed at the end,
unless DATA_DIR is set: then a campaign built there before is measured again
without rebuilding; SQLite unless DATABASE_URL is set — give it a scratch
database) with
one job of ``--tasksets`` task-sets (3 tasks, 12 task-jobs each, analytic
labels as the engine stores them), two more active jobs and ``--machines``
busy machines, then requests the dashboard fragment, the big job's page (with
its agreement matrix over every finished set), its three plots, its results
from the API and a task-set page through Django's test client and prints
p50/p95 per page. The target is 200 ms each for the pages kept open.

``build()`` is also what tests/test_web_*.py use to make their (small) data.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

BATCH = 2000
TASKS = 3
JOBS_PER_TASK = 4
PERIODS = (10, 20, 40)


def build(tasksets: int, machines: int, *, owner=None, events_every: int = 100, log=lambda _: None) -> dict:
    """A running campaign: one big job with ``tasksets`` task-sets (the last
    ``machines`` of them running on busy machines, 2% bad, the rest finished)
    and two small queued jobs. Returns the rows a test or benchmark needs."""
    import json

    from django.utils import timezone

    from distributor import taskfile
    from distributor.models import Event, Job, Machine, Target, Task, TaskJob, TaskSet

    target, _ = Target.objects.get_or_create(name="bench", defaults={"kind": "stdio", "settings": {"print": False}})
    spec = {"name": "bench", "tasksets": [{"tasks": [
        {"pkg": "hey", "config": {"arg1": {"range": [0, max(tasksets, 2)]} if index == 0 else 1}, "period": p,
         "numberofjobs": JOBS_PER_TASK, "priority": index} for index, p in enumerate(PERIODS)]}]}
    parsed = taskfile.parse(json.dumps(spec).encode(), "bench.json")
    now = timezone.now()
    running = min(machines, tasksets)
    bad = tasksets // 50
    job = Job.objects.create(name="bench", owner=owner, target=target, spec=parsed.spec, variant_count=parsed.variant_count,
                             cursor=tasksets, state=Job.State.RUNNING, started_at=now - timedelta(hours=10))
    job.add_counts(finished=tasksets - running - bad, bad=bad)
    job.refresh_from_db()
    small = [Job.objects.create(name=f"queued {n}", owner=owner, target=target, spec=parsed.spec,
                                variant_count=parsed.variant_count, cursor=0) for n in range(2)]
    first_slot = Machine.objects.filter(target=target).count()  # a second build adds machines beside the first's
    pool = Machine.objects.bulk_create([
        Machine(target=target, slot=slot, host="bench", state=Machine.State.BUSY, heartbeat_at=now, started_at=now,
                activity="running", tasksets_done=slot * 100) for slot in range(first_slot, first_slot + machines)])
    first_running = tasksets - running
    labels = _labeller()
    for start in range(0, tasksets, BATCH):
        variants = range(start, min(start + BATCH, tasksets))
        rows = TaskSet.objects.bulk_create([_taskset(job, v, first_running, bad, pool, now, tasksets, labels)
                                            for v in variants])
        tasks = Task.objects.bulk_create([
            Task(taskset=ts, task_id=i, pkg="hey", arg1=ts.variant, priority=i, deadline=0, period=PERIODS[i], offset=0,
                 numberofjobs=JOBS_PER_TASK, criticaltime=0, quota="100M", caps=235, cores=1, coreoffset=0)
            for ts in rows for i in range(TASKS)])
        TaskJob.objects.bulk_create([
            TaskJob(taskset_id=task.taskset_id, task=task, job_number=k, release_ms=k * task.period,
                    start_ms=k * task.period + task.task_id, end_ms=k * task.period + task.task_id + 3,
                    exit_type="EXIT" if (task.taskset_id + k) % 7 else "EXIT_PERIOD")
            for task in tasks if task.taskset.state == TaskSet.State.FINISHED for k in range(JOBS_PER_TASK)])
        Event.objects.bulk_create([
            Event(taskset=ts, attempt=1, seq=seq, task_id=seq % TASKS, type="START" if seq % 2 == 0 else "EXIT", time_ms=seq)
            for ts in rows if ts.variant % events_every == 0 for seq in range(2 * TASKS * JOBS_PER_TASK)])
        log(f"  {min(start + BATCH, tasksets):,} task-sets")
    for machine, taskset in zip(pool, TaskSet.objects.filter(job=job, state=TaskSet.State.RUNNING).order_by("variant")):
        # from the clock now, not the build's start: a page read right after shows 42 s
        Machine.objects.filter(pk=machine.pk).update(current=taskset, current_since=timezone.now() - timedelta(seconds=42),
                                                    activity=f"running job {job.pk} variant {taskset.variant}")
    sample = TaskSet.objects.filter(job=job, state=TaskSet.State.FINISHED).order_by("variant").first()
    return {"target": target, "job": job, "queued": small, "machines": pool, "taskset": sample}


def _labeller():
    """The analysis of a variant as the engine stores it (distributor.analysis),
    computed for 40 distinct arg1 values and reused: the labels then spread
    over utilisation bins and verdicts without analysing 10^5 sets."""
    from functools import cache

    from distributor.analysis import analyse
    from sessions import etm

    model = etm.load()

    @cache
    def labels(arg1: int) -> dict:
        tasks = [{"id": i, "pkg": "pi" if i == 0 else "hey", "arg1": arg1 if i == 0 else 1, "period": p,
                  "numberofjobs": JOBS_PER_TASK, "priority": i, "deadline": 0, "offset": 0, "criticaltime": 0,
                  "cores": 1, "coreoffset": 0} for i, p in enumerate(PERIODS)]
        return analyse(tasks, model)

    return lambda variant: labels(variant % 40)


def _taskset(job, variant: int, first_running: int, bad: int, pool: list, now, total: int, labels):
    from distributor.models import TaskSet

    ended = now - timedelta(seconds=(total - variant) * 0.3)
    if variant >= first_running:
        return TaskSet(job=job, variant=variant, state=TaskSet.State.RUNNING, attempts=1,
                       machine=pool[variant - first_running], started_at=now - timedelta(seconds=42))
    if variant % 50 == 49 and variant // 50 < bad:
        return TaskSet(job=job, variant=variant, state=TaskSet.State.BAD, attempts=3, started_at=ended, ended_at=ended,
                       last_error="target silent for 40 s", machine=pool[variant % len(pool)] if pool else None,
                       analysis=labels(variant))
    outcome = TaskSet.Outcome.SCHEDULABLE if variant % 3 else TaskSet.Outcome.UNSCHEDULABLE
    return TaskSet(job=job, variant=variant, state=TaskSet.State.FINISHED, outcome=outcome, attempts=1,
                   machine=pool[variant % len(pool)] if pool else None, started_at=ended - timedelta(seconds=2),
                   ended_at=ended, analysis=labels(variant))


def _time(client, url: str, count: int) -> tuple[float, list[float]]:
    """The first view's time (the results not stored yet, where they are
    stored), then ``count`` views' after three to warm caches and templates."""
    started = time.perf_counter()
    assert client.get(url).status_code == 200, url
    first = (time.perf_counter() - started) * 1000
    for _ in range(2):
        assert client.get(url).status_code == 200, url
    times = []
    for _ in range(count):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, url
    return first, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasksets", type=int, default=100_000)
    parser.add_argument("--machines", type=int, default=16)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root))
    scratch = None if os.environ.get("DATA_DIR") else tempfile.mkdtemp(prefix="bench-web-")
    os.environ.setdefault("DATA_DIR", scratch or "")
    try:
        measure(args)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def measure(args: argparse.Namespace) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client

    print(f"database: {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]} {settings.DATABASES['default']['NAME']}")
    from distributor.models import Job, TaskSet

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user(f"bench{time.time_ns()}", is_staff=True)
    job = Job.objects.filter(name="bench").order_by("-variant_count").first()
    if job is not None:
        print(f"measuring the campaign built before: {job.cursor:,} task-sets")
        data = {"job": job, "taskset": TaskSet.objects.filter(job=job, state="finished").order_by("variant").first()}
    else:
        started = time.perf_counter()
        print(f"building {args.tasksets:,} task-sets and {args.machines} busy machines…")
        data = build(args.tasksets, args.machines, owner=user, log=print)
        print(f"built in {time.perf_counter() - started:.0f} s")
    client = Client()
    client.force_login(user)
    pages = {
        "dashboard fragment": "/dashboard/live",
        "job page": f"/jobs/{data['job'].pk}/",
        "job page, bad task-sets": f"/jobs/{data['job'].pk}/?state=bad",
        "job page, disagreeing": f"/jobs/{data['job'].pk}/?state=finished&disagrees=1",
        "schedulability.svg": f"/jobs/{data['job'].pk}/schedulability.svg",
        "response-times.svg": f"/jobs/{data['job'].pk}/response-times.svg",
        "exit-types.svg": f"/jobs/{data['job'].pk}/exit-types.svg",
        "API results": f"/api/jobs/{data['job'].pk}/results",
        "task-set page": f"/tasksets/{data['taskset'].pk}/",
    }
    _forget_results()
    print(f"{'page':<26} {'first ms':>8} {'p50 ms':>8} {'p95 ms':>8}")
    for name, url in pages.items():
        first, times = _time(client, url, args.requests)
        p95 = statistics.quantiles(times, n=20)[-1]
        print(f"{name:<26} {first:8.1f} {statistics.median(times):8.1f} {p95:8.1f}"
              f"{'' if p95 < 200 else '  over the 200 ms target'}")


def _forget_results() -> None:
    """Drop the stored results summaries (distributor/summaries.py), if this
    code has them: each page's first view then computes what it shows."""
    try:
        from distributor.models import ResultsSummary
    except ImportError:
        return
    ResultsSummary.objects.all().delete()


if __name__ == "__main__":
    main()
