"""Cancelling a job now: its machines stop its running task-sets at their next
look and end them cancelled, not bad, and carry on (issue 17, point 3)."""
from __future__ import annotations

import threading
import time

import pytest

from distributor import reconciler
from distributor.models import Attempt, Job, Machine, Target, TaskSet
from distributor.queue import claim_next, submit_job
from tests.inprocess import finish_now, live_machine, run_launched, variants_file

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_broker")]


def wait_for(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_machine_is_told_to_cancel_only_its_own_running_taskset_of_a_job_cancelled_now(scripted):
    job = submit_job(variants_file(3), target=scripted)
    other = submit_job(variants_file(1), target=scripted, priority=-1)
    mine, theirs = live_machine(scripted, 0), live_machine(scripted, 1)
    claimed = claim_next(mine).taskset
    assert claim_next(theirs).taskset.job_id == job.pk
    assert mine.orders().cancel is None
    job.cancel()  # a plain cancel lets running task-sets finish
    assert mine.orders().cancel is None
    assert job.cancel(now=True)  # now also stops what still runs of a job cancelled before
    orders = mine.orders()
    assert orders.cancel == claimed.pk and orders.stop_mode == Machine.StopMode.NONE
    assert theirs.orders().cancel not in (None, claimed.pk)
    assert not job.cancel(now=True)  # nothing left to change
    assert Job.objects.get(pk=other.pk).state == Job.State.QUEUED


def test_a_taskset_that_finished_before_its_machine_looked_stays_finished(scripted):
    job = submit_job(variants_file(1), target=scripted)
    machine = live_machine(scripted)
    claim = claim_next(machine)
    job.cancel(now=True)
    assert finish_now(claim, machine)  # the result was on its way: it counts
    assert machine.orders().cancel is None
    assert not claim.taskset.end_cancelled(machine)
    assert TaskSet.objects.get(pk=claim.taskset.pk).state == TaskSet.State.FINISHED


def test_cancel_now_stops_running_tasksets_through_their_machines_and_they_end_cancelled(scripted):
    Target.objects.filter(pk=scripted.pk).update(settings={"duration_ms": 5000})
    reconciler.set_max_machines(2)
    job = submit_job(variants_file(6), target=scripted)
    runner = threading.Thread(target=run_launched, kwargs={"timeout": 40})
    runner.start()
    try:
        wait_for(lambda: job.tasksets.filter(state=TaskSet.State.RUNNING).count() == 2)
        running = set(job.tasksets.filter(state=TaskSet.State.RUNNING).values_list("pk", flat=True))
        cancelled_at = time.monotonic()
        assert job.cancel(now=True)
        later = submit_job(variants_file(2), target=scripted)  # queued before the machines look again
        wait_for(lambda: not job.tasksets.filter(state=TaskSet.State.RUNNING).exists(), 5)
        assert time.monotonic() - cancelled_at < 2, "machines notice within a poll, not after the 5 s run"
    finally:  # the machines carry on with the next job instead of stopping

        runner.join()
    stopped = TaskSet.objects.filter(pk__in=running)
    assert {(ts.state, ts.last_error) for ts in stopped} == {(TaskSet.State.CANCELLED, "its job was cancelled")}
    assert set(Attempt.objects.filter(taskset__in=stopped).values_list("result", flat=True)) == {Attempt.Result.CANCELLED}
    assert set(job.tasksets.values_list("state", flat=True)) == {TaskSet.State.CANCELLED}
    job.refresh_from_db()
    assert (job.state, job.bad_count, job.finished_count) == (Job.State.CANCELLED, 0, 0)
    assert job.progress()["cancelled"] == 6 and job.progress()["queued"] == 0
    later.refresh_from_db()
    assert later.state == Job.State.FINISHED and later.finished_count == 2
    assert set(Machine.objects.values_list("state", flat=True)) == {Machine.State.STOPPED}


def test_a_running_taskset_of_a_cancelled_job_ends_cancelled_when_its_machine_dies_or_fails(scripted):
    """A plain cancel lets running task-sets finish; one that goes back to the
    queue instead (its machine died, its target failed, it was put back) ends
    cancelled like the job's other queued ones, not queued for ever."""
    job = submit_job(variants_file(3), target=scripted, tries=3)
    machines = [live_machine(scripted, slot) for slot in range(3)]
    died, failed, put_back = (claim_next(machine).taskset for machine in machines)
    assert job.cancel()
    assert died.recover_from_dead_machine(machines[0], "machine died") == TaskSet.State.CANCELLED
    assert failed.fail(machines[1], "target failed") == TaskSet.State.CANCELLED
    assert put_back.put_back(machines[2]) and put_back.state == TaskSet.State.CANCELLED
    assert set(TaskSet.objects.filter(job=job).values_list("state", flat=True)) == {TaskSet.State.CANCELLED}
    progress = Job.objects.get(pk=job.pk).progress()
    assert (progress["queued"], progress["running"], progress["cancelled"]) == (0, 0, 3)
    assert job.reopen_cancelled()  # continued, they run after all
    assert set(TaskSet.objects.filter(job=job).values_list("state", flat=True)) == {TaskSet.State.QUEUED}
