"""Time order in a target's event stream (sessions.events.EventTracker).

Within one task jobs run one after another, each from its release on; a
stream that says otherwise comes from a target whose clock jumped or which
repeated or lost events, and is its failure, never a result. Across tasks
nothing is asked: on one core jobs of different tasks interleave, and a job
that starts long after its release is a late start, a result.
"""
from __future__ import annotations

import random

import pytest

from sessions.errors import TargetFailure
from sessions.events import EventTracker, RawEvent
from tests.peer.model import simulate


def task(task_id: int, period: int, numberofjobs: int = 1, **fields: int) -> dict:
    values = {"id": task_id, "pkg": "idle", "arg1": 1, "priority": task_id, "period": period, "deadline": 0,
              "offset": 0, "numberofjobs": numberofjobs, "criticaltime": 0, "quota": "1M", "caps": 10,
              "cores": 1, "coreoffset": 0}
    return {**values, **fields}


def feed(tasks: list[dict], events: list[tuple[int, str, int]]) -> EventTracker:
    tracker = EventTracker(tasks)
    tracker.feed([RawEvent(*event) for event in events])
    return tracker


@pytest.mark.parametrize("events, cause", [
    pytest.param([(0, "START", 150), (0, "EXIT", 160), (0, "START", 5), (0, "EXIT", 8), (0, "JOBS_DONE", 3)],
                 r"^task 0: job 1 START at 5 ms, before job 0 ended at 160 ms$", id="clock-back-between-jobs"),
    pytest.param([(0, "START", 0), (0, "EXIT", 4), (0, "START", 0), (0, "EXIT", 4), (0, "JOBS_DONE", 4)],
                 r"^task 0: job 1 START at 0 ms, before job 0 ended at 4 ms$", id="repeated-job"),
    pytest.param([(0, "START", 0), (0, "EXIT", 0), (0, "START", 0), (0, "EXIT", 0), (0, "JOBS_DONE", 0)],
                 r"^task 0: job 1 START at 0 ms, before its release at 100 ms$", id="repeated-instant-job"),
    pytest.param([(0, "START", 0), (0, "EXIT", 4), (0, "START", 40), (0, "EXIT", 44)],
                 r"^task 0: job 1 START at 40 ms, before its release at 100 ms$", id="early-start"),
    pytest.param([(0, "START", 0), (0, "EXIT", 4), (0, "NOT_SCHEDULED", 50)],
                 r"^task 0: job 1 NOT_SCHEDULED at 50 ms, before its release at 100 ms$", id="early-not-scheduled"),
    pytest.param([(0, "START", 0), (0, "EXIT", 4), (0, "NOT_SCHEDULED", 3)],
                 r"^task 0: job 1 NOT_SCHEDULED at 3 ms, before job 0 ended at 4 ms$", id="not-scheduled-back"),
    pytest.param([(0, "START", 100), (0, "EXIT_PERIOD", 60)],
                 r"^task 0: job 0 ends before it starts \(EXIT_PERIOD at 60 ms, START at 100 ms\)$",
                 id="exit-before-start"),
    pytest.param([(0, "START", 0), (0, "EXIT", 4), (0, "START", 100), (0, "EXIT", 104), (0, "JOBS_DONE", 103)],
                 r"^task 0: JOBS_DONE at 103 ms, before job 1 ended at 104 ms$", id="jobs-done-before-last-end"),
])
def test_time_going_back_within_a_task_is_the_targets_failure(events, cause):
    """The brief's probe among them: it stored job 1 with start 5 < release
    100, overlapping job 0, as having met its deadline."""
    with pytest.raises(TargetFailure, match=cause):
        feed([task(0, 100, numberofjobs=2)], events)


def test_a_timer_reset_mid_run_is_caught_although_the_job_count_is_right():
    """A loader whose timer restarts at 0 (a soft reboot) goes on with
    plausible-looking time stamps; the next job's release gives it away."""
    events = [(0, "START", 1000), (0, "EXIT", 1003), (0, "START", 10), (0, "EXIT", 13), (0, "JOBS_DONE", 13)]
    with pytest.raises(TargetFailure, match=r"^task 0: job 1 START at 10 ms, before job 0 ended at 1003 ms$"):
        feed([task(0, 100, numberofjobs=2, offset=1000)], events)


def test_a_job_never_starts_before_its_offset():
    with pytest.raises(TargetFailure, match=r"^task 0: job 0 START at 20 ms, before its release at 50 ms$"):
        feed([task(0, 100, offset=50)], [(0, "START", 20)])


def test_a_back_to_back_job_may_start_the_instant_the_previous_one_ended():
    """Period 0: job k+1's release is job k's end; equal times are in order,
    as are a START at its release and a JOBS_DONE at the last end."""
    events = [(0, "START", 7), (0, "EXIT", 9), (0, "START", 9), (0, "EXIT_CRITICAL", 12), (0, "START", 12),
              (0, "EXIT", 12), (0, "JOBS_DONE", 12)]
    tracker = feed([task(0, 0, numberofjobs=3, offset=7, criticaltime=3)], events)
    assert tracker.finished
    assert [(job.release_ms, job.start_ms, job.end_ms) for job in tracker.all_jobs()] == [
        (7, 7, 9), (9, 9, 12), (12, 12, 12)]


def test_preempted_and_late_jobs_of_different_tasks_are_results():
    """Fixed priority on one core: task 1's job is released at 0 but starts
    at 8 behind task 0, is preempted, and misses; task 0's job 1 is released
    at 10 and starts at 10 while task 1's job is still open. Events of
    different tasks may even arrive out of time order with each other."""
    tasks = [task(0, 10, numberofjobs=2), task(1, 12, numberofjobs=1)]
    task_0 = [(0, "START", 0), (0, "EXIT", 8), (0, "START", 10), (0, "EXIT", 18), (0, "JOBS_DONE", 18)]
    task_1 = [(1, "START", 8), (1, "EXIT_PERIOD", 12), (1, "JOBS_DONE", 12)]
    for events in (sorted(task_0 + task_1, key=lambda event: event[2]), task_1 + task_0):
        tracker = feed(tasks, events)
        assert tracker.finished
        assert [(job.task_id, job.release_ms, job.start_ms, job.deadline_met) for job in tracker.all_jobs()] == [
            (0, 0, 0, True), (0, 10, 10, True), (1, 0, 8, False)]


def test_every_schedule_the_peer_simulates_is_accepted():
    """The peer's preemptive fixed-priority model (offsets, back-to-back
    tasks, kills, NOT_SCHEDULED, late starts) never trips the checks."""
    rng = random.Random(4)
    for _ in range(300):
        tasks = [task(i, rng.choice([0, 5, 10, 20, 35]), numberofjobs=rng.randint(1, 6), offset=rng.randint(0, 30),
                      priority=rng.choice([0, 3, 128, 128])) for i in range(rng.randint(1, 5))]
        exec_times = {task["id"]: rng.randint(0, 15) for task in tasks}
        events = simulate(tasks, lambda spec, number: exec_times[spec["id"]] + number % 3)
        tracker = feed(tasks, events)
        assert tracker.finished, tasks
