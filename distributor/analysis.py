"""Analytic schedulability labels for one task-set, stored beside the measured outcome.

The measured label says whether every job ended with EXIT on the target; the
analytic labels say what scheduling theory predicts for the same task-set, so
that data mining can compare the two and find where the target (or the
execution-time model) departs from theory. ``analyse`` is pure Python: the
engine calls it when a task-set finishes and stores the dict in
``TaskSet.analysis``.

The task model (Genode's task loader, DESIGN §4)
------------------------------------------------
* ``C`` — execution time of one job, from the execution-time model (ETM):
  ``etm.execution_time_ms(pkg, arg1)``; the model's name and version are stored.
* ``T`` — ``period``; 0 means the jobs run back to back (job k+1 is released
  when job k ends), so such a task has no rate and is left out of U.
* ``D`` — the effective relative deadline: the smallest positive value of
  ``deadline``, ``period`` and ``criticaltime``. A job is killed at its period
  end (EXIT_PERIOD) and at its critical time (EXIT_CRITICAL), so no job ever
  runs past ``min(T, criticaltime)`` and D ≤ T always holds (constrained
  deadlines). A task with none of the three has no deadline and never misses.
* ``O`` — ``offset``; ``N`` — ``numberofjobs`` (finite: jobs k < N are released
  at O + k·T).
* Priorities as Genode orders them: 0 highest … 127 lowest. Equal priorities
  (ties): every test counts an equal-priority task as *higher* priority — sound
  whatever the kernel does with ties (Fiasco.OC round-robins them), exact only
  without ties. 128 = "schedule by deadline": such tasks form one band below
  priority 127, inside which the earliest absolute deadline runs first (EDF).
  A set whose tasks are all 128 has policy "edf", none "fp", otherwise "mixed".
* Tasks are partitioned by ``coreoffset``: tasks on different cores do not
  interfere. A task with ``cores`` > 1 is analysed on its first core only,
  which makes every verdict approximate (``exact`` false).

Which tests are exact, which only sufficient
--------------------------------------------
* Liu & Layland bound (U ≤ n(2^{1/n} − 1)) and hyperbolic bound
  (Π(U_i + 1) ≤ 2): *sufficient* only, and they *apply* only to periodic,
  implicit-deadline (D = T) tasks with distinct, rate-monotonic priorities.
  Their ``verdict`` is true when they pass and null ("unknown") otherwise: a
  sufficient test that fails proves nothing. Offsets and finite job counts
  only make them more pessimistic.
* Fixed-priority response-time analysis (Joseph & Pandya, Audsley): exact for
  a synchronous set (equal offsets) of periodic tasks with distinct
  priorities; hp jobs are counted as min(⌈R/T_j⌉, N_j), so finite job counts
  are exact too (the first job after the synchronous release is the worst).
  With different offsets, ties, the 128 band or back-to-back tasks it is a
  sound upper bound (*sufficient*).
* EDF processor-demand test (Baruah, Rosier & Howell), for sets scheduled by
  deadline: checks dbf(t) ≤ t at every absolute deadline within the first
  synchronous busy period, counting finite job counts. Exact for synchronous
  periodic sets, *sufficient* with offsets or back-to-back tasks.
* Simulation of the concrete finite job set (fixed priorities, the EDF band,
  offsets, back-to-back chains and the kills at period end / critical time, as
  the target does them): *exact* for the given execution times taken as worst
  cases (preemptive uniprocessor scheduling of fixed job priorities is
  sustainable: shorter jobs never make another job later), provided fixed
  priorities are distinct and every task has ``cores`` = 1. With ties it
  breaks them first-in first-out, which Fiasco.OC does not do (``exact``
  false). Skipped (null) above MAX_SIMULATED_JOBS jobs.

No test models scheduling overheads, caches or the loader's own work: a set
that passes them all can still fail on the target, and the agreement table
shows how often it does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import groupby
from typing import Any, Iterable, Protocol

SCHEMA_VERSION = 1
DEADLINE_PRIORITY = 128  # Genode: ignore the priority, schedule by deadline
MAX_SIMULATED_JOBS = 100_000
MAX_DEMAND_POINTS = 1_000_000
MAX_RTA_ITERATIONS = 100_000
TESTS = ("liu_layland", "hyperbolic", "rta", "edf", "simulation")


class ExecutionTimeModel(Protocol):
    name: str
    version: int

    def execution_time_ms(self, pkg: str, arg1: int) -> int: ...


@dataclass(frozen=True)
class _Task:
    id: int
    c: int  # execution time of one job (ms)
    t: int  # period (ms); 0 = back to back
    d: int | None  # effective relative deadline (ms); None = none
    kill: int | None  # the job is killed this long after its release
    rank_d: int | None  # the deadline the 128 band orders by: deadline, else period
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
    return result


def empty_result(etm: ExecutionTimeModel | None = None) -> dict:
    """The shape of every analysis dict: all keys, no values."""
    return {
        "schema": SCHEMA_VERSION,
        "etm": {"name": getattr(etm, "name", None), "version": getattr(etm, "version", None)},
        "policy": None,
        "utilisation": None,
        "utilisation_max_core": None,
        "back_to_back": 0,
        "tasks": [],
        "liu_layland": {"applies": False, "bound": None, "pass": None, "verdict": None},
        "hyperbolic": {"applies": False, "product": None, "pass": None, "verdict": None},
        "rta": {"applies": False, "exact": False, "verdict": None},
        "edf": {"applies": False, "exact": False, "verdict": None, "points": 0},
        "simulation": {"exact": False, "verdict": None, "jobs": 0, "misses": 0, "first_miss": None},
        "verdict": None,
        "error": None,
    }


def _task(task: dict, etm: ExecutionTimeModel) -> _Task:
    period, criticaltime = int(task["period"]), int(task.get("criticaltime", 0))
    kill = min([v for v in (period, criticaltime) if v > 0], default=None)
    deadline = min([v for v in (int(task.get("deadline", 0)), period, criticaltime) if v > 0], default=None)
    return _Task(
        id=int(task["id"]), c=int(etm.execution_time_ms(task["pkg"], int(task.get("arg1", 0)))),
        t=period, d=deadline, kill=kill, rank_d=int(task.get("deadline", 0)) or period or None,
        o=int(task.get("offset", 0)), n=int(task.get("numberofjobs", 1)),
        prio=int(task.get("priority", 127)), core=int(task.get("coreoffset", 0)), cores=int(task.get("cores", 1)),
    )


def _fill(result: dict, model: list[_Task]) -> None:
    cores = [list(group) for _, group in groupby(sorted(model, key=lambda t: t.core), key=lambda t: t.core)]
    result["policy"] = _policy(model)
    utilisations = [sum(t.c / t.t for t in core if t.periodic) for core in cores]
    result["utilisation"] = round(sum(utilisations), 6)
    result["utilisation_max_core"] = round(max(utilisations), 6)
    result["back_to_back"] = sum(not t.periodic for t in model)
    wide = any(t.cores > 1 for t in model)
    per_core = [_analyse_core(core, wide) for core in cores]
    result["liu_layland"] = _combine_bound([c["liu_layland"] for c in per_core], "bound")
    result["hyperbolic"] = _combine_bound([c["hyperbolic"] for c in per_core], "product")
    result["rta"] = _combine([c["rta"] for c in per_core])
    result["edf"] = _combine([c["edf"] for c in per_core])
    result["edf"]["points"] = sum(c["edf"]["points"] for c in per_core)
    result["simulation"] = _combine_simulation([c["simulation"] for c in per_core])
    rows = {row["id"]: row for c in per_core for row in c["tasks"]}
    result["tasks"] = [rows[t.id] for t in model]
    result["verdict"] = _overall(result)


def _policy(model: list[_Task]) -> str:
    by_deadline = sum(t.by_deadline for t in model)
    return "edf" if by_deadline == len(model) else "fp" if by_deadline == 0 else "mixed"


def _overall(result: dict) -> bool | None:
    """The best label available: the simulation when it ran, else the exact-
    or-sufficient test that matches the policy."""
    if result["simulation"]["verdict"] is not None:
        return result["simulation"]["verdict"]
    if result["policy"] == "edf" and result["edf"]["verdict"] is not None:
        return result["edf"]["verdict"]
    return result["rta"]["verdict"] if (result["rta"]["verdict"] or result["rta"]["exact"]) else None


# -- one core -------------------------------------------------------------------


def _analyse_core(core: list[_Task], wide: bool) -> dict:
    synchronous = len({t.o for t in core}) == 1
    distinct = _distinct_priorities(core)
    wcrt = {t.id: _response_time(t, core) for t in core}
    simulation = _simulate(core)
    simulation["exact"] = simulation["exact"] and not wide
    tasks = [
        {
            "id": t.id, "core": t.core, "c_ms": t.c, "period_ms": t.t, "deadline_ms": t.d,
            "u": round(t.c / t.t, 6) if t.periodic else None,
            "wcrt_ms": wcrt[t.id], "rta_meets": _meets(wcrt[t.id], t),
            "sim_wcrt_ms": simulation["wcrt"].get(t.id), "sim_misses": simulation["task_misses"].get(t.id, 0),
        }
        for t in core
    ]
    all_periodic = all(t.periodic for t in core)
    rta_exact = synchronous and distinct and all_periodic and not any(t.by_deadline for t in core) and not wide
    edf_applies = all(t.by_deadline for t in core)
    edf_verdict, points = _edf_demand(core) if edf_applies else (None, 0)
    return {
        "tasks": tasks,
        "liu_layland": _liu_layland(core),
        "hyperbolic": _hyperbolic(core),
        "rta": {"applies": True, "exact": rta_exact, "verdict": all(row["rta_meets"] for row in tasks)},
        "edf": {"applies": edf_applies, "exact": edf_applies and synchronous and all_periodic and not wide,
                "verdict": edf_verdict, "points": points},
        "simulation": simulation,
    }


def _distinct_priorities(core: list[_Task]) -> bool:
    fixed = [t.prio for t in core if not t.by_deadline]
    return len(fixed) == len(set(fixed))


def _meets(wcrt: int | None, task: _Task) -> bool:
    return task.d is None or (wcrt is not None and wcrt <= task.d)


# -- utilisation bounds ---------------------------------------------------------


def _rate_monotonic_implicit(core: list[_Task]) -> bool:
    """Where the bound tests hold: periodic, D = T, distinct priorities that
    follow the periods (shorter period ⇒ numerically smaller priority)."""
    if not all(t.periodic and t.d == t.t and not t.by_deadline for t in core) or not _distinct_priorities(core):
        return False
    ordered = sorted(core, key=lambda t: t.prio)
    return all(a.t <= b.t for a, b in zip(ordered, ordered[1:]))


def _liu_layland(core: list[_Task]) -> dict:
    periodic = [t for t in core if t.periodic]
    u = sum(t.c / t.t for t in periodic)
    n = len(periodic)
    bound = n * (2 ** (1 / n) - 1) if n else None
    passed = bound is not None and u <= bound + 1e-12
    applies = _rate_monotonic_implicit(core)
    return {"applies": applies, "bound": bound, "pass": passed, "verdict": True if applies and passed else None}


def _hyperbolic(core: list[_Task]) -> dict:
    product = math.prod(1 + t.c / t.t for t in core if t.periodic)
    passed = product <= 2 + 1e-12
    applies = _rate_monotonic_implicit(core)
    return {"applies": applies, "product": product, "pass": passed, "verdict": True if applies and passed else None}


def _combine_bound(parts: list[dict], key: str) -> dict:
    """All cores must pass; the figure shown is the tightest core's."""
    applies = all(p["applies"] for p in parts)
    passed = all(p["pass"] for p in parts)
    values = [p[key] for p in parts if p[key] is not None]
    figure = (max if key == "product" else min)(values) if values else None
    return {"applies": applies, key: round(figure, 6) if figure is not None else None, "pass": passed,
            "verdict": True if applies and passed else None}


def _combine(parts: list[dict]) -> dict:
    applies = all(p["applies"] for p in parts)
    verdicts = [p["verdict"] for p in parts]
    verdict = None if not applies or None in verdicts else all(verdicts)
    return {"applies": applies, "exact": applies and all(p["exact"] for p in parts), "verdict": verdict}


# -- fixed-priority response-time analysis --------------------------------------


def _interferers(task: _Task, core: list[_Task]) -> list[_Task]:
    """Tasks that may run while ``task`` waits: higher priority and, for a
    sound bound under any tie-break, equal priority (the 128 band included)."""
    return [j for j in core if j.id != task.id and j.prio <= task.prio]


def _response_time(task: _Task, core: list[_Task]) -> int | None:
    """Smallest fixed point of R = C + Σ_j min(⌈R/T_j⌉, N_j)·C_j (a
    back-to-back chain counts all its N·C once). None when R passes the
    deadline (the set is unschedulable there and larger R means nothing)."""
    others = _interferers(task, core)
    limit = task.d if task.d is not None else task.c + sum(j.n * j.c for j in others)
    response = task.c
    for _ in range(MAX_RTA_ITERATIONS):
        demand = task.c + sum(_jobs_within(j, response) * j.c for j in others)
        if demand > limit:
            return None
        if demand == response:
            return response
        response = demand
    return None


def _jobs_within(task: _Task, window: int) -> int:
    if not task.periodic:
        return task.n
    return min(-(-window // task.t), task.n)


# -- EDF processor demand -------------------------------------------------------


def _edf_demand(core: list[_Task]) -> tuple[bool | None, int]:
    """dbf(t) ≤ t at every absolute deadline up to the synchronous busy period.

    Deadlines are walked in order with a running sum, so the cost is the
    number of deadlines, not deadlines × tasks. None if there are too many.
    """
    timed = [t for t in core if t.d is not None]
    busy = _busy_period(timed)
    jobs = []
    for t in timed:
        count = min(t.n, (busy - t.d) // t.spacing + 1) if busy >= t.d else 0
        if len(jobs) + count > MAX_DEMAND_POINTS:
            return None, 0
        jobs.extend((k * t.spacing + t.d, t.c) for k in range(count))
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
    while True:
        demand = sum(min(-(-length // t.spacing), t.n) * t.c for t in tasks)
        if demand == length:
            return length
        length = demand


# -- simulation of the concrete job set -----------------------------------------


@dataclass
class _Job:
    task: _Task
    number: int
    release: int
    remaining: int
    deadline: int | None  # absolute, for the miss
    rank: int | None  # absolute, for the order of the 128 band
    kill_at: int | None  # absolute

    def key(self) -> tuple:
        """Lower runs first: fixed priority, then the EDF band by absolute
        deadline (none = last); ties first-in first-out, then by task id."""
        if self.task.by_deadline:
            return (DEADLINE_PRIORITY, self.rank if self.rank is not None else math.inf,
                    self.release, self.task.id)
        return (self.task.prio, 0, self.release, self.task.id)


class _Simulation:
    """Preemptive uniprocessor schedule of one core, event by event."""

    def __init__(self, core: list[_Task]):
        self.core = core
        self.released = {t.id: 0 for t in core}
        self.next_release: dict[int, int | None] = {t.id: t.o for t in core}
        self.pending: list[_Job] = []
        self.wcrt: dict[int, int] = {}
        self.task_misses: dict[int, int] = {}
        self.first_miss: dict | None = None

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
                    None if task.d is None else now + task.d,
                    None if task.rank_d is None else now + task.rank_d,
                    None if task.kill is None else now + task.kill,
                ))
                more = self.released[task.id] < task.n
                # a back-to-back task releases its next job when this one ends
                self.next_release[task.id] = now + task.t if more and task.periodic else None

    def _advance(self, now: int) -> int:
        job = min(self.pending, key=_Job.key)
        candidates = [now + job.remaining]
        candidates += [r for r in self.next_release.values() if r is not None and r > now]
        candidates += [j.kill_at for j in self.pending if j.kill_at is not None]
        then = min(candidates)
        job.remaining -= then - now
        if job.remaining == 0:
            self._end(job, then, killed=False)
        for other in [j for j in self.pending if j.kill_at is not None and j.kill_at <= then]:
            self._end(other, then, killed=True)
        return then

    def _end(self, job: _Job, now: int, killed: bool) -> None:
        self.pending.remove(job)
        task = job.task
        if not killed:
            self.wcrt[task.id] = max(self.wcrt.get(task.id, 0), now - job.release)
        if killed or (job.deadline is not None and now > job.deadline):
            self.task_misses[task.id] = self.task_misses.get(task.id, 0) + 1
            if self.first_miss is None or now < self.first_miss["at_ms"]:
                self.first_miss = {"task": task.id, "job": job.number, "at_ms": now}
        if not task.periodic and self.released[task.id] < task.n:
            self.next_release[task.id] = now


def _simulate(core: list[_Task]) -> dict:
    jobs = sum(t.n for t in core)
    result = {"exact": False, "verdict": None, "jobs": jobs, "misses": 0, "first_miss": None,
              "wcrt": {}, "task_misses": {}}
    if jobs > MAX_SIMULATED_JOBS:
        return result
    simulation = _Simulation(core)
    simulation.run()
    misses = sum(simulation.task_misses.values())
    result.update(exact=_distinct_priorities(core), verdict=misses == 0, misses=misses,
                  first_miss=simulation.first_miss, wcrt=simulation.wcrt, task_misses=simulation.task_misses)
    return result


def _combine_simulation(parts: list[dict]) -> dict:
    verdicts = [p["verdict"] for p in parts]
    misses = [p["first_miss"] for p in parts if p["first_miss"]]
    return {
        "exact": all(p["exact"] for p in parts),
        "verdict": None if None in verdicts else all(verdicts),
        "jobs": sum(p["jobs"] for p in parts),
        "misses": sum(p["misses"] for p in parts),
        "first_miss": min(misses, key=lambda m: m["at_ms"]) if misses else None,
    }


# -- flat labels for exports ----------------------------------------------------

LABEL_COLUMNS = (
    "utilisation", "utilisation_max_core", "etm_name", "etm_version", "policy", "back_to_back",
    "ll_applies", "ll_bound", "ll_pass", "hyperbolic_applies", "hyperbolic_product", "hyperbolic_pass",
    "rta_schedulable", "rta_exact", "edf_schedulable", "edf_exact", "sim_schedulable", "sim_exact",
    "sim_misses", "analytic_schedulable",
)
TASK_LABEL_COLUMNS = ("c_ms", "wcrt_ms", "sim_wcrt_ms")


def flat_labels(analysis: dict | None) -> dict[str, Any]:
    """One value per LABEL_COLUMNS name: booleans as 1/0 so a CSV reader sees
    numbers, None where there is no analysis or the test does not apply."""
    if not analysis:
        return dict.fromkeys(LABEL_COLUMNS)
    ll, hyp, rta = analysis["liu_layland"], analysis["hyperbolic"], analysis["rta"]
    edf, sim = analysis["edf"], analysis["simulation"]
    return {
        "utilisation": analysis["utilisation"],
        "utilisation_max_core": analysis["utilisation_max_core"],
        "etm_name": analysis["etm"]["name"],
        "etm_version": analysis["etm"]["version"],
        "policy": analysis["policy"],
        "back_to_back": analysis["back_to_back"],
        "ll_applies": _bit(ll["applies"]), "ll_bound": ll["bound"], "ll_pass": _bit(ll["pass"]),
        "hyperbolic_applies": _bit(hyp["applies"]), "hyperbolic_product": hyp["product"],
        "hyperbolic_pass": _bit(hyp["pass"]),
        "rta_schedulable": _bit(rta["verdict"]), "rta_exact": _bit(rta["exact"]),
        "edf_schedulable": _bit(edf["verdict"]), "edf_exact": _bit(edf["exact"]),
        "sim_schedulable": _bit(sim["verdict"]), "sim_exact": _bit(sim["exact"]), "sim_misses": sim["misses"],
        "analytic_schedulable": _bit(analysis["verdict"]),
    }


def task_labels(analysis: dict | None) -> dict[int, dict[str, Any]]:
    """Per task id: its C, RTA bound and simulated worst response."""
    if not analysis:
        return {}
    return {row["id"]: {name: row[name] for name in TASK_LABEL_COLUMNS} for row in analysis["tasks"]}


def _bit(value: bool | None) -> int | None:
    return None if value is None else int(bool(value))


# -- agreement with the measured outcome ----------------------------------------


def agreement_table(pairs: Iterable[tuple[bool, dict | None]]) -> list[dict]:
    """How often each analytic verdict agrees with the measured outcome.

    ``pairs`` are (measured schedulable, analysis) of finished task-sets. For
    the bound tests the row counts their pass/fail where they apply; for the
    others their verdict where they gave one. A sufficient test that passes on
    a set the target could not schedule is a contradiction worth a look (the
    ETM is too optimistic, or the target has overheads the model lacks).
    """
    names = (*TESTS, "verdict")
    counts = {name: {"tt": 0, "tf": 0, "ft": 0, "ff": 0, "none": 0} for name in names}
    for measured, analysis in pairs:
        for name in names:
            predicted = _prediction(name, analysis)
            cell = "none" if predicted is None else ("t" if predicted else "f") + ("t" if measured else "f")
            counts[name][cell] += 1
    return [_agreement_row(name, counts[name]) for name in names]


def _prediction(name: str, analysis: dict | None) -> bool | None:
    if not analysis or analysis.get("error"):
        return None
    if name == "verdict":
        return analysis["verdict"]
    section = analysis[name]
    if name in ("liu_layland", "hyperbolic"):
        return section["pass"] if section["applies"] else None
    return section["verdict"]


def _agreement_row(name: str, cell: dict) -> dict:
    compared = cell["tt"] + cell["tf"] + cell["ft"] + cell["ff"]
    agree = cell["tt"] + cell["ff"]
    return {
        "test": name,
        "compared": compared,
        "agree": agree,
        "agreement": round(agree / compared, 4) if compared else None,
        "both_schedulable": cell["tt"],
        "both_unschedulable": cell["ff"],
        "analysis_yes_measured_no": cell["tf"],
        "analysis_no_measured_yes": cell["ft"],
        "not_applicable": cell["none"],
    }


def agreement(job) -> list[dict]:
    """The job page's table: ``agreement_table`` over the job's finished
    task-sets (a Job, a job id or a TaskSet queryset). Needs Django."""
    from distributor.models import TaskSet

    tasksets = job if hasattr(job, "model") else TaskSet.objects.filter(job=job)
    rows = tasksets.filter(state=TaskSet.State.FINISHED).values_list("outcome", "analysis")
    return agreement_table(
        (outcome == TaskSet.Outcome.SCHEDULABLE, analysis) for outcome, analysis in rows.iterator(chunk_size=2000)
    )
