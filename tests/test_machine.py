"""Whole machines running task-sets in threads of the test (no cluster): a job
to its end, events stored while a task-set runs, big results, failures retried
then bad, a silent target, and the labels of finished task-sets."""
from __future__ import annotations

import time

import pytest
from django.db.models import Count

from distributor import reconciler
from distributor import machine as machine_module
from distributor.models import Attempt, DistributorConfig, Event, Job, Machine, TaskJob, TaskSet
from distributor.queue import claim_next, submit_job
from sessions.events import RawEvent
from tests.conftest import taskset_file
from tests.inprocess import live_machine, run_launched, variants_file

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_broker")]


def test_a_job_runs_to_the_end_with_one_result_per_variant(scripted):
    reconciler.set_max_machines(3)
    job = submit_job(variants_file(30), target=scripted)
    run_launched()
    job.refresh_from_db()
    assert job.state == Job.State.FINISHED and job.finished_count == 30
    assert job.tasksets.filter(state=TaskSet.State.FINISHED, outcome=TaskSet.Outcome.SCHEDULABLE).count() == 30
    assert TaskJob.objects.count() == 30 * 2
    per_taskset = TaskJob.objects.values("taskset").annotate(n=Count("pk")).values_list("n", flat=True)
    assert set(per_taskset) == {2}
    assert set(Machine.objects.values_list("state", flat=True)) == {Machine.State.STOPPED}


def test_a_running_tasksets_events_reach_the_database_while_it_runs(scripted, monkeypatch):
    """Events wait in the machine at most EVENT_FLUSH_SECONDS; what is left goes
    in with the result, or before the failure that ends the attempt."""
    submit_job(variants_file(1), target=scripted)
    claim = claim_next(live_machine(scripted))
    events = machine_module.EventBuffer(claim.taskset)
    events.add([RawEvent(0, "START", 0)])
    assert not Event.objects.exists()  # just received: still in the buffer
    monkeypatch.setattr(machine_module, "EVENT_FLUSH_SECONDS", 0)
    events.add([RawEvent(0, "EXIT", 4)])
    stored = list(Event.objects.order_by("seq").values_list("attempt", "seq", "task_id", "type", "time_ms"))
    assert stored == [(1, 0, 0, "START", 0), (1, 1, 0, "EXIT", 4)]
    assert events.take() == []


def test_a_big_result_is_stored_whole(scripted):
    """Hundreds of task-job and event rows (arrays of a column each inside the
    finish's one statement on PostgreSQL, one prepared INSERT on SQLite) land
    with their task-set, each exactly once."""
    job = submit_job(json_file([{"pkg": "hey", "period": 10, "numberofjobs": 80},
                                {"pkg": "pi", "period": 20, "numberofjobs": 70}]), target=scripted)
    run_launched()
    taskset = job.tasksets.get()
    assert taskset.state == TaskSet.State.FINISHED
    assert taskset.taskjobs.count() == 150
    assert sorted(taskset.taskjobs.filter(task__task_id=1).values_list("job_number", flat=True)) == list(range(70))
    assert taskset.events.count() == 2 * 150 + 2  # START and an exit per job, JOBS_DONE per task
    assert list(taskset.events.order_by("seq").values_list("seq", flat=True)) == list(range(302))


def test_failing_tasksets_are_retried_then_bad_while_the_rest_finish(scripted):
    job = submit_job(variants_file(12, crash_at={3, 7}), target=scripted, tries=3)
    run_launched()
    job.refresh_from_db()
    assert (job.state, job.finished_count, job.bad_count) == (Job.State.FINISHED, 10, 2)
    for taskset in job.tasksets.filter(state=TaskSet.State.BAD):
        assert taskset.variant in {3, 7} and taskset.attempts == 3 and taskset.outcome == ""
        assert "crashed" in taskset.last_error
        assert list(Attempt.objects.filter(taskset=taskset).values_list("result", flat=True)) == ["failed"] * 3
        assert not taskset.taskjobs.exists()
    assert ScriptedBoots.count() >= 1 + 2 * 3  # the target restarts after each failure
    stopped = Machine.objects.get()
    assert stopped.state == Machine.State.STOPPED and "crashed" in stopped.last_error  # kept after a clean stop


class ScriptedBoots:
    @staticmethod
    def count() -> int:
        from tests.fake_sessions import ScriptedSession

        return len(ScriptedSession.boots)


def test_a_silent_target_is_a_failure_after_the_timeout(scripted):
    DistributorConfig.get()
    DistributorConfig.objects.update(target_timeout_s=1)
    job = submit_job(json_file([{"pkg": "hang"}]), target=scripted, tries=1)
    started = time.monotonic()
    run_launched()
    taskset = job.tasksets.get()
    assert taskset.state == TaskSet.State.BAD and "silent for 1 s" in taskset.last_error
    assert time.monotonic() - started < 5


def json_file(tasks: list[dict]) -> bytes:
    return taskset_file(tasks)


def test_a_taskset_the_target_cannot_run_is_bad_at_once_without_a_restart(scripted):
    from tests.fake_sessions import ScriptedSession

    job = submit_job(taskset_file([{"pkg": "nobinary"}]), target=scripted, tries=5)
    boots_before = len(ScriptedSession.boots)
    run_launched()
    taskset = job.tasksets.get()
    assert (taskset.state, taskset.attempts) == (TaskSet.State.BAD, 1)
    assert "no binary uploaded" in taskset.last_error
    assert len(ScriptedSession.boots) == boots_before + 1  # booted once, never restarted


def test_finished_tasksets_carry_their_analytic_labels(scripted):
    job = submit_job(taskset_file([{"pkg": "hey", "period": 100, "numberofjobs": 2}]), target=scripted)
    run_launched()
    analysis = job.tasksets.get().analysis
    assert analysis["etm"]["name"] and analysis["utilisation"] > 0
