"""The outcome model: when a job misses, and what a task-set's run means.

Written once and used by everything that judges a schedule: the measurement
(a target's events become task-jobs in ``sessions.events``), both simulations
(SimSo's events go through the same measurement; the analysis's own
simulation calls ``judge_job``) and the analysis (its tests check the same
deadlines). ``docs/outcomes.md`` is the user's version of this page.

Per job (times in ms from the start of the task-set):

* **release** — ``offset + k·period``; a back-to-back task (``period`` 0)
  releases job 0 at ``offset`` and job k+1 the moment job k ends;
* **absolute deadline** — release + ``deadline``, or + ``period`` when
  ``deadline`` is 0; none when both are 0 (such a job only misses if killed).
  It is also the deadline the scheduler orders the priority-128 band by;
* **kill time** — release + the smaller positive of ``period`` and
  ``criticaltime``: the loader kills a job still running then (EXIT_PERIOD
  at the period end, EXIT_CRITICAL at the critical time, EXIT_PERIOD when
  both fall together; NOT_SCHEDULED if it never ran). ``kill`` gives both;
* **deadline met** — the job ended EXIT at or before its absolute deadline.
  A killed or never-run job missed. A job that ran out of memory or
  capabilities (OUT_OF_QUOTA, OUT_OF_CAPS) before its deadline neither met
  nor missed it (``None``): that is not a timing result.

Per task-set: ``schedulable`` when every job met its deadline,
``unschedulable`` on any timing miss, ``resource`` when OUT_OF_QUOTA or
OUT_OF_CAPS ended a job and nothing missed. EXIT_ERROR and EXIT_EXTERNAL (a
stop nobody here asked for), silence and garbage are infrastructure failures,
raised by the measurement and never an outcome. The seeds' ``Successful``
(every job ended EXIT) is kept beside it.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Iterable, Mapping

KILLS = frozenset({"EXIT_PERIOD", "EXIT_CRITICAL", "NOT_SCHEDULED"})
RESOURCE_EXITS = frozenset({"OUT_OF_QUOTA", "OUT_OF_CAPS"})
INFRASTRUCTURE_EXITS = frozenset({"EXIT_ERROR", "EXIT_EXTERNAL"})
RESULT_EXITS = frozenset({"EXIT"}) | KILLS | RESOURCE_EXITS
DEADLINE_MISS = "DEADLINE"  # the kind of a miss by a job that ended EXIT too late


class Outcome(str, Enum):
    SCHEDULABLE = "schedulable"
    UNSCHEDULABLE = "unschedulable"
    RESOURCE = "resource"


def relative_deadline(task: Mapping) -> int | None:
    """``deadline``, else ``period``, else none: both the miss threshold and
    the order of the priority-128 band."""
    return int(task.get("deadline") or 0) or int(task["period"]) or None


def kill(task: Mapping) -> tuple[int, str] | None:
    """How long after its release a job still running is killed, and with
    which exit type; None if never. The earlier of the period end
    (EXIT_PERIOD) and the critical time (EXIT_CRITICAL), the positive ones;
    on a tie the period end wins. The one rule SimSo's kills and the
    analysis's simulation both follow."""
    period, critical = int(task["period"]), int(task.get("criticaltime") or 0)
    if period > 0 and not 0 < critical < period:
        return period, "EXIT_PERIOD"
    if critical > 0:
        return critical, "EXIT_CRITICAL"
    return None


def kill_after(task: Mapping) -> int | None:
    """How long after its release a job is killed, if ever."""
    killed = kill(task)
    return None if killed is None else killed[0]


def must_end_within(task: Mapping) -> int | None:
    """The time after its release by which a job must have ended to meet its
    deadline and not be killed: the smaller of the two above."""
    times = [t for t in (relative_deadline(task), kill_after(task)) if t is not None]
    return min(times, default=None)


def expected_span_ms(tasks: Iterable[Mapping]) -> int | None:
    """How long a task-set should take by its own task model: the latest
    ``offset + numberofjobs · period`` of its tasks. A back-to-back task
    (period 0) counts each job at most its deadline or kill time; one with
    neither has no bound, and then neither has the task-set (None)."""
    span = 0
    for task in tasks:
        step = int(task["period"]) or must_end_within(task)
        if step is None:
            return None
        span = max(span, int(task.get("offset") or 0) + int(task.get("numberofjobs") or 1) * step)
    return span


@dataclass(frozen=True)
class Miss:
    """Where a task-set first missed: the miss's instant is the deadline that
    passed (or the kill, if that came first)."""

    task: int
    job: int
    kind: str  # DEADLINE_MISS, or the exit type of a kill
    at_ms: int

    def as_dict(self) -> dict:
        return {"task": self.task, "job": self.job, "kind": self.kind, "at_ms": self.at_ms}


@dataclass(frozen=True)
class JobResult:
    """One task-job as measured (or simulated), judged."""

    task_id: int
    job_number: int
    release_ms: int
    start_ms: int
    end_ms: int
    exit_type: str
    deadline_abs_ms: int | None
    deadline_met: bool | None

    @property
    def response_ms(self) -> int:
        return self.end_ms - self.release_ms

    @property
    def miss(self) -> Miss | None:
        if self.deadline_met is not False:
            return None
        kind = self.exit_type if self.exit_type in KILLS else DEADLINE_MISS
        at = self.end_ms if self.deadline_abs_ms is None else min(self.end_ms, self.deadline_abs_ms)
        return Miss(self.task_id, self.job_number, kind, at)


def judge_job(task: Mapping, job_number: int, release_ms: int, start_ms: int, end_ms: int,
              exit_type: str) -> JobResult:
    """A job's absolute deadline and whether it met it."""
    relative = relative_deadline(task)
    deadline = None if relative is None else release_ms + relative
    late = deadline is not None and end_ms > deadline
    if exit_type in KILLS or late:
        met = False
    elif exit_type in RESOURCE_EXITS:
        met = None
    else:
        met = True
    return JobResult(int(task["id"]), job_number, release_ms, start_ms, end_ms, exit_type, deadline, met)


@dataclass(frozen=True)
class SetResult:
    outcome: Outcome
    first_miss: Miss | None
    successful: bool  # the seeds' label: every job ended EXIT


def judge_set(jobs: Iterable[JobResult]) -> SetResult:
    """The task-set's outcome from its judged jobs."""
    first: Miss | None = None
    resource = False
    successful = True
    for job in jobs:
        successful = successful and job.exit_type == "EXIT"
        resource = resource or job.exit_type in RESOURCE_EXITS
        miss = job.miss
        if miss is not None and (first is None or (miss.at_ms, miss.task, miss.job) < (first.at_ms, first.task, first.job)):
            first = miss
    if first is not None:
        outcome = Outcome.UNSCHEDULABLE
    else:
        outcome = Outcome.RESOURCE if resource else Outcome.SCHEDULABLE
    return SetResult(outcome, first, successful)
