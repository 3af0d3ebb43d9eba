"""The peer's wire format and execution model, kept apart from its sockets.

``simulate`` is a plain function so that tests (and the engine's acceptance
tests) can compute what a peer will send for a task-set without a socket.
"""
from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Union

from defusedxml import ElementTree as SafeET

ExecTime = Union[float, Callable[[dict, int], float]]
Event = tuple[int, str, int]  # (task id, type, time stamp in ms)


# -- the wire format -----------------------------------------------------------


def events_xml(events: list[Event]) -> bytes:
    """One event message's body, NUL included (the size word counts it)."""
    parts = [f'<event task-id="{task_id}" type="{kind}" time-stamp="{at}"/>' for task_id, kind, at in events]
    return ("<profile><events>" + "".join(parts) + "</events></profile>\0").encode("ascii")


def frame(body: bytes) -> bytes:
    return struct.pack("<I", len(body)) + body


INT_FIELDS = ("id", "priority", "deadline", "period", "offset", "numberofjobs", "criticaltime",
              "caps", "cores", "coreoffset")


def parse_taskset(text: str) -> list[dict]:
    """The tasks of a SEND_DESCS description; ValueError names what is wrong."""
    try:
        root = SafeET.fromstring(text, forbid_dtd=True)
    except Exception as error:  # noqa: BLE001 - defusedxml raises several kinds
        raise ValueError(f"not well-formed XML ({error})") from None
    if root.tag != "taskset":
        raise ValueError(f"root element <{root.tag}>, expected <taskset>")
    tasks = [_parse_task(element, index) for index, element in enumerate(root)]
    if not tasks:
        raise ValueError("a task-set without tasks")
    return tasks


def _parse_task(element, index: int) -> dict:
    if element.tag != "periodictask":
        raise ValueError(f"element <{element.tag}>, expected <periodictask>")
    task = {child.tag: (child.text or "").strip() for child in element if child.tag != "config"}
    config = element.find("config")
    task["arg1"] = (config.findtext("arg1") or "0").strip() if config is not None else "0"
    try:
        for name in (*INT_FIELDS, "arg1"):
            task[name] = int(task[name])
    except (KeyError, ValueError) as error:
        raise ValueError(f"task {index}: missing or non-integer field {error}") from None
    if task["id"] != index:
        raise ValueError(f"task {index} has id {task['id']}; ids must be 0..n-1 in order")
    if not task.get("pkg"):
        raise ValueError(f"task {index} has no <pkg>")
    return task


# -- the execution model -------------------------------------------------------


@dataclass
class _Job:
    task: dict
    number: int
    release: int
    remaining: int
    kill_at: int | None
    started: int | None = None

    def key(self) -> tuple:
        """Fixed priority, 0 highest; equal priorities (128 = by deadline) by
        absolute deadline, then task id."""
        relative = self.task["deadline"] or self.task["period"]
        deadline = self.release + relative if relative else float("inf")
        return (self.task["priority"], deadline, self.task["id"])


def simulate(tasks: list[dict], exec_time: ExecTime = 1, quota_needed: int = 0) -> list[Event]:
    """Events of a preemptive fixed-priority run on one core.

    A task whose RAM ``quota`` is below ``quota_needed`` bytes runs out of
    it as soon as a job starts: OUT_OF_QUOTA at that instant, as a loader
    that cannot give the binary its memory reports it.

    Job k of a periodic task is released at offset + k·period and killed at
    its period end (EXIT_PERIOD, or NOT_SCHEDULED if it never ran); a task
    with period 0 runs its jobs back to back from its offset. Time is in
    whole ms, so the result is exact and reproducible.
    """
    sim = _Simulation(tasks, exec_time, quota_needed)
    return sim.run()


def quota_bytes(quota: str) -> int:
    """"5M" → 5·2^20 bytes (K, M, G suffixes, or plain bytes)."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    return int(quota[:-1]) * units[quota[-1]] if quota[-1:] in units else int(quota)


class _Simulation:
    def __init__(self, tasks: list[dict], exec_time: ExecTime, quota_needed: int = 0):
        self.tasks = tasks
        self.exec_time = exec_time
        self.starved = {task["id"] for task in tasks if quota_bytes(task.get("quota") or "0") < quota_needed}
        self.next_release: dict[int, int | None] = {task["id"]: task["offset"] for task in tasks}
        self.begun = {task["id"]: 0 for task in tasks}
        self.ended = {task["id"]: 0 for task in tasks}
        self.active: dict[int, _Job] = {}
        self.events: list[Event] = []

    def run(self) -> list[Event]:
        now = 0
        while True:
            self._release(now)
            if not self.active:
                upcoming = [at for at in self.next_release.values() if at is not None]
                if not upcoming:
                    return self.events
                now = min(upcoming)
                continue
            job = min(self.active.values(), key=_Job.key)
            if job.started is None:
                job.started = now
                self.events.append((job.task["id"], "START", now))
                if job.task["id"] in self.starved:
                    self._end(job, "OUT_OF_QUOTA", now)
                    continue
            later = now + self._slice(job, now)
            job.remaining -= later - now
            now = later
            self._finish(now)

    def _cost(self, task: dict, number: int) -> int:
        value = self.exec_time(task, number) if callable(self.exec_time) else self.exec_time
        return max(0, int(round(value)))

    def _release(self, now: int) -> None:
        for task in self.tasks:
            task_id = task["id"]
            at = self.next_release[task_id]
            if at is None or at > now or task_id in self.active:
                continue
            number = self.begun[task_id]
            period = task["period"]
            self.active[task_id] = _Job(task, number, at, self._cost(task, number), at + period if period else None)
            self.begun[task_id] = number + 1
            more = self.begun[task_id] < task["numberofjobs"]
            self.next_release[task_id] = at + period if (more and period) else None

    def _slice(self, job: _Job, now: int) -> int:
        """How long ``job`` runs before something changes."""
        moments = [now + job.remaining]
        moments += [at for at in self.next_release.values() if at is not None and at > now]
        moments += [other.kill_at for other in self.active.values() if other.kill_at is not None]
        return max(0, min(moments) - now)

    def _finish(self, now: int) -> None:
        for task_id, job in list(self.active.items()):
            if job.started is not None and job.remaining <= 0:
                self._end(job, "EXIT", now)
            elif job.kill_at is not None and job.kill_at <= now:
                self._end(job, "EXIT_PERIOD" if job.started is not None else "NOT_SCHEDULED", now)

    def _end(self, job: _Job, kind: str, now: int) -> None:
        task = job.task
        task_id = task["id"]
        del self.active[task_id]
        self.events.append((task_id, kind, now))
        self.ended[task_id] += 1
        if self.ended[task_id] == task["numberofjobs"]:
            self.events.append((task_id, "JOBS_DONE", now))
        elif not task["period"]:
            self.next_release[task_id] = now


def peer_taskjobs(events: list[tuple]) -> list[tuple]:
    """(task id, job number, start, end, exit type) of every job in a peer's events."""
    running, numbers, jobs = {}, Counter(), []
    for task_id, kind, at in events:
        if kind == "START":
            running[task_id] = at
        elif kind != "JOBS_DONE":
            start = at if kind == "NOT_SCHEDULED" else running.pop(task_id)
            jobs.append((task_id, numbers[task_id], start, at, kind))
            numbers[task_id] += 1
    return sorted(jobs)
