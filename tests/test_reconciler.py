"""The reconciler, driven directly (no cluster): tick launches up to the
maximum while there is work, drains when the maximum drops, declares stale
machines dead and requeues their task-sets; the operator's controls."""
from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from distributor import reconciler
from distributor.machine import run_machine
from distributor.models import Attempt, DistributorConfig, Event, Job, Machine, TaskSet
from distributor.queue import claim_next, submit_job
from tests.inprocess import live_machine, run_launched, variants_file

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_broker")]


# -- launching -----------------------------------------------------------------


def test_tick_launches_up_to_the_maximum_while_there_is_work(scripted, no_broker):
    reconciler.set_max_machines(3)
    assert not Machine.objects.exists()  # no work, no machines
    submit_job(variants_file(2), target=scripted)
    assert Machine.objects.filter(state=Machine.State.LAUNCHING).count() == 2  # no more than the work
    submit_job(variants_file(10), target=scripted)
    assert Machine.objects.filter(state=Machine.State.LAUNCHING).count() == 3
    reconciler.tick()
    assert Machine.objects.count() == 3
    assert sorted(Machine.objects.values_list("slot", flat=True)) == [0, 1, 2]
    assert no_broker.call_args.kwargs["cluster"].startswith("machines-")


def test_work_that_arrives_as_the_last_machine_goes_idle_is_not_stranded(scripted):
    """A job submitted between a machine's last empty claim and its stop finds the
    reconciler still counting that machine; the stopping machine hands over."""
    submit_job(variants_file(1), target=scripted)
    run_launched()
    assert not Machine.objects.filter(state__in=Machine.LIVE_STATES).exists()
    reconciler.tick()
    machine = Machine.objects.create(target=scripted, slot=0, host=Machine.objects.first().host)
    empty_claims = []

    def claim_then_submit(claimer):
        claim = claim_next(claimer)
        if claim is None:
            empty_claims.append(claimer.pk)
            if len(empty_claims) == 2:  # the claim after which the idle machine stops (idle timeout 0)
                submit_job(variants_file(1), target=scripted)  # its tick still sees a live machine
        return claim

    with mock.patch("distributor.machine.claim_next", claim_then_submit):
        run_machine(machine.pk)
    assert len(empty_claims) == 2 and Machine.objects.filter(state=Machine.State.LAUNCHING).count() == 1


# -- the operator's controls ---------------------------------------------------


def test_lowering_the_maximum_drains_the_highest_ids(scripted):
    reconciler.set_max_machines(4)
    submit_job(variants_file(10), target=scripted)
    for machine in Machine.objects.all():
        machine.take(pid=1)
    reconciler.set_max_machines(2)
    draining = set(Machine.objects.filter(stop_mode=Machine.StopMode.DRAIN).values_list("pk", flat=True))
    assert draining == set(Machine.objects.order_by("-pk").values_list("pk", flat=True)[:2])
    reconciler.set_max_machines(3)
    assert Machine.objects.filter(stop_mode=Machine.StopMode.DRAIN).count() == 1


def test_a_value_outside_one_to_cap_is_refused(settings):
    settings.DISTRIBUTOR_CAP = 42
    for bad in (0, 43, -1):
        with pytest.raises(ValidationError, match="between 1 and 42"):
            reconciler.set_max_machines(bad)
    assert DistributorConfig.get().max_machines == 1


def test_halted_launches_nothing_until_resumed(scripted):
    reconciler.shut_down_all()
    submit_job(variants_file(3), target=scripted)
    assert not Machine.objects.exists()
    reconciler.resume()
    assert Machine.objects.filter(state=Machine.State.LAUNCHING).count() == 1


# -- dead machines -------------------------------------------------------------


def test_a_stale_machine_is_declared_dead_and_its_taskset_requeued(scripted):
    job = submit_job(variants_file(3), target=scripted)
    machine = Machine.objects.get()
    machine.take(pid=1)
    claim = claim_next(machine)
    Event.objects.create(taskset=claim.taskset, attempt=1, seq=0, task_id=0, type="START", time_ms=0)
    Machine.objects.filter(pk=machine.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    result = reconciler.tick()
    assert result["dead"] == [machine.pk]
    taskset = TaskSet.objects.get(pk=claim.taskset.pk)
    assert (taskset.state, taskset.attempts, taskset.losses) == (TaskSet.State.QUEUED, 0, 1)
    assert "stopped beating" in taskset.last_error
    assert Attempt.objects.get(taskset=taskset).result == Attempt.Result.LOST
    assert Machine.objects.get(pk=machine.pk).state == Machine.State.DEAD
    assert result["launched"], "a replacement is launched for the remaining work"
    assert job.tasksets.filter(state=TaskSet.State.RUNNING).count() == 0


def test_a_taskset_left_running_by_a_machine_that_crashed_goes_back_to_the_queue(scripted):
    """A machine that fails on an unexpected error (not a target failure) ends
    as failed; the reconciler hands its task-set to the queue again."""
    submit_job(variants_file(1), target=scripted)
    machine = live_machine(scripted)
    claim = claim_next(machine)
    Machine.objects.filter(pk=machine.pk).update(state=Machine.State.FAILED)
    reconciler.tick()
    taskset = TaskSet.objects.get(pk=claim.taskset.pk)
    assert (taskset.state, taskset.attempts, taskset.losses) == (TaskSet.State.QUEUED, 0, 1)
    assert "ended (failed)" in taskset.last_error


def test_a_launch_nobody_picks_up_is_declared_dead(scripted):
    submit_job(variants_file(1), target=scripted)
    Machine.objects.update(launched_at=timezone.now() - timedelta(hours=1))
    assert len(reconciler.tick()["dead"]) == 1


def test_a_taskset_that_keeps_killing_machines_ends_bad(scripted):
    submit_job(variants_file(1), target=scripted, tries=2)
    for _ in range(2):
        machine = Machine.objects.filter(state=Machine.State.LAUNCHING).get()
        machine.take(pid=1)
        claim_next(machine)
        Machine.objects.filter(pk=machine.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
        reconciler.tick()
    taskset = TaskSet.objects.get()
    assert taskset.state == TaskSet.State.BAD and "died 2 time(s)" in taskset.last_error
    assert Job.objects.get().state == Job.State.FINISHED
