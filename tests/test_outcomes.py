"""The outcome model (sessions.outcomes) as the measurement applies it.

Every test feeds ``EventTracker`` a hand-written event list, the way a Genode
target would send it, and checks how the task-jobs and the task-set are
judged: when a job misses, which set is ``schedulable``, ``unschedulable`` or
``resource``, and which exits are the target's fault (TargetFailure), never
an outcome.
"""
from __future__ import annotations

import pytest

from sessions.base import TargetFailure
from sessions.events import EventTracker, RawEvent
from sessions.outcomes import JobResult, Miss, Outcome, SetResult, kill, kill_after


def task(task_id: int, period: int, deadline: int = 0, numberofjobs: int = 1, **fields: int) -> dict:
    values = {"id": task_id, "pkg": "idle", "arg1": 1, "priority": 0, "period": period, "deadline": deadline,
              "offset": 0, "numberofjobs": numberofjobs, "criticaltime": 0, "quota": "1M", "caps": 10,
              "cores": 1, "coreoffset": 0}
    return {**values, **fields}


def job_events(task_id: int, *jobs: tuple[int, str, int]) -> list[RawEvent]:
    """START/exit pairs of one task's jobs (start, exit type, end), then JOBS_DONE."""
    events = []
    for start, exit_type, end in jobs:
        if exit_type != "NOT_SCHEDULED":
            events.append(RawEvent(task_id, "START", start))
        events.append(RawEvent(task_id, exit_type, end))
    events.append(RawEvent(task_id, "JOBS_DONE", jobs[-1][2]))
    return events


def measure(tasks: list[dict], events: list[RawEvent]) -> EventTracker:
    tracker = EventTracker(tasks)
    tracker.feed(sorted(events, key=lambda event: event.time_ms))
    assert tracker.finished
    return tracker


def test_it_calls_a_set_whose_jobs_all_end_in_time_schedulable() -> None:
    """The baseline the other tests depart from: ends at or before the
    deadline (the deadline instant itself counts as in time)."""
    tracker = measure([task(0, 10, deadline=4, numberofjobs=2)], job_events(0, (0, "EXIT", 4), (10, "EXIT", 12)))
    assert tracker.result() == SetResult(Outcome.SCHEDULABLE, None, True)
    assert [job.deadline_met for job in tracker.all_jobs()] == [True, True]


def test_a_late_exit_past_a_constrained_deadline_is_a_deadline_miss_at_the_deadline() -> None:
    """A job that ends normally after release + deadline (deadline < period)
    misses although nothing killed it: the issue's 11 sets stored
    ``schedulable``. The miss is dated at the deadline that passed."""
    tasks = [task(0, 10, deadline=3), task(1, 10, numberofjobs=1)]
    events = job_events(0, (2, "EXIT", 5)) + job_events(1, (0, "EXIT", 2))
    result = measure(tasks, events).result()
    assert result.outcome is Outcome.UNSCHEDULABLE
    assert result.first_miss == Miss(task=0, job=0, kind="DEADLINE", at_ms=3)


def test_a_late_exit_keeps_the_set_successful() -> None:
    """The seeds' ``Successful`` (every job ended EXIT) is not the outcome:
    a set whose only miss is a late EXIT is unschedulable yet successful."""
    result = measure([task(0, 10, deadline=3)], job_events(0, (0, "EXIT", 4))).result()
    assert result.outcome is Outcome.UNSCHEDULABLE
    assert result.successful is True


@pytest.mark.parametrize("exit_type", ["OUT_OF_QUOTA", "OUT_OF_CAPS"])
def test_running_out_of_memory_or_caps_in_time_is_a_resource_outcome(exit_type: str) -> None:
    """A memory or capability limit is not a timing result: the job neither
    met nor missed its deadline, and the set did not fit the target."""
    tasks = [task(0, 10, numberofjobs=2), task(1, 10)]
    events = job_events(0, (0, "EXIT", 1), (10, exit_type, 11)) + job_events(1, (1, "EXIT", 3))
    tracker = measure(tasks, events)
    assert tracker.result() == SetResult(Outcome.RESOURCE, None, False)
    assert [(job.task_id, job.job_number, job.deadline_met) for job in tracker.all_jobs()] == [
        (0, 0, True), (0, 1, None), (1, 0, True)]


def test_out_of_quota_beside_a_kill_is_unschedulable() -> None:
    """A timing miss anywhere outranks a resource exit: the set is
    unschedulable and its first miss is the kill."""
    tasks = [task(0, 10), task(1, 5)]
    events = job_events(0, (0, "OUT_OF_QUOTA", 1)) + job_events(1, (1, "EXIT_PERIOD", 5))
    result = measure(tasks, events).result()
    assert result.outcome is Outcome.UNSCHEDULABLE
    assert result.first_miss == Miss(task=1, job=0, kind="EXIT_PERIOD", at_ms=5)


def test_out_of_quota_after_the_deadline_is_a_timing_miss() -> None:
    """Only a resource exit *before* the deadline is neutral: by the time it
    came the job had already missed."""
    tracker = measure([task(0, 10, deadline=2)], job_events(0, (0, "OUT_OF_QUOTA", 3)))
    assert tracker.all_jobs()[0].deadline_met is False
    assert tracker.result().outcome is Outcome.UNSCHEDULABLE


@pytest.mark.parametrize("kill", ["EXIT_PERIOD", "EXIT_CRITICAL", "NOT_SCHEDULED"])
def test_a_killed_or_never_run_job_misses(kill: str) -> None:
    """Killed jobs miss even when the kill comes before the deadline (a
    critical time shorter than it); the miss is dated at the kill."""
    tasks = [task(0, 10, criticaltime=4)]
    result = measure(tasks, job_events(0, (0 if kill != "NOT_SCHEDULED" else 4, kill, 4))).result()
    assert result.outcome is Outcome.UNSCHEDULABLE
    assert result.first_miss == Miss(task=0, job=0, kind=kill, at_ms=4)


@pytest.mark.parametrize("exit_type", ["EXIT_EXTERNAL", "EXIT_ERROR"])
def test_an_external_stop_or_an_error_is_the_targets_failure(exit_type: str) -> None:
    """Neither is a schedulability result: the task-set is retried, so the
    measurement raises instead of judging."""
    tracker = EventTracker([task(0, 10)])
    tracker.feed([RawEvent(0, "START", 0)])
    with pytest.raises(TargetFailure, match=exit_type):
        tracker.feed([RawEvent(0, exit_type, 3)])


def test_a_back_to_back_job_is_released_when_the_previous_one_ends() -> None:
    """Period 0: job k+1's release is job k's end, killed or not, so its
    deadline counts from there, not from its first dispatch."""
    tasks = [task(0, 0, deadline=5, numberofjobs=3, offset=2, criticaltime=6)]
    events = job_events(0, (2, "EXIT", 4), (6, "EXIT_CRITICAL", 10), (11, "EXIT", 14))
    jobs = measure(tasks, events).all_jobs()
    assert [(job.release_ms, job.deadline_abs_ms) for job in jobs] == [(2, 7), (4, 9), (10, 15)]
    assert [job.deadline_met for job in jobs] == [True, False, True]


def test_the_absolute_deadline_is_release_plus_deadline_else_period_else_none() -> None:
    """deadline > 0 wins (longer than the period too); deadline 0 falls back
    to the period; a back-to-back task without a deadline has none and only
    a kill can make it miss."""
    tasks = [task(0, 10, deadline=3, offset=1), task(1, 10, offset=1), task(2, 4, deadline=7, numberofjobs=2),
             task(3, 0, numberofjobs=2)]
    events = (job_events(0, (1, "EXIT", 2)) + job_events(1, (2, "EXIT", 3))
              + job_events(2, (3, "EXIT", 4), (4, "EXIT", 5)) + job_events(3, (5, "EXIT", 50), (50, "EXIT", 99)))
    jobs = measure(tasks, events).all_jobs()
    assert [(job.task_id, job.release_ms, job.deadline_abs_ms) for job in jobs] == [
        (0, 1, 4), (1, 1, 11), (2, 0, 7), (2, 4, 11), (3, 0, None), (3, 50, None)]
    assert all(job.deadline_met for job in jobs)


@pytest.mark.parametrize(("period", "criticaltime", "expected"), [
    (10, 0, (10, "EXIT_PERIOD")),
    (10, 4, (4, "EXIT_CRITICAL")),
    (10, 10, (10, "EXIT_PERIOD")),  # a tie: the period end wins
    (10, 15, (10, "EXIT_PERIOD")),
    (0, 6, (6, "EXIT_CRITICAL")),  # back to back: only the critical time kills
    (0, 0, None),
])
def test_a_job_is_killed_at_the_earlier_of_its_period_end_and_critical_time(period, criticaltime, expected) -> None:
    """The one kill rule SimSo and the analysis's simulation both take."""
    spec = task(0, period, criticaltime=criticaltime)
    assert kill(spec) == expected
    assert kill_after(spec) == (None if expected is None else expected[0])


def test_the_first_miss_is_the_earliest_deadline_that_passed() -> None:
    """Not the first job to end: a later-ending job whose deadline passed
    earlier is the first miss."""
    tasks = [task(0, 20, deadline=2), task(1, 20, deadline=10)]
    events = job_events(1, (0, "EXIT", 11)) + job_events(0, (11, "EXIT", 12))
    assert measure(tasks, events).result().first_miss == Miss(task=0, job=0, kind="DEADLINE", at_ms=2)


def test_a_job_result_knows_its_response_and_its_miss() -> None:
    """The per-job row: response = end − release; no miss when met."""
    late = JobResult(0, 0, release_ms=5, start_ms=6, end_ms=9, exit_type="EXIT", deadline_abs_ms=8,
                     deadline_met=False)
    assert late.response_ms == 4
    assert late.miss == Miss(0, 0, "DEADLINE", 8)
    assert JobResult(0, 1, 10, 10, 11, "EXIT", 18, True).miss is None
