"""From a target's event stream to task-jobs, the same for every kind.

A Genode target reports START when a job begins and one of the exit types
when it ends (NOT_SCHEDULED stands alone: a job that never ran), then
JOBS_DONE when a task has run all its jobs. A task-set is finished when every
task reported JOBS_DONE with exactly ``numberofjobs`` jobs. Anything else —
an unknown task id, an exit without a start, EXIT_ERROR, a wrong job count —
is the target's fault, raised as TargetFailure, never a result. So is
EXIT_EXTERNAL: a job stopped from outside, which nobody here asked for (an
operator's kill puts the whole task-set back before its events matter).

So is time running backwards within one task. A task's jobs run one after
another, each from its release on: a START (or NOT_SCHEDULED) earlier than
the task's previous job's end or than its own release, an exit earlier than
its START, a JOBS_DONE earlier than the last job's end — each means the
target's clock jumped (a timer wrap, a reset after a soft reboot of the
loader) or it repeated or reordered events, and storing such jobs would store
garbage with a verdict. Nothing is asked across tasks: on one core jobs of
different tasks interleave freely, and a job that starts long after its
release is a late start (perhaps a miss), a result. No tolerance is allowed:
time stamps and releases are both whole ms of the same clock, so a job the
loader started at its release is stamped at it or later.

Each task-job is judged by the outcome model (``sessions.outcomes``) as it
closes: its release, absolute deadline and whether it met it.
"""
from __future__ import annotations

from typing import NamedTuple

from sessions.errors import TargetFailure
from sessions.outcomes import INFRASTRUCTURE_EXITS, RESULT_EXITS, JobResult, SetResult, judge_job, judge_set

EVENT_TYPES = RESULT_EXITS | INFRASTRUCTURE_EXITS | {"START", "JOBS_DONE"}


class RawEvent(NamedTuple):
    task_id: int
    type: str
    time_ms: int


class EventTracker:
    def __init__(self, tasks: list[dict]):
        self.tasks = {task["id"]: task for task in tasks}
        self.jobs: dict[int, list[JobResult]] = {task_id: [] for task_id in self.tasks}
        self.open_start: dict[int, int] = {}
        self.done: set[int] = set()

    @property
    def finished(self) -> bool:
        return len(self.done) == len(self.tasks)

    def feed(self, events: list[RawEvent]) -> None:
        for event in events:
            self._feed_one(event)

    def _feed_one(self, event: RawEvent) -> None:
        task_id, kind, time_ms = event
        if task_id not in self.tasks:
            raise TargetFailure(f"event {kind} for unknown task id {task_id}")
        if kind not in EVENT_TYPES:
            raise TargetFailure(f"unknown event type {kind!r} for task {task_id}")
        if kind in INFRASTRUCTURE_EXITS:
            raise TargetFailure(f"target reported {kind} for task {task_id} at {time_ms} ms")
        if task_id in self.done:
            raise TargetFailure(f"event {kind} for task {task_id} after its JOBS_DONE")
        if kind == "START":
            if task_id in self.open_start:
                raise TargetFailure(f"task {task_id}: START while its previous job is still running")
            self._check_job_begins_in_order(task_id, kind, time_ms)
            self.open_start[task_id] = time_ms
        elif kind == "NOT_SCHEDULED":
            if task_id in self.open_start:
                raise TargetFailure(f"task {task_id}: NOT_SCHEDULED while a job is running")
            self._check_job_begins_in_order(task_id, kind, time_ms)
            self._close(task_id, time_ms, time_ms, kind)
        elif kind in RESULT_EXITS:
            if task_id not in self.open_start:
                raise TargetFailure(f"task {task_id}: {kind} without a START")
            self._close(task_id, self.open_start.pop(task_id), time_ms, kind)
        else:  # JOBS_DONE
            expected = self.tasks[task_id]["numberofjobs"]
            count = len(self.jobs[task_id])
            if task_id in self.open_start or count != expected:
                raise TargetFailure(f"task {task_id}: JOBS_DONE after {count} jobs, expected {expected}")
            self._check_not_before_previous_end(task_id, kind, time_ms)
            self.done.add(task_id)

    def _check_job_begins_in_order(self, task_id: int, kind: str, time_ms: int) -> None:
        """A job (START, or NOT_SCHEDULED for one that never ran) begins
        neither before the task's previous job ended nor before its release."""
        number = len(self.jobs[task_id])
        self._check_not_before_previous_end(task_id, f"job {number} {kind}", time_ms)
        release = self._release(self.tasks[task_id], number)
        if time_ms < release:
            raise TargetFailure(f"task {task_id}: job {number} {kind} at {time_ms} ms, "
                                f"before its release at {release} ms")

    def _check_not_before_previous_end(self, task_id: int, what: str, time_ms: int) -> None:
        jobs = self.jobs[task_id]
        if jobs and time_ms < jobs[-1].end_ms:
            previous = jobs[-1]
            raise TargetFailure(f"task {task_id}: {what} at {time_ms} ms, before job {previous.job_number} "
                                f"ended at {previous.end_ms} ms")

    def _close(self, task_id: int, start_ms: int, end_ms: int, exit_type: str) -> None:
        task = self.tasks[task_id]
        number = len(self.jobs[task_id])
        if number >= task["numberofjobs"]:
            raise TargetFailure(f"task {task_id}: more than {task['numberofjobs']} jobs")
        if end_ms < start_ms:
            raise TargetFailure(f"task {task_id}: job {number} ends before it starts "
                                f"({exit_type} at {end_ms} ms, START at {start_ms} ms)")
        self.jobs[task_id].append(judge_job(task, number, self._release(task, number), start_ms, end_ms, exit_type))

    def _release(self, task: dict, number: int) -> int:
        """Periodic: offset + k·period; back to back: when the previous job ended."""
        if task["period"] or number == 0:
            return task["offset"] + number * task["period"]
        return self.jobs[task["id"]][number - 1].end_ms

    def all_jobs(self) -> list[JobResult]:
        return [job for task_id in sorted(self.jobs) for job in self.jobs[task_id]]

    def result(self) -> SetResult:
        """The task-set's outcome under the outcome model."""
        return judge_set(self.all_jobs())
