"""Every example of issue 12 as a regression test.

Each test is a task-set on which the analysis before issue 12 (commit
5717f06) contradicted itself or SimSo: a verdict called exact that a run
refutes, a sufficient test's yes on a set that misses, SimSo and the analysis
partitioning cores differently, a miss the measurement did not count. Where
it helps, the set also goes through SimSo and the measurement
(``sessions.simso.simulate`` → ``EventTracker``), the reference for what
actually happens under the outcome model.
"""
from __future__ import annotations

import math
from fractions import Fraction

from distributor.analysis import analyse, simulate_jobs
from sessions.events import EventTracker
from sessions.outcomes import JobResult, Miss, Outcome, SetResult
from sessions.simso import simulate
from tests.arg_is_time import ArgIsTime

EDF = 128


ETM = ArgIsTime()


def task(task_id: int, c: int, period: int, priority: int, **fields: int) -> dict:
    values = {"id": task_id, "pkg": "idle", "arg1": c, "period": period, "priority": priority, "deadline": 0,
              "offset": 0, "numberofjobs": 6, "criticaltime": 0, "quota": "1M", "caps": 10, "cores": 1,
              "coreoffset": 0}
    return {**values, **fields}


def measured(tasks: list[dict]) -> tuple[SetResult, list[JobResult]]:
    """What SimSo does with the set, judged by the measurement."""
    tracker = EventTracker(tasks)
    tracker.feed(simulate(tasks, ETM))
    assert tracker.finished
    return tracker.result(), tracker.all_jobs()


def never_exactly_wrong(analysis: dict, schedulable: bool) -> None:
    """The rule: no verdict called exact differs from the run, and no test
    says yes where the run shows a miss."""
    if analysis["verdict_exact"]:
        assert analysis["verdict"] is schedulable
    for name in ("rta", "edf", "simulation"):
        if analysis[name]["exact"]:
            assert analysis[name]["verdict"] is schedulable, name
    if not schedulable:
        for name in ("rta", "edf", "liu_layland", "hyperbolic"):
            assert analysis[name]["verdict"] is not True, name
        assert analysis["verdict"] is not True


def test_edf_with_a_critical_time_before_the_deadline_is_not_schedulable_exact() -> None:
    """τ0 (C=2, T=10, critical time 3), τ1 (C=2, T=5), both 128. The scheduler
    orders by the period (10, 5), so τ1 runs [0,2) and τ0 [2,3) is killed at 3.
    The old demand test used min(deadline, period, criticaltime) = 3 as if the
    scheduler did, and said "schedulable, exact"."""
    tasks = [task(0, 2, 10, EDF, criticaltime=3, numberofjobs=2), task(1, 2, 5, EDF, numberofjobs=4)]
    analysis = analyse(tasks, ETM)
    assert not (analysis["edf"]["verdict"] is True and analysis["edf"]["exact"])
    assert analysis["verdict"] is False
    result, _ = measured(tasks)
    assert result.outcome is Outcome.UNSCHEDULABLE
    assert result.first_miss == Miss(task=0, job=0, kind="EXIT_CRITICAL", at_ms=3)
    never_exactly_wrong(analysis, schedulable=False)


def test_edf_with_a_deadline_longer_than_the_period_is_not_schedulable_exact() -> None:
    """τ0 (C=1, T=2, deadline 100), τ1 (C=3, T=8), both 128. τ1's deadline 8
    comes first, so τ1 runs [0,3) and τ0's first job is never run before its
    period ends at 2 (NOT_SCHEDULED). The old demand test took D = 2."""
    tasks = [task(0, 1, 2, EDF, deadline=100, numberofjobs=4), task(1, 3, 8, EDF, numberofjobs=1)]
    analysis = analyse(tasks, ETM)
    assert not (analysis["edf"]["verdict"] is True and analysis["edf"]["exact"])
    assert analysis["verdict"] is False
    result, _ = measured(tasks)
    assert result.first_miss == Miss(task=0, job=0, kind="NOT_SCHEDULED", at_ms=2)
    never_exactly_wrong(analysis, schedulable=False)


def test_an_rta_that_stops_iterating_says_unknown_not_an_exact_miss() -> None:
    """τ0 (999, 1000), τ1 (1, 1001), τ2 (1000, 4·10^9), 10^6 jobs each, on
    priorities 0, 1, 2. τ2's fixed point needs far more than the iteration cap
    (each step adds about one ms), and it does meet its deadline: τ0 and τ1
    leave at least 1 ms free in every 1001, so 1000 ms of τ2 end within about
    a million ms. The old RTA turned the cap into a miss called exact."""
    n = 10**6
    tasks = [task(0, 999, 1000, 0, numberofjobs=n), task(1, 1, 1001, 1, numberofjobs=n),
             task(2, 1000, 4 * 10**9, 2, numberofjobs=n)]
    analysis = analyse(tasks, ETM)
    assert analysis["rta"]["verdict"] is None and analysis["rta"]["exact"] is False
    row = analysis["tasks"][2]
    assert row["rta_meets"] is None and row["rta_exact"] is False
    assert analysis["verdict"] is not False
    assert [r["rta_meets"] for r in analysis["tasks"][:2]] == [True, True]


def test_rta_exactness_is_per_task_when_a_higher_job_is_killed() -> None:
    """(C,T,prio) = (32,88,0), (1,16,1), (5,39,2), 6 jobs each. τ1's first
    job never runs before 16 (τ0 holds the CPU until 32): an exact miss. That
    kill takes τ1's work away, so τ2 ends at 38 ≤ 39, and RTA's bound for τ2
    (which counts τ1's C in full) is only an upper one: its "miss" must not be
    exact. The old analysis had only one exactness flag for the set."""
    tasks = [task(0, 32, 88, 0), task(1, 1, 16, 1), task(2, 5, 39, 2)]
    analysis = analyse(tasks, ETM)
    rows = {row["id"]: row for row in analysis["tasks"]}
    assert rows[1]["rta_meets"] is False and rows[1]["rta_exact"] is True
    assert not (rows[2]["rta_meets"] is False and rows[2]["rta_exact"])
    result, jobs = measured(tasks)
    assert result.first_miss == Miss(task=1, job=0, kind="NOT_SCHEDULED", at_ms=16)
    third = [job for job in jobs if job.task_id == 2]
    assert third[0].end_ms == 38 and all(job.deadline_met for job in third)
    never_exactly_wrong(analysis, schedulable=False)


def test_a_back_to_back_chain_under_edf_is_not_simulated_exactly() -> None:
    """A chain τ0 (C=5, deadline 7, period 0, 3 jobs) and τ1 (C=2, T=3,
    deadline 2, offset 4, 2 jobs), all 128. As given it is schedulable: τ1
    preempts at 4 and 7, τ0's job 1 is released at 7 (deadline 14) and ends
    at 14. Let τ0's jobs run 4 ms instead: job 1 is released at 4, deadline
    11, yet τ1 still takes [4,6) and [7,9), so job 1 ends at 12 > 11. A
    shorter job made a later miss, so the simulation of the given times (and
    the overall verdict) cannot be exact; the old one said "exact"."""
    tasks = [task(0, 5, 0, EDF, deadline=7, numberofjobs=3), task(1, 2, 3, EDF, deadline=2, offset=4, numberofjobs=2)]
    shorter = [{**tasks[0], "arg1": 4}, tasks[1]]
    assert measured(tasks)[0].outcome is Outcome.SCHEDULABLE
    assert measured(shorter)[0].first_miss == Miss(task=0, job=1, kind="DEADLINE", at_ms=11)
    analysis = analyse(tasks, ETM)
    assert analysis["simulation"]["verdict"] is True and analysis["simulation"]["exact"] is False
    assert not (analysis["verdict"] is True and analysis["verdict_exact"])
    assert not (analysis["edf"]["verdict"] is True and analysis["edf"]["exact"])


def test_simso_and_the_analysis_partition_by_coreoffset_alike() -> None:
    """τ0 (C=3, T=4) on core 0, τ1 (C=3, T=4) at coreoffset 1: each alone on
    its core, so both meet every deadline. The old SimSo ran both on one
    processor (EXIT_PERIOD) while the analysis said schedulable, exact."""
    tasks = [task(0, 3, 4, 0), task(1, 3, 4, 1, coreoffset=1)]
    result, jobs = measured(tasks)
    assert result.outcome is Outcome.SCHEDULABLE
    assert [(job.task_id, job.start_ms, job.end_ms) for job in jobs if job.job_number == 0] == [(0, 0, 3), (1, 0, 3)]
    analysis = analyse(tasks, ETM)
    assert analysis["verdict"] is True and analysis["verdict_exact"] is True
    assert simulate_jobs(tasks, ETM) == jobs


def test_a_task_on_several_cores_is_not_covered_by_any_overall_verdict() -> None:
    """How a task with ``cores`` > 1 shares them is not modelled: SimSo and
    the tests place it on its first core, so the per-test figures describe
    that placement only and the overall verdict stays unknown."""
    tasks = [task(0, 1, 10, 0, cores=2), task(1, 1, 10, 1)]
    analysis = analyse(tasks, ETM)
    assert analysis["covered"] is False
    assert (analysis["verdict"], analysis["verdict_exact"], analysis["verdict_by"]) == (None, False, None)
    assert not any(analysis[name]["exact"] for name in ("rta", "edf", "simulation"))


def test_the_hyperbolic_bound_passes_a_product_of_exactly_two_that_floats_put_above() -> None:
    """(1,6) over (5,7): (1 + 1/6)(1 + 5/7) = 7/6 · 12/7 = 2 exactly, but in
    floating point the product is 2.0000000000000004. It is the critical
    rate-monotonic pair (C1 = T2 − T1, C2 = 2T1 − T2): the processor is busy
    all through [0, 7) and one more ms of τ1 would miss. Decided in
    fractions, the bound passes, and SimSo agrees."""
    assert math.prod([1 + 1 / 6, 1 + 5 / 7]) > 2
    assert (1 + Fraction(1, 6)) * (1 + Fraction(5, 7)) == 2
    tasks = [task(0, 1, 6, 0), task(1, 5, 7, 1)]
    analysis = analyse(tasks, ETM)
    assert analysis["hyperbolic"]["pass"] is True and analysis["hyperbolic"]["verdict"] is True
    result, jobs = measured(tasks)
    assert result.outcome is Outcome.SCHEDULABLE
    assert [(job.start_ms, job.end_ms) for job in jobs if job.job_number < 2] == [(0, 1), (6, 7), (1, 6), (7, 12)]
    longer = [tasks[0], {**tasks[1], "arg1": 6}]
    assert measured(longer)[0].outcome is Outcome.UNSCHEDULABLE


def test_the_hyperbolic_bound_fails_a_product_just_above_two() -> None:
    """The same critical pair scaled up, with τ1 1 ms longer: T1 = 10^13,
    C1 = T1/2, T2 = 1.5·10^13, C2 = T1/2 + 1. Π(1+U) = 1.5 · (1 + C2/T2)
    = 2 + 10^-13, and τ1 misses: R2 = C2 + 2·C1 = 1.5·10^13 + 1 > T2. The old
    float comparison with a 10^-12 tolerance passed it: a sufficient test's
    yes on an unschedulable set."""
    e = 10**12
    tasks = [task(0, 5 * e, 10 * e, 0, numberofjobs=2), task(1, 5 * e + 1, 15 * e, 1, numberofjobs=1)]
    product = (1 + Fraction(5 * e, 10 * e)) * (1 + Fraction(5 * e + 1, 15 * e))
    assert product == 2 + Fraction(1, 10**13)
    analysis = analyse(tasks, ETM)
    assert analysis["hyperbolic"]["pass"] is False and analysis["hyperbolic"]["verdict"] is None
    assert analysis["rta"] == {"applies": True, "exact": True, "verdict": False}
    # the analysis's own simulation (SimSo cannot count 10^16 cycles exactly)
    late = [job for job in simulate_jobs(tasks, ETM) if job.deadline_met is False]
    assert [(job.task_id, job.exit_type, job.end_ms) for job in late] == [(1, "EXIT_PERIOD", 15 * e)]
    never_exactly_wrong(analysis, schedulable=False)


def test_a_job_past_its_constrained_deadline_makes_the_set_unschedulable() -> None:
    """τ0 (C=2, T=10, prio 0) over τ1 (C=2, T=10, deadline 3, prio 1): τ1
    runs [2,4) and ends EXIT at 4, past its deadline 3. The old measurement
    counted only kills as misses and stored such sets ``schedulable``."""
    tasks = [task(0, 2, 10, 0, numberofjobs=2), task(1, 2, 10, 1, deadline=3, numberofjobs=2)]
    result, jobs = measured(tasks)
    assert result == SetResult(Outcome.UNSCHEDULABLE, Miss(task=1, job=0, kind="DEADLINE", at_ms=3), True)
    assert [(job.exit_type, job.deadline_abs_ms, job.deadline_met) for job in jobs if job.task_id == 1] == [
        ("EXIT", 3, False), ("EXIT", 13, False)]
    analysis = analyse(tasks, ETM)
    assert analysis["verdict"] is False and analysis["verdict_exact"] is True
    never_exactly_wrong(analysis, schedulable=False)
