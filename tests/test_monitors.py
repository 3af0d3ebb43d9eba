"""Monitors are found by dotted path in settings.DISTRIBUTOR_MONITORS, and a
machine calls each hook: start, event, finish, stop (a kill, a cancel now)
and bad (issue 17, point 4)."""
from __future__ import annotations

import threading
import time

import pytest
from django.core.exceptions import ImproperlyConfigured, ValidationError

from distributor import reconciler
from distributor.models import Target, TaskSet
from distributor.monitors import MONITORS, LoggingMonitor, Monitor
from distributor.queue import submit_job
from tests.conftest import taskset_file
from tests.inprocess import run_launched, variants_file

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_broker")]
CALLS: list[tuple[str, int, str]] = []  # (hook, task-set id, its state then): machines run in threads here


class RecordingMonitor(Monitor):
    name = "recording"

    def taskset_start(self, taskset, tasks):
        CALLS.append(("start", taskset.pk, taskset.state))

    def taskset_event(self, taskset, events):
        CALLS.append(("event", taskset.pk, taskset.state))

    def taskset_finish(self, taskset):
        CALLS.append(("finish", taskset.pk, taskset.state))

    def taskset_stop(self, taskset):
        CALLS.append(("stop", taskset.pk, taskset.state))

    def taskset_bad(self, taskset):
        CALLS.append(("bad", taskset.pk, taskset.state))


class BrokenMonitor(Monitor):
    name = "broken"

    def taskset_start(self, taskset, tasks):
        raise RuntimeError("a monitor's bug")


@pytest.fixture(autouse=True)
def recording(settings):
    settings.DISTRIBUTOR_MONITORS = {"logging": "distributor.monitors.LoggingMonitor",
                                     "recording": "tests.test_monitors.RecordingMonitor",
                                     "broken": "tests.test_monitors.BrokenMonitor"}
    CALLS.clear()
    yield
    CALLS.clear()


def hooks_of(taskset_id: int) -> list[str]:
    return [hook for hook, pk, _ in CALLS if pk == taskset_id]


def test_monitors_come_from_the_setting_by_dotted_path(settings):
    assert MONITORS["recording"] is RecordingMonitor and MONITORS["logging"] is LoggingMonitor
    settings.DISTRIBUTOR_MONITORS = {"logging": "distributor.monitors.LoggingMonitor"}
    assert list(MONITORS) == ["logging"]
    settings.DISTRIBUTOR_MONITORS = {"x": "tests.test_monitors.Nowhere"}
    with pytest.raises(ImproperlyConfigured, match=r"DISTRIBUTOR_MONITORS\['x'\]"):
        MONITORS["x"]
    settings.DISTRIBUTOR_MONITORS = {"x": "tests.test_monitors.CALLS"}
    with pytest.raises(ImproperlyConfigured, match="not a Monitor subclass"):
        MONITORS["x"]


def test_a_job_may_name_only_a_configured_monitor(scripted):
    with pytest.raises(ValidationError) as refused:
        submit_job(variants_file(1), target=scripted, monitors=["pager"])
    assert "known: broken, logging, recording" in str(refused.value)


def test_start_event_finish_and_bad_fire_and_a_broken_monitor_harms_nothing(scripted):
    job = submit_job(taskset_file([{"pkg": "hey", "period": 10, "numberofjobs": 2}]), target=scripted,
                     monitors=["recording", "broken"])
    crashing = submit_job(taskset_file([{"pkg": "crash"}]), target=scripted, tries=1, monitors=["recording"])
    run_launched()
    finished, bad = job.tasksets.get(), crashing.tasksets.get()
    assert (finished.state, bad.state) == (TaskSet.State.FINISHED, TaskSet.State.BAD)
    hooks = hooks_of(finished.pk)
    assert hooks[0] == "start" and hooks[-1] == "finish" and "event" in hooks
    assert ("finish", finished.pk, "finished") in CALLS
    assert hooks_of(bad.pk) == ["start", "bad"] and ("bad", bad.pk, "bad") in CALLS


def _stopped_while_running(slow: Target, stop) -> TaskSet:
    job = submit_job(variants_file(1), target=slow, monitors=["recording"])
    runner = threading.Thread(target=run_launched)
    runner.start()
    deadline = time.monotonic() + 10
    while not job.tasksets.filter(state=TaskSet.State.RUNNING).exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    stop(job)
    runner.join()
    return job.tasksets.get()


def test_stop_fires_when_a_kill_puts_a_running_taskset_back(db):
    slow = Target.objects.create(name="slow", kind="scripted", settings={"duration_ms": 5000})
    taskset = _stopped_while_running(slow, lambda job: reconciler.kill_all())
    assert taskset.state == TaskSet.State.QUEUED
    assert hooks_of(taskset.pk) == ["start", "stop"] and CALLS[-1][2] == "queued"


def test_stop_fires_when_a_cancel_now_ends_a_running_taskset(db):
    slow = Target.objects.create(name="slow", kind="scripted", settings={"duration_ms": 5000})
    taskset = _stopped_while_running(slow, lambda job: job.cancel(now=True))
    assert taskset.state == TaskSet.State.CANCELLED
    assert hooks_of(taskset.pk) == ["start", "stop"] and CALLS[-1][2] == "cancelled"
