"""The engine with real django-q2 cluster processes: scaling, kill, crashes.

These are the acceptance tests of the engine. The machines run in a real
machines cluster (qcluster in its own process group) against the test
database; the test plays the operator and, where a crash leaves no live
machine to reconcile, the minute schedule (by calling tick()).
"""
from __future__ import annotations

import json
import random
import subprocess
import time

import pytest
from django.db.models import Count

from distributor import reconciler
from distributor.status import overview
from distributor.models import Attempt, Job, Machine, Target, TaskJob, TaskSet
from distributor.queue import submit_job
from tests.cluster import machines_cluster_running, short_timeouts, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def job_file(count: int, crash_at=frozenset(), jobs_per_task: int = 2) -> bytes:
    return json.dumps({"tasksets": [
        {"tasks": [{"pkg": "crash" if i in crash_at else "hey", "period": 10, "numberofjobs": jobs_per_task}]}
        for i in range(count)
    ]}).encode()


@pytest.fixture
def configured(db):
    return short_timeouts()


@pytest.fixture
def machines_cluster(configured):
    with machines_cluster_running(workers=5) as cluster:
        yield cluster


def scripted_target(**settings) -> Target:
    return Target.objects.create(name="scripted", kind="scripted", settings=settings)


def live_count(states=Machine.LIVE_STATES) -> int:
    return Machine.objects.filter(state__in=states).count()


def assert_each_finished_exactly_once(job: Job, jobs_per_task: int = 2) -> None:
    job.refresh_from_db()
    assert job.state == Job.State.FINISHED
    assert job.tasksets.count() == job.total
    assert job.tasksets.filter(state=TaskSet.State.FINISHED).count() == job.finished_count
    counts = TaskJob.objects.filter(taskset__job=job).values("taskset").annotate(n=Count("pk"))
    assert {row["n"] for row in counts} == {jobs_per_task}
    assert counts.count() == job.finished_count
    finished_attempts = Attempt.objects.filter(taskset__job=job, result=Attempt.Result.FINISHED)
    assert finished_attempts.count() == job.finished_count


SIMSO_JOBS = 40 + 20 + 10  # task-jobs per task-set of SIMSO_FILE


def simso_file(variants: int) -> bytes:
    """Task-sets that take SimSo tens of milliseconds each: long enough to
    change the machine count while the job runs."""
    return json.dumps({"tasksets": [{"tasks": [
        {"pkg": "hey", "priority": 1, "period": 10, "numberofjobs": 40, "config": {"arg1": {"range": [0, variants]}}},
        {"pkg": "pi", "priority": 2, "period": 20, "numberofjobs": 20, "config": {"arg1": 1}},
        {"pkg": "idle", "priority": 3, "period": 40, "numberofjobs": 10},
    ]}]}).encode()


def test_scaling_up_and_down_mid_run(machines_cluster):
    target = Target.objects.create(name="sim", kind="simso")
    job = submit_job(simso_file(200), target=target)
    wait_until(lambda: Job.objects.get(pk=job.pk).finished_count >= 10, 60, message="the first machine works")
    assert overview()["state"] == "busy"
    assert live_count() == 1

    reconciler.set_max_machines(4)
    started = wait_until(lambda: live_count([Machine.State.IDLE, Machine.State.BUSY]) == 4, 10,
                         message="four machines at work")
    assert started < 3, f"three more machines took {started:.1f} s"

    wait_until(lambda: Job.objects.get(pk=job.pk).finished_count >= 80, 60)
    reconciler.set_max_machines(2)
    drained = set(Machine.objects.filter(stop_mode=Machine.StopMode.DRAIN).values_list("pk", flat=True))
    assert drained == set(Machine.objects.order_by("-pk").values_list("pk", flat=True)[:2])
    wait_until(lambda: live_count() == 2, 10, message="two machines drain")
    for machine in Machine.objects.filter(pk__in=drained):
        assert machine.state == Machine.State.STOPPED, machine.last_error
    # Draining finished the current task-set: nothing was put back or lost.
    assert not TaskSet.objects.filter(attempts__gt=1).exists()
    assert not Attempt.objects.exclude(result__in=[Attempt.Result.FINISHED, ""]).exists()

    wait_until(lambda: not Job.objects.get(pk=job.pk).is_active, 60)
    assert_each_finished_exactly_once(job, jobs_per_task=SIMSO_JOBS)
    assert overview()["state"] == "idle"


def test_kill_stops_every_machine_at_once_and_resume_finishes_exactly_once(machines_cluster):
    # One-second task-sets: a kill is noticed within 0.2 s, so it lands mid-run.
    target = scripted_target(duration_ms=1000)
    reconciler.set_max_machines(3)
    job = submit_job(job_file(12), target=target)
    wait_until(lambda: TaskSet.objects.filter(state=TaskSet.State.RUNNING).count() == 3, 30, message="three running")
    running = set(TaskSet.objects.filter(state=TaskSet.State.RUNNING).values_list("pk", flat=True))

    killed_in = reconciler.kill_all() and wait_until(lambda: live_count() == 0, 5, every=0.01)
    assert killed_in < 1.0, f"machines took {killed_in:.2f} s to stop"
    assert not TaskSet.objects.filter(state=TaskSet.State.RUNNING).exists()
    put_back = TaskSet.objects.filter(pk__in=running, state=TaskSet.State.QUEUED)
    assert put_back.exists(), "the kill caught task-sets mid-run"
    # One may have finished between the look and the kill; the rest went back untouched.
    assert set(TaskSet.objects.filter(pk__in=running).values_list("state", flat=True)) <= {
        TaskSet.State.QUEUED, TaskSet.State.FINISHED}
    for taskset in put_back:
        assert taskset.attempts == 0 and not taskset.attempt_set.exists()
        assert not taskset.events.exists() and not taskset.taskjobs.exists()
    assert overview()["state"] == "halted"

    reconciler.resume()
    wait_until(lambda: not Job.objects.get(pk=job.pk).is_active, 60)
    assert_each_finished_exactly_once(job)


def test_crashes_of_the_machines_cluster_lose_and_duplicate_nothing(machines_cluster):
    marker = str(random.randint(100000, 999999))
    # 100 ms task-sets: four machines need seconds for the job, so all five
    # crashes land mid-job (the engine's own cost per task-set is a few ms).
    target = scripted_target(duration_ms=100, process=marker)
    reconciler.set_max_machines(4)
    job = submit_job(job_file(500), target=target)
    cluster = machines_cluster
    rng = random.Random(7)
    for crash in range(5):
        done = Job.objects.get(pk=job.pk).finished_count
        wait_until(lambda: Job.objects.get(pk=job.pk).finished_count >= done + 10, 60, tick=True,
                   message=f"progress before crash {crash + 1}")
        time.sleep(rng.uniform(0.2, 1.5))
        cluster.kill9()
        wait_until(lambda: not target_processes(marker), 5, message="targets die with their machine")
        cluster.start()
    wait_until(lambda: not Job.objects.get(pk=job.pk).is_active, 240, tick=True, message="the job ends")
    assert_each_finished_exactly_once(job)
    assert job.bad_count == 0
    reconciler.kill_all()
    wait_until(lambda: live_count() == 0, 10)
    assert not target_processes(marker), "no target outlives its machine"


def test_failing_tasksets_are_retried_then_bad_in_the_cluster(machines_cluster):
    target = scripted_target(duration_ms=5)
    reconciler.set_max_machines(2)
    job = submit_job(job_file(30, crash_at={5, 17}), target=target, tries=2)
    wait_until(lambda: not Job.objects.get(pk=job.pk).is_active, 60)
    job.refresh_from_db()
    assert (job.finished_count, job.bad_count) == (28, 2)
    bad = job.tasksets.filter(state=TaskSet.State.BAD)
    assert sorted(bad.values_list("variant", flat=True)) == [5, 17]
    assert all(t.attempts == 2 and "crashed" in t.last_error and t.outcome == "" for t in bad)


def target_processes(marker: str) -> list[str]:
    out = subprocess.run(["pgrep", "-f", f"sleep 1000.{marker}"], capture_output=True, text=True).stdout
    return out.split()
