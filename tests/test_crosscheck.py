"""Property-based cross-check: the analysis against SimSo under the outcome model.

Hypothesis draws task-sets across the whole task model the file format allows
(implicit, constrained and longer deadlines, critical times, priority ties,
back-to-back tasks, offsets, the 128 band alone and mixed with fixed
priorities, several cores) and, on every set, runs SimSo and the analysis:

(a) a verdict flagged exact equals SimSo's outcome (sessions.outcomes);
(b) a sufficient test never says yes where SimSo shows a miss;
(c) the analysis's own simulation is job for job what SimSo reports;
(d) two textbook tests written here, not imported from distributor.analysis
    (fixed-priority response-time analysis, EDF processor demand), agree with
    SimSo wherever their textbook assumptions hold;
(e) a set called schedulable exactly stays schedulable when a task's jobs run
    shorter ("exact" takes C as a worst case, not as the only case).

A job's execution time is exactly its ``arg1`` ms (``ArgIsTime``), so SimSo
runs every job for exactly the C the analysis assumes: on these sets "exact"
can be checked as plain equality.

Two budgets: the default (``FAST``) runs in every ``make test``, derandomized
so CI sees the same sets each time; ``SLOW`` draws many more and is marked
slow. Neither writes a Hypothesis database into the repository.
"""
from __future__ import annotations

from fractions import Fraction
from math import ceil
from typing import Callable

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from distributor.analysis import analyse, simulate_jobs
from sessions.events import EventTracker
from sessions.outcomes import JobResult, Outcome
from sessions.simso import simulate
from tests.arg_is_time import ArgIsTime

DEADLINE_BAND = 128
FAST = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=5000, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


ETM = ArgIsTime()


def make_task(task_id: int, c: int, period: int, priority: int, **fields: int) -> dict:
    values = {"id": task_id, "pkg": "idle", "arg1": c, "period": period, "priority": priority, "deadline": 0,
              "offset": 0, "numberofjobs": 1, "criticaltime": 0, "quota": "1M", "caps": 10, "cores": 1,
              "coreoffset": 0}
    return {**values, **fields}


# -- drawing task-sets ------------------------------------------------------------


@st.composite
def any_task(draw: Callable, task_id: int, policy: str, offset: int | None, cores: int) -> dict:
    """One task anywhere in the model, with small numbers so SimSo stays fast."""
    c = draw(st.integers(1, 10))
    back_to_back = draw(st.sampled_from([True, False, False, False]))
    period = 0 if back_to_back else draw(st.integers(2, 40))
    shape = draw(st.sampled_from(["implicit", "implicit", "constrained", "longer"]))
    if shape == "implicit":
        deadline = 0
    elif period and shape == "constrained":
        deadline = draw(st.integers(1, period))
    elif period:
        deadline = draw(st.integers(period + 1, 2 * period + 10))
    else:  # back to back: any deadline, or none
        deadline = draw(st.integers(1, 40))
    criticaltime = draw(st.one_of(st.just(0), st.just(0), st.integers(1, 50)))
    if policy == "edf":
        priority = DEADLINE_BAND
    elif policy == "fp":
        priority = draw(st.integers(0, 6))  # a narrow range: ties happen
    else:
        priority = draw(st.one_of(st.integers(0, 6), st.just(DEADLINE_BAND)))
    return make_task(
        task_id, c, period, priority, deadline=deadline, criticaltime=criticaltime,
        offset=offset if offset is not None else draw(st.integers(0, 20)),
        numberofjobs=draw(st.integers(1, 6)),
        coreoffset=draw(st.integers(0, cores - 1)),
        cores=draw(st.sampled_from([1, 1, 1, 1, 1, 1, 1, 2])),
    )


@st.composite
def task_sets(draw: Callable) -> list[dict]:
    """1–5 tasks: fixed priorities, the 128 band or both; synchronous (a
    common offset) or not; mostly one core, sometimes two or three."""
    count = draw(st.integers(1, 5))
    policy = draw(st.sampled_from(["fp", "edf", "mixed"]))
    synchronous = draw(st.sampled_from([True, True, False]))
    offset = draw(st.sampled_from([0, 0, 0, 3])) if synchronous else None
    cores = draw(st.sampled_from([1, 1, 1, 2, 3]))
    ids = draw(st.lists(st.integers(0, 9), min_size=count, max_size=count, unique=True))
    return [draw(any_task(task_id, policy, offset, cores)) for task_id in ids]


# -- running both -------------------------------------------------------------------


def simso_jobs(tasks: list[dict]) -> EventTracker:
    """SimSo's events through the measurement, as a real target's would go."""
    tracker = EventTracker(tasks)
    tracker.feed(simulate(tasks, ETM))
    assert tracker.finished
    return tracker


def met_by_task(jobs: list[JobResult]) -> dict[int, bool]:
    """Per task: did every one of its jobs meet its deadline?"""
    met: dict[int, bool] = {}
    for job in jobs:
        met[job.task_id] = met.get(job.task_id, True) and job.deadline_met is True
    return met


def worst_response(jobs: list[JobResult]) -> dict[int, int]:
    worst: dict[int, int] = {}
    for job in jobs:
        worst[job.task_id] = max(worst.get(job.task_id, 0), job.response_ms)
    return worst


def check_against_simso(tasks: list[dict]) -> None:
    """(a) to (e) on one task-set; (d) where the references apply."""
    tracker = simso_jobs(tasks)
    measured = tracker.result()
    assert measured.outcome is not Outcome.RESOURCE  # SimSo models no memory
    schedulable = measured.outcome is Outcome.SCHEDULABLE
    jobs = tracker.all_jobs()
    analysis = analyse(tasks, ETM)
    assert analysis["error"] is None
    event(f"{analysis['policy']}: {measured.outcome.value}")  # --hypothesis-show-statistics
    event(f"exact verdict by {analysis['verdict_by']}" if analysis["verdict_exact"] else "no exact verdict")

    # (c) the analysis simulates the same schedule, judged the same way
    assert simulate_jobs(tasks, ETM) == jobs
    first = measured.first_miss.as_dict() if measured.first_miss else None
    assert analysis["simulation"]["first_miss"] == first

    # (a) exact verdicts are the outcome
    if analysis["verdict_exact"]:
        assert analysis["verdict"] is schedulable, analysis["verdict_by"]
    for name in ("rta", "edf", "simulation"):
        section = analysis[name]
        if section["exact"]:
            assert section["verdict"] is schedulable, name
    # (b) a sufficient test's yes is never contradicted
    for name in ("rta", "edf", "liu_layland", "hyperbolic"):
        if analysis[name]["verdict"] is True:
            assert schedulable, name
    if analysis["verdict"] is True:
        assert schedulable, analysis["verdict_by"]

    # (e) an exact yes takes C as a worst case: no job that runs shorter may
    # cause a miss (the back-to-back chains), so the set with one
    # task's C smaller must still be schedulable
    if schedulable and any(analysis[name]["exact"] for name in ("rta", "edf", "simulation")):
        for index, shorter in enumerate(tasks):
            if shorter["arg1"] > 1:
                variant = [*tasks[:index], {**shorter, "arg1": shorter["arg1"] - 1}, *tasks[index + 1:]]
                assert simso_jobs(variant).result().outcome is Outcome.SCHEDULABLE, shorter["id"]

    # per task: RTA's yes is sound, its exact answer is the task's own result,
    # and its exact bound is the response SimSo sees (the synchronous first job)
    met, worst = met_by_task(jobs), worst_response(jobs)
    for row in analysis["tasks"]:
        if row["rta_meets"] is True:
            assert met[row["id"]], row
            assert worst[row["id"]] <= row["wcrt_ms"], row
        if row["rta_exact"]:
            assert row["rta_meets"] is met[row["id"]], row
            if row["rta_meets"]:
                assert worst[row["id"]] == row["wcrt_ms"], row

    # (d) the textbook tests, where they hold
    if rta_reference_applies(tasks):
        assert reference_rta(tasks) is schedulable
    if demand_reference_applies(tasks):
        assert reference_demand(tasks) is schedulable


# -- (d) references written here ----------------------------------------------------
#
# Both are the textbook tests for infinitely many jobs, released synchronously
# and strictly periodically, on one processor. Their domain is where the
# target's extras cannot change the set's answer:
#
# * kills: a kill (period end, critical time) at or after the deadline only
#   ends a job that has already missed. Until the first miss no job is
#   killed, so the schedule up to the first miss is the textbook's: the run
#   misses exactly when the textbook schedule does. After it, a killed
#   higher job leaves lower jobs *more* time: a per-task RTA answer below a
#   miss may then be wrong, but the set is unschedulable anyway, which is all
#   the reference says. A critical time before the deadline would be another
#   deadline, so it is left out;
# * finite job counts: each task must have released all the jobs the textbook
#   test looks at (those released before the longest window it checks), so
#   the finite set's first window is the textbook's. After that window, fewer
#   jobs only means less work;
# * one core, every ``cores`` = 1, no back-to-back task, D ≤ T, and for RTA
#   distinct fixed priorities (a tie is the kernel's choice).


def _relative_deadline(task: dict) -> int:
    return task["deadline"] or task["period"]


def _textbook_common(tasks: list[dict]) -> bool:
    return (
        len({t["coreoffset"] for t in tasks}) == 1 and all(t["cores"] == 1 for t in tasks)
        and len({t["offset"] for t in tasks}) == 1
        and all(t["period"] > 0 and t["deadline"] <= t["period"] for t in tasks)
        and all(t["criticaltime"] == 0 or t["criticaltime"] >= _relative_deadline(t) for t in tasks)
    )


def rta_reference_applies(tasks: list[dict]) -> bool:
    """Joseph & Pandya's domain: fixed, distinct priorities, and enough jobs
    of every task to fill the longest deadline."""
    priorities = [t["priority"] for t in tasks]
    longest = max(_relative_deadline(t) for t in tasks)
    return (
        _textbook_common(tasks) and DEADLINE_BAND not in priorities and len(set(priorities)) == len(priorities)
        and all(t["numberofjobs"] * t["period"] >= longest for t in tasks)
    )


def reference_rta(tasks: list[dict]) -> bool:
    """R_i = C_i + Σ_{j ∈ hp(i)} ⌈R_i / T_j⌉·C_j from R_i = C_i; the set is
    schedulable iff every R_i ≤ D_i (Joseph & Pandya 1986, Audsley et al. 1993)."""
    for task in tasks:
        higher = [other for other in tasks if other["priority"] < task["priority"]]
        response = task["arg1"]
        while True:
            demand = task["arg1"] + sum(ceil(response / j["period"]) * j["arg1"] for j in higher)
            if demand > _relative_deadline(task):
                return False
            if demand == response:
                break
            response = demand
    return True


def synchronous_busy_period(tasks: list[dict]) -> int | None:
    """L = Σ ⌈L/T_i⌉·C_i from L = Σ C_i; None when U > 1 (no end)."""
    if sum(Fraction(t["arg1"], t["period"]) for t in tasks) > 1:
        return None
    length = sum(t["arg1"] for t in tasks)
    while True:
        demand = sum(ceil(length / t["period"]) * t["arg1"] for t in tasks)
        if demand == length:
            return length
        length = demand


def demand_reference_applies(tasks: list[dict]) -> bool:
    """Baruah, Rosier & Howell's domain: all by deadline (128), U ≤ 1, and
    every task has released all its jobs of the first busy period."""
    if not _textbook_common(tasks) or any(t["priority"] != DEADLINE_BAND for t in tasks):
        return False
    busy = synchronous_busy_period(tasks)
    return busy is not None and all(t["numberofjobs"] * t["period"] >= busy for t in tasks)


def reference_demand(tasks: list[dict]) -> bool:
    """dbf(t) = Σ_i max(0, ⌊(t − D_i)/T_i⌋ + 1)·C_i ≤ t at every absolute
    deadline t in the synchronous busy period (U ≤ 1 is the domain)."""
    busy = synchronous_busy_period(tasks)
    assert busy is not None
    deadlines = sorted({k * t["period"] + _relative_deadline(t) for t in tasks
                        for k in range(busy // t["period"] + 1)})
    for point in (d for d in deadlines if d <= busy):
        demand = sum(max(0, (point - _relative_deadline(t)) // t["period"] + 1) * t["arg1"] for t in tasks)
        if demand > point:
            return False
    return True


@st.composite
def rta_domain_sets(draw: Callable) -> list[dict]:
    """Sets inside the RTA reference's domain, so it is checked often."""
    count = draw(st.integers(1, 5))
    priorities = draw(st.lists(st.integers(0, 127), min_size=count, max_size=count, unique=True))
    offset = draw(st.sampled_from([0, 0, 2]))
    tasks = []
    for task_id, priority in enumerate(priorities):
        period = draw(st.integers(2, 40))
        deadline = draw(st.one_of(st.just(0), st.integers(1, period)))
        d = deadline or period
        c = draw(st.integers(1, max(1, min(10, 3 * period // (2 * count)))))  # about as many misses as not
        tasks.append(make_task(task_id, c, period, priority, deadline=deadline,
                               offset=offset, criticaltime=draw(st.one_of(st.just(0), st.integers(d, 50)))))
    longest = max(_relative_deadline(t) for t in tasks)
    for t in tasks:
        t["numberofjobs"] = max(1, ceil(longest / t["period"])) + draw(st.integers(0, 1))
    return tasks


@st.composite
def demand_domain_sets(draw: Callable) -> list[dict]:
    """Sets inside the demand reference's domain: all 128, U ≤ 1."""
    count = draw(st.integers(1, 5))
    offset = draw(st.sampled_from([0, 0, 2]))
    tasks = []
    for task_id in range(count):
        period = draw(st.integers(2, 40))
        deadline = draw(st.one_of(st.just(0), st.integers(1, period)))
        d = deadline or period
        c = draw(st.integers(1, max(1, min(10, 3 * period // (2 * count)))))  # U ≤ 1 more often than not
        tasks.append(make_task(task_id, c, period, DEADLINE_BAND, deadline=deadline,
                               offset=offset, criticaltime=draw(st.one_of(st.just(0), st.integers(d, 50)))))
    busy = synchronous_busy_period(tasks)
    assume(busy is not None and busy <= 400)  # U ≤ 1, and SimSo stays fast
    for t in tasks:
        t["numberofjobs"] = max(1, ceil(busy / t["period"]))
    return tasks


# -- the properties ------------------------------------------------------------------


@FAST
@given(task_sets())
def test_it_agrees_with_simso_on_random_task_sets(tasks: list[dict]) -> None:
    """Exact verdicts, sufficient yeses and the analysis's own schedule all
    match SimSo on sets drawn across the whole task model."""
    check_against_simso(tasks)


@FAST
@given(rta_domain_sets())
def test_the_textbook_rta_and_the_analysis_agree_with_simso(tasks: list[dict]) -> None:
    """Independent of distributor.analysis: plain RTA decides these sets as
    SimSo does (and the analysis passes the same checks on them)."""
    assert rta_reference_applies(tasks)
    check_against_simso(tasks)


@FAST
@given(demand_domain_sets())
def test_the_textbook_demand_bound_and_the_analysis_agree_with_simso(tasks: list[dict]) -> None:
    """Independent of distributor.analysis: the plain EDF demand test decides
    these sets as SimSo does (and the analysis passes the same checks)."""
    assert demand_reference_applies(tasks)
    check_against_simso(tasks)


@pytest.mark.slow
@SLOW
@given(task_sets())
def test_it_agrees_with_simso_on_many_random_task_sets(tasks: list[dict]) -> None:
    """The first property with a larger budget, for CI's slow run."""
    check_against_simso(tasks)


@pytest.mark.slow
@SLOW
@given(st.one_of(rta_domain_sets(), demand_domain_sets()))
def test_the_textbook_tests_agree_with_simso_on_many_task_sets(tasks: list[dict]) -> None:
    """Both references with a larger budget, for CI's slow run."""
    assert rta_reference_applies(tasks) or demand_reference_applies(tasks)
    check_against_simso(tasks)


# -- the references themselves, on sets worked by hand --------------------------------


def test_the_reference_rta_finds_the_classic_miss_with_u_at_most_one() -> None:
    """(2,4) over (3,6): U = 1, R_2 = 3 → 5 → 7 > 6, so the reference must say
    no (and SimSo kills τ2's first job at 6); otherwise (d) checks nothing."""
    tasks = [make_task(0, 2, 4, 0, numberofjobs=3), make_task(1, 3, 6, 1, numberofjobs=2)]
    assert rta_reference_applies(tasks)
    assert reference_rta(tasks) is False
    assert simso_jobs(tasks).result().outcome is Outcome.UNSCHEDULABLE


def test_the_reference_demand_bound_finds_the_constrained_miss() -> None:
    """(C=2, D=2, T=5) and (C=2, D=3, T=5): U = 0.8 but dbf(3) = 4 > 3."""
    tasks = [make_task(0, 2, 5, DEADLINE_BAND, deadline=2), make_task(1, 2, 5, DEADLINE_BAND, deadline=3)]
    assert demand_reference_applies(tasks)
    assert reference_demand(tasks) is False
    assert simso_jobs(tasks).result().outcome is Outcome.UNSCHEDULABLE
    implicit = [make_task(0, 2, 4, DEADLINE_BAND, numberofjobs=3), make_task(1, 3, 6, DEADLINE_BAND, numberofjobs=2)]
    assert demand_reference_applies(implicit) and reference_demand(implicit) is True


def test_the_references_stay_out_of_sets_they_do_not_model() -> None:
    """Too few jobs, an early critical time, a tie or an offset puts a set
    outside the textbook domain: the finite set may behave differently."""
    base = [make_task(0, 2, 4, 0, numberofjobs=3), make_task(1, 3, 6, 1, numberofjobs=2)]
    assert not rta_reference_applies([{**base[0], "numberofjobs": 1}, base[1]])
    assert not rta_reference_applies([base[0], {**base[1], "criticaltime": 5}])
    assert not rta_reference_applies([base[0], {**base[1], "priority": 0}])
    assert not rta_reference_applies([base[0], {**base[1], "offset": 1}])
    assert not demand_reference_applies(base)
