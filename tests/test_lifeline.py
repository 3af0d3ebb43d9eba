"""A machine's lease and orders: fencing (a machine that lost its row claims
and stores nothing; a duplicate delivery finds its row taken), the lease renewed
by the work itself, the Lifeline thread, and a kill seen by a running machine."""
from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from distributor import reconciler
from distributor import machine as machine_module
from distributor.machine import Lifeline, run_machine
from distributor.models import Attempt, DistributorConfig, Event, Machine, Orders, Target, TaskJob, TaskSet
from distributor.queue import claim_next, submit_job
from distributor.status import overview
from tests.inprocess import finish_now, live_machine, run_launched, variants_file

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_broker")]


# -- fencing -------------------------------------------------------------------


def test_a_fenced_machine_claims_nothing(scripted):
    submit_job(variants_file(2), target=scripted)
    machine = live_machine(scripted)
    Machine.objects.filter(pk=machine.pk).update(lease=None)
    from distributor.models import Fenced

    with pytest.raises(Fenced):
        claim_next(machine)
    assert not TaskSet.objects.exclude(state=TaskSet.State.QUEUED).exists()
    assert not Attempt.objects.exists()


def test_a_machine_declared_dead_stores_no_result(scripted):
    """The finish is all or nothing: a machine that lost its row (declared dead,
    its task-set requeued) writes no task-job, event or counter."""
    job = submit_job(variants_file(1), target=scripted)
    machine = live_machine(scripted)
    claim = claim_next(machine)
    Machine.objects.filter(pk=machine.pk).update(state=Machine.State.DEAD)
    task = claim.task_pks[0]
    rows = [(claim.taskset.pk, task, 0, 0, 0, 5, "EXIT", 10, True)]
    events = [(claim.taskset.pk, 1, 0, 0, "START", 0, timezone.now())]
    assert not claim.taskset.finish(machine, TaskSet.Outcome.SCHEDULABLE, rows, events)
    assert not TaskJob.objects.exists() and not Event.objects.exists()
    assert TaskSet.objects.get().state == TaskSet.State.RUNNING
    job.refresh_from_db()
    assert (job.finished_count, Machine.objects.get(pk=machine.pk).tasksets_done) == (0, 0)


def test_a_duplicate_launch_delivery_exits_at_once(scripted):
    submit_job(variants_file(1), target=scripted)
    machine = Machine.objects.get()
    machine.take(pid=1)
    assert "duplicate" in run_machine(machine.pk)


# -- heartbeats and orders -----------------------------------------------------


def test_claims_and_finishes_renew_the_lease_and_bring_the_operators_orders(scripted):
    """A machine's own statements beat for it and read its stop flags, so its
    lifeline need not poll while task-sets come and go."""
    submit_job(variants_file(2), target=scripted)
    machine = live_machine(scripted)
    stale = timezone.now() - timedelta(minutes=5)
    Machine.objects.filter(pk=machine.pk).update(heartbeat_at=stale)
    claim = claim_next(machine)
    assert claim.orders == Orders("", False)
    assert Machine.objects.get(pk=machine.pk).heartbeat_at > stale + timedelta(minutes=4)

    Machine.objects.filter(pk=machine.pk).update(heartbeat_at=stale, stop_mode=Machine.StopMode.DRAIN,
                                                 reboot_requested=True)
    assert finish_now(claim, machine) == Orders(Machine.StopMode.DRAIN, True)
    assert Machine.objects.get(pk=machine.pk).heartbeat_at > stale + timedelta(minutes=4)


def test_a_lifeline_listens_while_the_work_brings_orders_and_polls_when_it_falls_silent(scripted, monkeypatch):
    machine = live_machine(scripted)
    calls = []
    for name in ("_beat", "_read_orders"):
        real = getattr(Lifeline, name)
        monkeypatch.setattr(Lifeline, name, lambda self, real=real, name=name: (calls.append(name), real(self)))
    stop = threading.Event()
    lifeline = Lifeline(machine, DistributorConfig.get(), stop)
    lifeline.heard(Orders("", False))
    lifeline.start()
    try:
        busy_until = time.monotonic() + 1.0
        while time.monotonic() < busy_until:  # task-sets finishing every 20 ms
            lifeline.heard(Orders("", False))
            time.sleep(0.02)
        while_busy = list(calls)
        Machine.objects.filter(pk=machine.pk).update(stop_mode=Machine.StopMode.KILL)
        assert stop.wait(2), "the lifeline read the kill itself once the work fell silent"
    finally:
        lifeline.done.set()
        lifeline.join()
    assert while_busy == []
    assert "_read_orders" in calls  # no beat yet: the work renewed the lease less than a beat ago

    quiet = Lifeline(machine, DistributorConfig.get(), threading.Event())
    quiet.heard(Orders(Machine.StopMode.KILL, False))  # a finish brought the kill
    assert quiet.stop_event.is_set()


def test_a_lifeline_reads_the_orders_when_the_newest_it_has_are_a_poll_interval_old(scripted):
    """Whoever read them last, the work or the lifeline, a kill waits at most
    POLL_SECONDS: the next read is due that long after the newest orders."""
    lifeline = Lifeline(live_machine(scripted), DistributorConfig.get(), threading.Event())
    assert lifeline.seconds_to_next_read() == 0  # nothing known yet: read at once
    lifeline.heard(Orders("", False))
    assert machine_module.POLL_SECONDS - 0.05 < lifeline.seconds_to_next_read() <= machine_module.POLL_SECONDS
    lifeline.heard_at -= machine_module.POLL_SECONDS  # the work fell silent a poll interval ago
    assert lifeline.seconds_to_next_read() == 0
    lifeline.read_at = time.monotonic() - machine_module.POLL_SECONDS / 2  # the lifeline's own read, half as old
    assert 0 < lifeline.seconds_to_next_read() <= machine_module.POLL_SECONDS / 2


def test_kill_puts_the_running_taskset_back_untouched(scripted):
    Target.objects.filter(pk=scripted.pk).update(settings={"duration_ms": 5000})
    job = submit_job(variants_file(2), target=scripted)
    thread = threading.Thread(target=run_launched)
    thread.start()
    deadline = time.monotonic() + 10
    while not TaskSet.objects.filter(state=TaskSet.State.RUNNING).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    killed_at = time.monotonic()
    reconciler.kill_all()
    while Machine.objects.filter(state__in=Machine.LIVE_STATES).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert time.monotonic() - killed_at < 1.5
    thread.join()
    assert {(taskset.state, taskset.attempts, taskset.runs) for taskset in job.tasksets.all()} == {
        (TaskSet.State.QUEUED, 0, 0)}
    assert not Attempt.objects.exists() and not Event.objects.exists()
    assert overview()["state"] == "halted"
