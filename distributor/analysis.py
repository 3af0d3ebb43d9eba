"""Analytic schedulability labels for one task-set, stored beside the measured outcome.

The measured outcome says whether every job met its deadline on the target;
the analytic labels say what scheduling theory predicts for the same task-set
under the same outcome model (``sessions.outcomes``), so that data mining can
compare the two and find where the target (or the execution-time model)
departs from theory. ``analyse`` is pure Python; ``distributor.labels``
stores its dict in ``TaskSet.analysis`` and recomputes it on demand
(``manage.py relabel``). ``docs/analysis.md`` says per test when it is exact.

The task model (Genode's task loader, DESIGN §4)
------------------------------------------------
* ``C`` — execution time of one job, from the execution-time model (ETM).
* ``T`` — ``period``; 0 means the jobs run back to back (job k+1 is released
  when job k ends): no rate, left out of U.
* ``D`` — the relative deadline of the outcome model: ``deadline``, else
  ``period``. It is also the deadline the 128 band is scheduled by.
* ``K`` — the kill: a job still running ``min(period, criticaltime)`` after
  its release is killed. A job misses if it ends after D or is killed, so it
  must end within ``min(D, K)`` (``must``), which is at most T.
* ``O`` — ``offset``; ``N`` — ``numberofjobs`` (finite).
* Priorities as Genode orders them: 0 highest … 127 lowest; 128 = one band
  below 127, inside which the earliest absolute deadline runs first (EDF).
* Tasks are partitioned by ``coreoffset`` (SimSo simulates each core apart,
  the same way); a task with ``cores`` > 1 is placed on its first core, which
  no verdict can call exact.

Verdicts are yes / no / unknown (None). *Exact* means necessary and
sufficient for this task model with C as every job's execution time; a test
that is not exact may still say yes (it is sound) and its "no" is only a
failed test. Exactness is given per test, per task (RTA) and for the overall
``verdict``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import groupby
from typing import Protocol

from sessions.outcomes import JobResult, judge_job, kill, must_end_within, relative_deadline

ANALYSIS_VERSION = 3  # bump whenever a verdict could change for the same input
SCHEMA_VERSION = 2
DEADLINE_PRIORITY = 128  # Genode: ignore the priority, schedule by deadline
MAX_SIMULATED_JOBS = 100_000
MAX_DEMAND_POINTS = 1_000_000
MAX_ITERATIONS = 100_000  # fixed-point iterations (RTA, busy period) before "unknown"
TESTS = ("liu_layland", "hyperbolic", "rta", "edf", "simulation")


class ExecutionTimeModel(Protocol):
    name: str
    version: int

    def execution_time_ms(self, pkg: str, arg1: int) -> int: ...


@dataclass(frozen=True)
class _Task:
    spec: dict = field(repr=False, compare=False)
    id: int
    c: int  # execution time of one job (ms)
    t: int  # period (ms); 0 = back to back
    must: int | None  # a job must end within this after its release; None = never misses
    kill: int | None  # the job is killed this long after its release
    kill_exit: str | None  # and ends with this exit type (outcomes.kill)
    rank_d: int | None  # the relative deadline the 128 band orders by
    o: int
    n: int
    prio: int
    core: int
    cores: int

    @property
    def periodic(self) -> bool:
        return self.t > 0

    @property
    def by_deadline(self) -> bool:
        return self.prio >= DEADLINE_PRIORITY

    @property
    def spacing(self) -> int:
        """The shortest time between two releases (back to back: one job)."""
        return self.t if self.t > 0 else self.c

    @property
    def u(self) -> Fraction:
        return Fraction(self.c, self.t)


class _Unknown(Exception):
    """An iteration passed MAX_ITERATIONS: the test can say nothing."""


def analyse(tasks: list[dict], etm: ExecutionTimeModel) -> dict:
    """Every analytic label of one task-set as a JSON-serialisable dict with
    stable keys (see ``empty_result``); errors end up in ``error``, never raised,
    because the engine calls this while storing a result it must not lose."""
    result = empty_result(etm)
    try:
        model = [_task(task, etm) for task in tasks]
    except Exception as error:  # an ETM that refuses a package
        result["error"] = f"execution-time model: {error}"[:500]
        return result
    if not model:
        result["error"] = "no tasks"
        return result
    _fill(result, model)
    result["etm"]["unknown_pkgs"] = _unknown_packages(tasks, etm)
    if result["etm"]["unknown_pkgs"]:
        _not_exact(result)
    return result


def _unknown_packages(tasks: list[dict], etm: ExecutionTimeModel) -> list[str]:
    """Packages whose execution time is the model's default, not its own
    figure: no verdict on them can be exact (a model without ``knows``, as
    in the tests, knows everything)."""
    knows = getattr(etm, "knows", None)
    if knows is None:
        return []
    return sorted({task["pkg"] for task in tasks if not knows(task["pkg"], int(task.get("arg1", 0)))})


def _not_exact(result: dict) -> None:
    """An execution time guessed by default: the tests still run, but none of them is exact."""
    for name in ("rta", "edf", "simulation"):
        result[name]["exact"] = False
    for row in result["tasks"]:
        row["rta_exact"] = False
    result["verdict_exact"] = False


def empty_result(etm: ExecutionTimeModel | None = None) -> dict:
    """The shape of every analysis dict: all keys, no values."""
    return {
        "schema": SCHEMA_VERSION,
        "version": ANALYSIS_VERSION,
        "etm": {"name": getattr(etm, "name", None), "version": getattr(etm, "version", None),
                "calibrated": bool(getattr(etm, "calibrated", False)), "unknown_pkgs": []},
        "policy": None,
        "utilisation": None,
        "utilisation_max_core": None,
        "back_to_back": 0,
        "cores": 0,
        "covered": True,
        "tasks": [],
        "liu_layland": {"applies": False, "bound": None, "pass": None, "verdict": None},
        "hyperbolic": {"applies": False, "product": None, "pass": None, "verdict": None},
        "rta": {"applies": False, "exact": False, "verdict": None},
        "edf": {"applies": False, "exact": False, "verdict": None, "points": 0},
        "simulation": {"exact": False, "verdict": None, "jobs": 0, "misses": 0, "first_miss": None},
        "verdict": None,
        "verdict_exact": False,
        "verdict_by": None,
        "error": None,
    }


def _task(task: dict, etm: ExecutionTimeModel) -> _Task:
    after, exit_type = kill(task) or (None, None)
    return _Task(
        spec=task, id=int(task["id"]), c=int(etm.execution_time_ms(task["pkg"], int(task.get("arg1", 0)))),
        t=int(task["period"]), must=must_end_within(task), kill=after, kill_exit=exit_type,
        rank_d=relative_deadline(task),
        o=int(task.get("offset", 0)), n=int(task.get("numberofjobs", 1)),
        prio=int(task.get("priority", 127)), core=int(task.get("coreoffset", 0)), cores=int(task.get("cores", 1)),
    )


def _by_core(model: list[_Task]) -> list[list[_Task]]:
    return [list(group) for _, group in groupby(sorted(model, key=lambda t: t.core), key=lambda t: t.core)]


def _fill(result: dict, model: list[_Task]) -> None:
    cores = _by_core(model)
    result["policy"] = _policy(model)
    utilisations = [sum((t.u for t in core if t.periodic), Fraction(0)) for core in cores]
    result["utilisation"] = round(float(sum(utilisations)), 6)
    result["utilisation_max_core"] = round(float(max(utilisations)), 6)
    result["back_to_back"] = sum(not t.periodic for t in model)
    result["cores"] = len(cores)
    wide = any(t.cores > 1 for t in model)
    result["covered"] = not wide
    per_core = [_analyse_core(core, wide) for core in cores]
    result["liu_layland"] = _combine_bound([c["liu_layland"] for c in per_core], "bound")
    result["hyperbolic"] = _combine_bound([c["hyperbolic"] for c in per_core], "product")
    result["rta"] = _combine([c["rta"] for c in per_core])
    result["edf"] = _combine([c["edf"] for c in per_core])
    result["edf"]["points"] = sum(c["edf"]["points"] for c in per_core)
    result["simulation"] = _combine_simulation([c["simulation"] for c in per_core])
    rows = {row["id"]: row for c in per_core for row in c["tasks"]}
    result["tasks"] = [rows[t.id] for t in model]
    result["verdict"], result["verdict_exact"], result["verdict_by"] = _overall(result)


def _policy(model: list[_Task]) -> str:
    by_deadline = sum(t.by_deadline for t in model)
    return "edf" if by_deadline == len(model) else "fp" if by_deadline == 0 else "mixed"


def _overall(result: dict) -> tuple[bool | None, bool, str | None]:
    """(verdict, exact, which test): an exact verdict if any test has one,
    else a yes from a test that is sound whatever the kernel does (RTA, EDF,
    the bounds; the simulation's yes only when it is exact), else unknown.
    A task on several cores is not covered: how it shares them is not
    modelled, so the tests only describe its first core and say nothing
    overall."""
    if not result["covered"]:
        return None, False, None
    for name in ("simulation", "rta", "edf"):
        if result[name]["exact"] and result[name]["verdict"] is not None:
            return result[name]["verdict"], True, name
    for name in ("rta", "edf", "hyperbolic", "liu_layland"):
        if result[name]["verdict"] is True:
            return True, False, name
    return None, False, None


# -- one core -------------------------------------------------------------------


def _analyse_core(core: list[_Task], wide: bool) -> dict:
    synchronous = len({t.o for t in core}) == 1
    rta_rows = _rta_rows(core, synchronous and not wide)
    simulation = _simulate(core)
    simulation["exact"] = simulation["exact"] and not wide
    tasks = [
        {
            "id": t.id, "core": t.core, "c_ms": t.c, "period_ms": t.t, "deadline_ms": t.must,
            "u": round(float(t.u), 6) if t.periodic else None,
            **rta_rows[t.id],
            "sim_wcrt_ms": simulation["wcrt"].get(t.id), "sim_misses": simulation["task_misses"].get(t.id, 0),
        }
        for t in core
    ]
    return {
        "tasks": tasks,
        "liu_layland": _liu_layland(core),
        "hyperbolic": _hyperbolic(core),
        "rta": _rta_verdict(list(rta_rows.values())),
        "edf": _edf(core, synchronous and not wide),
        "simulation": simulation,
    }


def _distinct_priorities(core: list[_Task]) -> bool:
    fixed = [t.prio for t in core if not t.by_deadline]
    return len(fixed) == len(set(fixed))


# -- utilisation bounds (exact fractions) ----------------------------------------


def _rate_monotonic_implicit(core: list[_Task]) -> bool:
    """Where the bound tests hold: periodic, D = T and no earlier kill,
    distinct priorities that follow the periods (shorter period ⇒
    numerically smaller priority)."""
    if not all(t.periodic and t.must == t.t and not t.by_deadline for t in core) or not _distinct_priorities(core):
        return False
    ordered = sorted(core, key=lambda t: t.prio)
    return all(a.t <= b.t for a, b in zip(ordered, ordered[1:]))


def _liu_layland(core: list[_Task]) -> dict:
    """U ≤ n(2^{1/n} − 1), decided exactly as (U/n + 1)^n ≤ 2 in fractions."""
    periodic = [t for t in core if t.periodic]
    n = len(periodic)
    u = sum((t.u for t in periodic), Fraction(0))
    passed = n > 0 and (u / n + 1) ** n <= 2
    applies = _rate_monotonic_implicit(core)
    bound = n * (2 ** (1 / n) - 1) if n else None
    return {"applies": applies, "bound": bound, "pass": passed, "verdict": True if applies and passed else None}


def _hyperbolic(core: list[_Task]) -> dict:
    product = math.prod((1 + t.u for t in core if t.periodic), start=Fraction(1))
    passed = product <= 2
    applies = _rate_monotonic_implicit(core)
    return {"applies": applies, "product": float(product), "pass": passed,
            "verdict": True if applies and passed else None}


def _combine_bound(parts: list[dict], key: str) -> dict:
    """All cores must pass; the figure shown is the tightest core's."""
    applies = all(p["applies"] for p in parts)
    passed = all(p["pass"] for p in parts)
    values = [p[key] for p in parts if p[key] is not None]
    figure = (max if key == "product" else min)(values) if values else None
    return {"applies": applies, key: round(figure, 6) if figure is not None else None, "pass": passed,
            "verdict": True if applies and passed else None}


def _combine(parts: list[dict]) -> dict:
    """All cores: yes if every core says yes; no if one says no (exact when
    that core's no is); unknown otherwise."""
    applies = all(p["applies"] for p in parts)
    verdicts = [p["verdict"] for p in parts]
    if not applies:
        return {"applies": False, "exact": False, "verdict": None}
    if False in verdicts:
        exact = any(p["verdict"] is False and p["exact"] for p in parts)
        return {"applies": True, "exact": exact, "verdict": False}
    if None in verdicts:
        return {"applies": True, "exact": False, "verdict": None}
    return {"applies": True, "exact": all(p["exact"] for p in parts), "verdict": True}


# -- fixed-priority response-time analysis --------------------------------------


def _interferers(task: _Task, core: list[_Task]) -> list[_Task]:
    """Tasks that may run while ``task`` waits: higher priority and, for a
    sound bound under any tie-break, equal priority (the 128 band included)."""
    return [j for j in core if j.id != task.id and j.prio <= task.prio]


def _rta_rows(core: list[_Task], synchronous_narrow: bool) -> dict[int, dict]:
    """Per task: its worst-case response bound and whether it is exact.

    A task's RTA is exact (its "no" is a real miss) when the core is
    synchronous with every task on one core, the task and its interferers are
    periodic fixed-priority tasks of distinct priorities, and every interferer
    meets its own deadline: a killed higher job runs less than C, so the bound
    is then only an upper one (issue: (32,88,0), (1,16,1), (5,39,2))."""
    status: dict[int, str] = {}
    rows: dict[int, dict] = {}
    for task in sorted(core, key=lambda t: t.prio):
        others = _interferers(task, core)
        try:
            wcrt = _response_time(task, others)
            meets = task.must is None or (wcrt is not None and wcrt <= task.must)
            status[task.id] = "meets" if meets else "misses"
        except _Unknown:
            wcrt, status[task.id] = None, "unknown"
        exact = (synchronous_narrow and not task.by_deadline and task.periodic
                 and all(j.periodic and not j.by_deadline and j.prio < task.prio for j in others)
                 and all(status.get(j.id) == "meets" for j in others))
        verdict = {"meets": True, "misses": False, "unknown": None}[status[task.id]]
        rows[task.id] = {"wcrt_ms": wcrt, "rta_meets": verdict, "rta_exact": exact and verdict is not None}
    return rows


def _rta_verdict(rows: list[dict]) -> dict:
    verdicts = [row["rta_meets"] for row in rows]
    if False in verdicts:
        return {"applies": True, "exact": any(r["rta_meets"] is False and r["rta_exact"] for r in rows),
                "verdict": False}
    if None in verdicts:
        return {"applies": True, "exact": False, "verdict": None}
    return {"applies": True, "exact": all(r["rta_exact"] for r in rows), "verdict": True}


def _response_time(task: _Task, others: list[_Task]) -> int | None:
    """Smallest fixed point of R = C + Σ_j min(⌈R/T_j⌉, N_j)·C_j (a
    back-to-back chain counts all its N·C once). None when R passes the
    task's deadline (a miss, and larger R means nothing); raises _Unknown
    when the iteration does not settle within MAX_ITERATIONS."""
    limit = task.must if task.must is not None else task.c + sum(j.n * j.c for j in others)
    response = task.c
    for _ in range(MAX_ITERATIONS):
        demand = task.c + sum(_jobs_within(j, response) * j.c for j in others)
        if demand > limit:
            return None
        if demand == response:
            return response
        response = demand
    raise _Unknown


def _jobs_within(task: _Task, window: int) -> int:
    if not task.periodic:
        return task.n
    return min(-(-window // task.t), task.n)


# -- EDF processor demand -------------------------------------------------------


def _edf(core: list[_Task], synchronous_narrow: bool) -> dict:
    """The demand test, where it says something about this scheduler: every
    task in the 128 band and none killed before its scheduling deadline
    (criticaltime < D, or D > T). Otherwise EDF meeting D would not mean
    meeting the kill, so the test does not apply."""
    applies = all(t.by_deadline for t in core) and all(
        t.kill is None or (t.rank_d is not None and t.rank_d <= t.kill) for t in core)
    if not applies:
        return {"applies": False, "exact": False, "verdict": None, "points": 0}
    try:
        verdict, points = _edf_demand(core)
    except _Unknown:
        verdict, points = None, 0
    exact = synchronous_narrow and all(t.periodic for t in core) and verdict is not None
    return {"applies": True, "exact": exact, "verdict": verdict, "points": points}


def _edf_demand(core: list[_Task]) -> tuple[bool | None, int]:
    """dbf(t) ≤ t at every absolute deadline up to the synchronous busy period,
    with the deadlines the scheduler orders by (D = deadline, else period).

    Deadlines are walked in order with a running sum, so the cost is the
    number of deadlines, not deadlines × tasks. None if there are too many.
    """
    timed = [t for t in core if t.rank_d is not None]
    busy = _busy_period(timed)
    jobs = []
    for t in timed:
        count = min(t.n, (busy - t.rank_d) // t.spacing + 1) if busy >= t.rank_d else 0
        if len(jobs) + count > MAX_DEMAND_POINTS:
            return None, 0
        jobs.extend((k * t.spacing + t.rank_d, t.c) for k in range(count))
    jobs.sort()
    demand = 0
    for index, (deadline, cost) in enumerate(jobs):
        demand += cost
        last_at_this_time = index + 1 == len(jobs) or jobs[index + 1][0] != deadline
        if last_at_this_time and demand > deadline:
            return False, index + 1
    return True, len(jobs)


def _busy_period(tasks: list[_Task]) -> int:
    """Length of the synchronous busy period with finite job counts: the
    fixed point of L = Σ min(⌈L/T⌉, N)·C; it exists because the work is finite."""
    length = sum(t.c for t in tasks)
    for _ in range(MAX_ITERATIONS):
        demand = sum(min(-(-length // t.spacing), t.n) * t.c for t in tasks)
        if demand == length:
            return length
        length = demand
    raise _Unknown


# -- simulation of the concrete job set -----------------------------------------


@dataclass
class _Job:
    task: _Task
    number: int
    release: int
    remaining: int
    rank: int | None  # absolute, for the order of the 128 band
    kill_at: int | None  # absolute
    start: int | None = None

    def key(self) -> tuple:
        """Lower runs first: fixed priority, then the EDF band by absolute
        deadline (none = last); ties first-in first-out, then by task id
        (SimSo's GenodeScheduler orders the same way)."""
        if self.task.by_deadline:
            return (DEADLINE_PRIORITY, self.rank if self.rank is not None else math.inf,
                    self.release, self.task.id)
        return (self.task.prio, 0, self.release, self.task.id)


class _Simulation:
    """Preemptive uniprocessor schedule of one core, event by event; every
    job judged by the outcome model as it ends."""

    def __init__(self, core: list[_Task]):
        self.core = core
        self.released = {t.id: 0 for t in core}
        self.next_release: dict[int, int | None] = {t.id: t.o for t in core}
        self.pending: list[_Job] = []
        self.jobs: list[JobResult] = []
        self.band_tie = False  # two 128 jobs of one absolute deadline met

    def run(self) -> None:
        now = min(self.next_release.values())
        while True:
            self._release_due(now)
            if not self.pending:
                upcoming = [r for r in self.next_release.values() if r is not None]
                if not upcoming:
                    return
                now = min(upcoming)
                continue
            now = self._advance(now)

    def _release_due(self, now: int) -> None:
        for task in self.core:
            if self.next_release[task.id] == now:
                number = self.released[task.id]
                self.released[task.id] += 1
                self.pending.append(_Job(
                    task, number, now, task.c,
                    None if task.rank_d is None else now + task.rank_d,
                    None if task.kill is None else now + task.kill,
                ))
                more = self.released[task.id] < task.n
                # a back-to-back task releases its next job when this one ends
                self.next_release[task.id] = now + task.t if more and task.periodic else None

    def _advance(self, now: int) -> int:
        job = min(self.pending, key=_Job.key)
        if job.task.by_deadline and any(o is not job and o.task.by_deadline and o.rank == job.rank
                                        for o in self.pending):
            self.band_tie = True
        if job.start is None:
            job.start = now
        candidates = [now + job.remaining]
        candidates += [r for r in self.next_release.values() if r is not None and r > now]
        candidates += [j.kill_at for j in self.pending if j.kill_at is not None]
        then = min(candidates)
        job.remaining -= then - now
        if job.remaining == 0:
            self._end(job, then, "EXIT")
        for other in [j for j in self.pending if j.kill_at is not None and j.kill_at <= then]:
            self._end(other, then, other.task.kill_exit)
        return then

    def _end(self, job: _Job, now: int, exit_type: str) -> None:
        self.pending.remove(job)
        task = job.task
        start = now if job.start is None else job.start
        if job.start is None:
            exit_type = "NOT_SCHEDULED"
        self.jobs.append(judge_job(task.spec, job.number, job.release, start, now, exit_type))
        if not task.periodic and self.released[task.id] < task.n:
            self.next_release[task.id] = now


def simulate_jobs(tasks: list[dict], etm: ExecutionTimeModel) -> list[JobResult]:
    """Every job of a task-set as the analysis simulates it, core by core, in
    task and job order: what SimSo must report too (the cross-check)."""
    jobs: list[JobResult] = []
    for core in _by_core([_task(task, etm) for task in tasks]):
        simulation = _Simulation(core)
        simulation.run()
        jobs += simulation.jobs
    return sorted(jobs, key=lambda j: (j.task_id, j.job_number))


def _simulate(core: list[_Task]) -> dict:
    """The verdict of the concrete job set. Exact (preemptive job-level fixed
    priorities with fixed releases are sustainable: a shorter job never makes
    another one later) unless fixed priorities tie (the kernel may not take
    turns as we do), a back-to-back task has more than one job (a shorter job
    releases the next one earlier), or two 128 jobs of one deadline met where
    a kill comes before the deadline (then their order matters)."""
    jobs = sum(t.n for t in core)
    result = {"exact": False, "verdict": None, "jobs": jobs, "misses": 0, "first_miss": None,
              "wcrt": {}, "task_misses": {}}
    if jobs > MAX_SIMULATED_JOBS:
        return result
    simulation = _Simulation(core)
    simulation.run()
    misses = [job.miss for job in simulation.jobs if job.miss is not None]
    wcrt: dict[int, int] = {}
    for job in simulation.jobs:
        if job.exit_type == "EXIT":
            wcrt[job.task_id] = max(wcrt.get(job.task_id, 0), job.response_ms)
    task_misses: dict[int, int] = {}
    for miss in misses:
        task_misses[miss.task] = task_misses.get(miss.task, 0) + 1
    chains = any(not t.periodic and t.n > 1 for t in core)
    early_kill = any(t.by_deadline and t.kill is not None and (t.rank_d is None or t.kill < t.rank_d) for t in core)
    first = min(misses, key=lambda m: (m.at_ms, m.task, m.job)) if misses else None
    result.update(
        exact=_distinct_priorities(core) and not chains and not (simulation.band_tie and early_kill),
        verdict=not misses, misses=len(misses), first_miss=first.as_dict() if first else None,
        wcrt=wcrt, task_misses=task_misses,
    )
    return result


def _combine_simulation(parts: list[dict]) -> dict:
    verdicts = [p["verdict"] for p in parts]
    misses = [p["first_miss"] for p in parts if p["first_miss"]]
    if False in verdicts:
        exact = any(p["verdict"] is False and p["exact"] for p in parts)
    else:
        exact = None not in verdicts and all(p["exact"] for p in parts)
    return {
        "exact": exact,
        "verdict": False if False in verdicts else None if None in verdicts else True,
        "jobs": sum(p["jobs"] for p in parts),
        "misses": sum(p["misses"] for p in parts),
        "first_miss": min(misses, key=lambda m: (m["at_ms"], m["task"], m["job"])) if misses else None,
    }
