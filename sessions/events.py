"""From a target's event stream to task-jobs, the same for every kind.

A Genode target reports START when a job begins and one of the exit types
when it ends (NOT_SCHEDULED stands alone: a job that never ran), then
JOBS_DONE when a task has run all its jobs. A task-set is finished when every
task reported JOBS_DONE with exactly ``numberofjobs`` jobs. Anything else —
an unknown task id, an exit without a start, EXIT_ERROR, a wrong job count —
is the target's fault, raised as TargetFailure, never a result.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

EXIT_TYPES = frozenset({
    "EXIT", "EXIT_CRITICAL", "EXIT_PERIOD", "EXIT_EXTERNAL",
    "OUT_OF_QUOTA", "OUT_OF_CAPS", "NOT_SCHEDULED",
})
EVENT_TYPES = EXIT_TYPES | {"START", "EXIT_ERROR", "JOBS_DONE"}


class RawEvent(NamedTuple):
    task_id: int
    type: str
    time_ms: int


@dataclass
class FinishedJob:
    task_id: int
    job_number: int
    release_ms: int | None
    start_ms: int
    end_ms: int
    exit_type: str


class EventTracker:
    def __init__(self, tasks: list[dict]):
        self.tasks = {task["id"]: task for task in tasks}
        self.jobs: dict[int, list[FinishedJob]] = {task_id: [] for task_id in self.tasks}
        self.open_start: dict[int, int] = {}
        self.done: set[int] = set()

    @property
    def finished(self) -> bool:
        return len(self.done) == len(self.tasks)

    def feed(self, events: list[RawEvent]) -> None:
        for event in events:
            self._feed_one(event)

    def _feed_one(self, event: RawEvent) -> None:
        from sessions.base import TargetFailure

        task_id, kind, time_ms = event
        if task_id not in self.tasks:
            raise TargetFailure(f"event {kind} for unknown task id {task_id}")
        if kind not in EVENT_TYPES:
            raise TargetFailure(f"unknown event type {kind!r} for task {task_id}")
        if kind == "EXIT_ERROR":
            raise TargetFailure(f"target reported EXIT_ERROR for task {task_id} at {time_ms} ms")
        if task_id in self.done:
            raise TargetFailure(f"event {kind} for task {task_id} after its JOBS_DONE")
        if kind == "START":
            if task_id in self.open_start:
                raise TargetFailure(f"task {task_id}: START while its previous job is still running")
            self.open_start[task_id] = time_ms
        elif kind == "NOT_SCHEDULED":
            if task_id in self.open_start:
                raise TargetFailure(f"task {task_id}: NOT_SCHEDULED while a job is running")
            self._close(task_id, time_ms, time_ms, kind)
        elif kind in EXIT_TYPES:
            if task_id not in self.open_start:
                raise TargetFailure(f"task {task_id}: {kind} without a START")
            self._close(task_id, self.open_start.pop(task_id), time_ms, kind)
        else:  # JOBS_DONE
            expected = self.tasks[task_id]["numberofjobs"]
            count = len(self.jobs[task_id])
            if task_id in self.open_start or count != expected:
                raise TargetFailure(f"task {task_id}: JOBS_DONE after {count} jobs, expected {expected}")
            self.done.add(task_id)

    def _close(self, task_id: int, start_ms: int, end_ms: int, exit_type: str) -> None:
        from sessions.base import TargetFailure

        task = self.tasks[task_id]
        number = len(self.jobs[task_id])
        if number >= task["numberofjobs"]:
            raise TargetFailure(f"task {task_id}: more than {task['numberofjobs']} jobs")
        if end_ms < start_ms:
            raise TargetFailure(f"task {task_id}: job {number} ends before it starts")
        release = task["offset"] + number * task["period"] if task["period"] else None
        self.jobs[task_id].append(FinishedJob(task_id, number, release, start_ms, end_ms, exit_type))

    def all_jobs(self) -> list[FinishedJob]:
        return [job for task_id in sorted(self.jobs) for job in self.jobs[task_id]]

    @property
    def schedulable(self) -> bool:
        """The seeds' label: every job of every task ended with EXIT."""
        return all(job.exit_type == "EXIT" for job in self.all_jobs())
