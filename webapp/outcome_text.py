"""A finished task-set's measured outcome and first miss in words, for its
page and its Gantt chart (the outcome model is ``sessions.outcomes``; the
stored first miss is ``TaskSet.first_miss``)."""
from __future__ import annotations

from sessions.outcomes import DEADLINE_MISS, Miss

EXPLANATIONS = {
    "schedulable": "Every job met its deadline.",
    "unschedulable": "A timing miss: a job ended after its deadline, was killed at its period end or critical time, "
                     "or never ran.",
    "resource": "A job ran out of memory quota or capabilities and no job missed its deadline: the set did not fit "
                "the target, which says nothing about its schedulability.",
}
NO_OUTCOME = {
    "queued": "No result yet: it waits for a machine.",
    "running": "No result yet: it is running.",
    "bad": "No result: the target failed on it (see the attempts below); a failure of the infrastructure is never "
           "an outcome.",
    "cancelled": "No result: cancelled.",
}
HOW = {
    DEADLINE_MISS: "ended after its deadline",
    "EXIT_PERIOD": "was still running at its period end and was killed (EXIT_PERIOD)",
    "EXIT_CRITICAL": "was still running at its critical time and was killed (EXIT_CRITICAL)",
    "NOT_SCHEDULED": "never ran (NOT_SCHEDULED)",
}


def explain(state: str, outcome: str) -> str:
    return EXPLANATIONS.get(outcome, "") if outcome else NO_OUTCOME.get(state, "")


def describe(miss: Miss) -> str:
    """E.g. "task 2, job 0: ended after its deadline at 39 ms"; the time is the
    miss's instant: the deadline that passed, or the kill if it came first."""
    how = HOW.get(miss.kind, f"ended {miss.kind}")
    if miss.kind == DEADLINE_MISS:
        return f"task {miss.task}, job {miss.job}: {how} at {miss.at_ms} ms"
    return f"task {miss.task}, job {miss.job}: {how}, missed at {miss.at_ms} ms"
