"""A machine survives trouble with the database: a restart, a dropped
connection, a lock timeout. Its lifeline keeps beating on a fresh connection
(or stops the machine before the reconciler could declare it dead); a
task-set caught by such an error goes back to the queue untouched, blaming
neither its slot nor itself; a fenced machine leaves the slot's shared parts
to the slot's next machine. The PostgreSQL tests cut real connections with
pg_terminate_backend."""
from __future__ import annotations

import subprocess
import threading
import time

import pytest
from django.db import OperationalError, connection
from django.db.models import Q

from distributor import machine as machine_module
from distributor import reconciler
from distributor.machine import EventBuffer, Lifeline, MachineWorker, run_machine
from distributor.models import Attempt, DistributorConfig, Event, Fenced, Machine, Slot, Target, TaskSet
from distributor.monitors import MonitorGroup
from distributor.queue import claim_next, submit_job
from tests.fake_sessions import ScriptedSession
from tests.inprocess import live_machine, run_launched, variants_file

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_broker")]

on_postgresql = pytest.mark.skipif("connection.vendor != 'postgresql'", reason="cuts real PostgreSQL connections")


def cut_other_connections() -> int:
    """What a PostgreSQL restart or an admin does to every connection but the test's own."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                       " WHERE datname = current_database() AND pid <> pg_backend_pid()")
        return cursor.fetchone()[0]


def heartbeat(machine: Machine):
    return Machine.objects.values_list("heartbeat_at", flat=True).get(pk=machine.pk)


def running_lifeline(machine: Machine) -> Lifeline:
    lifeline = Lifeline(machine, DistributorConfig.get(), threading.Event())
    lifeline.start()
    return lifeline


def wait_for(condition, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def failing(times: int, real):
    """``real``, after raising what a dropped connection raises ``times`` times."""
    calls = []

    def statement(*args, **kwargs):
        calls.append(1)
        if len(calls) <= times:
            raise OperationalError("server closed the connection unexpectedly")
        return real(*args, **kwargs)
    return statement


# -- the lifeline --------------------------------------------------------------


def test_a_lifeline_beats_again_after_database_errors(scripted, monkeypatch):
    machine = live_machine(scripted)
    monkeypatch.setattr(Machine, "beat", failing(2, Machine.beat))
    monkeypatch.setattr(Machine, "orders", failing(1, Machine.orders))
    before = heartbeat(machine)
    lifeline = running_lifeline(machine)
    try:
        assert wait_for(lambda: heartbeat(machine) > before), "it beat once the database answered"
        assert lifeline.is_alive() and not lifeline.fenced and not lifeline.stop_event.is_set()
    finally:
        lifeline.done.set()
        lifeline.join()


def test_a_lifeline_stops_its_machine_before_it_can_be_declared_dead(scripted, monkeypatch):
    """No beat for half the heartbeat timeout: the machine stops (fenced) while
    the reconciler still counts it live, so no second machine gets its slot
    while it works on."""
    config = DistributorConfig.get()
    config.heartbeat_timeout_s = 2
    config.save()
    machine = live_machine(scripted)
    monkeypatch.setattr(Machine, "beat", failing(10**6, Machine.beat))
    lifeline = running_lifeline(machine)
    began = time.monotonic()
    assert lifeline.stop_event.wait(5), "the machine was told to stop"
    assert 0.9 < time.monotonic() - began < 2, "after half the heartbeat timeout, before the whole"
    assert lifeline.fenced
    lifeline.join(2)
    assert not lifeline.is_alive()


@on_postgresql
def test_a_lifeline_whose_connection_is_terminated_reconnects_and_beats(scripted):
    machine = live_machine(scripted)
    lifeline = running_lifeline(machine)
    try:
        assert wait_for(lambda: heartbeat(machine) is not None and lifeline.beat_at > float("-inf"))
        assert cut_other_connections() >= 1
        cut_at = heartbeat(machine)
        assert wait_for(lambda: heartbeat(machine) > cut_at), "it beat on a new connection"
        assert lifeline.is_alive() and not lifeline.fenced and not lifeline.stop_event.is_set()
    finally:
        lifeline.done.set()
        lifeline.join()


# -- a fenced machine and its slot ----------------------------------------------


def test_a_machine_declared_dead_leaves_its_slot_to_the_next_machine(scripted):
    """A tap is named by its slot and a board's power is the slot's: a fenced
    machine kills only its own child, and blames the slot for nothing."""
    Target.objects.filter(pk=scripted.pk).update(settings={"duration_ms": 3000, "process": "7301"})
    submit_job(variants_file(1), target=scripted)
    ScriptedSession.taken_down.clear()
    ScriptedSession.abandoned.clear()
    runner = threading.Thread(target=run_launched)
    runner.start()
    assert wait_for(lambda: TaskSet.objects.filter(state=TaskSet.State.RUNNING).exists())
    first = Machine.objects.get(state=Machine.State.BUSY)
    assert reconciler._declare_dead(first, "no heartbeat (test)", Q())
    runner.join()
    assert first.pk in ScriptedSession.abandoned
    assert first.pk not in ScriptedSession.taken_down
    assert subprocess.run(["pgrep", "-f", "sleep 1000.7301"], capture_output=True).returncode == 1, "its child is gone"
    assert not Slot.objects.filter(failures_in_a_row__gt=0).exists()


def test_a_target_failure_of_a_taskset_taken_away_leaves_no_failure_on_the_slot(scripted):
    submit_job(variants_file(1), target=scripted)
    machine = live_machine(scripted)
    claim = claim_next(machine)
    reconciler._declare_dead(machine, "no heartbeat (test)", Q())
    worker = MachineWorker(machine)
    with pytest.raises(Fenced):
        worker._fail(claim.taskset, claim.tasks, "target silent for 30 s", EventBuffer(claim.taskset),
                     MonitorGroup([], worker.log))
    assert not Slot.objects.filter(failures_in_a_row__gt=0).exists()


# -- a task-set caught by a database error -----------------------------------------


def assert_ran_once_blaming_nobody(job) -> None:
    taskset = job.tasksets.get()
    assert (taskset.state, taskset.attempts, taskset.runs, taskset.losses) == (TaskSet.State.FINISHED, 1, 1, 0)
    assert list(Attempt.objects.values_list("result", flat=True)) == [Attempt.Result.FINISHED]
    assert set(Event.objects.values_list("attempt", flat=True)) == {1}, "the put-back attempt's events are gone"
    assert not Slot.objects.filter(failures_in_a_row__gt=0).exists()
    assert not Machine.objects.filter(state=Machine.State.FAILED).exists()


def test_a_database_error_mid_taskset_puts_it_back_without_blaming_the_slot(scripted, monkeypatch):
    """SQLite's 'database is locked' or a PostgreSQL deadlock while events are
    written: the set runs again from scratch, no try used, no slot failure."""
    Target.objects.filter(pk=scripted.pk).update(settings={"duration_ms": 700})
    job = submit_job(variants_file(1), target=scripted)
    store = Event.store.__func__
    monkeypatch.setattr(Event, "store", classmethod(failing(1, store)))
    run_launched()
    assert_ran_once_blaming_nobody(job)


def test_a_database_error_in_a_claim_is_retried_without_failing_the_machine(scripted, monkeypatch):
    job = submit_job(variants_file(2), target=scripted)
    monkeypatch.setattr(machine_module, "claim_next", failing(1, machine_module.claim_next))
    run_launched()
    assert {(ts.state, ts.attempts) for ts in job.tasksets.all()} == {(TaskSet.State.FINISHED, 1)}
    assert not Machine.objects.filter(state=Machine.State.FAILED).exists()


@on_postgresql
def test_a_taskset_whose_connections_are_terminated_runs_again_on_new_ones(scripted):
    Target.objects.filter(pk=scripted.pk).update(settings={"duration_ms": 1500})
    job = submit_job(variants_file(1), target=scripted)
    DistributorConfig.objects.update(idle_timeout_s=0)
    machine = Machine.objects.get(state=Machine.State.LAUNCHING)
    worker = threading.Thread(target=run_machine, args=(machine.pk,))
    worker.start()
    assert wait_for(lambda: TaskSet.objects.filter(state=TaskSet.State.RUNNING).exists())
    time.sleep(0.3)  # its machine's statements done, the target running
    assert cut_other_connections() >= 2  # the worker's and its lifeline's (and any a finished test left)
    worker.join(30)
    assert not worker.is_alive()
    assert_ran_once_blaming_nobody(job)
