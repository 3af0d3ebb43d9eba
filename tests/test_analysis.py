"""Analytic labels against examples computed by hand (distributor.analysis)."""
from __future__ import annotations

import json

from distributor.analysis import analyse
from distributor.label_columns import LABEL_COLUMNS, flat_labels
from tests.arg_is_time import ArgIsTime


def task(task_id: int, c: int, period: int, priority: int, **fields) -> dict:
    values = {"id": task_id, "pkg": "idle", "arg1": c, "period": period, "priority": priority, "deadline": 0,
              "offset": 0, "numberofjobs": 10, "criticaltime": 0, "quota": "1M", "caps": 10, "cores": 1,
              "coreoffset": 0}
    return {**values, **fields}


def wcrts(result: dict) -> list:
    return [row["wcrt_ms"] for row in result["tasks"]]


def test_it_finds_the_unschedulable_fixed_priority_set_with_u_at_most_one():
    # τ1 (C=2, T=4) over τ2 (C=3, T=6): U = 1. By hand, R2 = 3 + ⌈R/4⌉·2:
    # 3 → 5 → 7 > 6, so τ2 misses at t = 6 though U ≤ 1.
    result = analyse([task(0, 2, 4, 0), task(1, 3, 6, 1)], ArgIsTime())
    assert result["utilisation"] == 1.0
    assert result["policy"] == "fp"
    assert result["rta"] == {"applies": True, "exact": True, "verdict": False}
    assert wcrts(result) == [2, None]
    assert result["simulation"]["verdict"] is False
    assert result["simulation"]["first_miss"] == {"task": 1, "job": 0, "kind": "EXIT_PERIOD", "at_ms": 6}
    assert result["verdict"] is False
    # the bound tests do not pass, so they can only say "unknown"
    assert result["liu_layland"]["pass"] is False and result["liu_layland"]["verdict"] is None
    assert result["hyperbolic"]["product"] == 2.25 and result["hyperbolic"]["verdict"] is None


def test_the_same_set_by_deadline_passes_the_edf_demand_test():
    # All at 128: EDF. Busy period 12 (L = ⌈L/4⌉·2 + ⌈L/6⌉·3: 5 → 7 → 10 → 12);
    # deadlines 4, 6, 8, 12 carry demand 2, 5, 7, 12: never above t.
    result = analyse([task(0, 2, 4, 128), task(1, 3, 6, 128)], ArgIsTime())
    assert result["policy"] == "edf"
    assert result["edf"] == {"applies": True, "exact": True, "verdict": True, "points": 5}
    assert result["simulation"]["verdict"] is True
    assert result["verdict"] is True


def test_it_finds_an_edf_set_with_constrained_deadlines_unschedulable():
    # (C=2, D=2, T=5) and (C=2, D=3, T=5): U = 0.8 but dbf(3) = 4 > 3.
    tasks = [task(0, 2, 5, 128, deadline=2), task(1, 2, 5, 128, deadline=3)]
    result = analyse(tasks, ArgIsTime())
    assert result["utilisation"] == 0.8
    assert result["edf"]["verdict"] is False
    assert result["simulation"]["verdict"] is False
    assert result["liu_layland"]["applies"] is False  # not rate-monotonic, D < T


def test_response_times_of_a_three_task_set_beat_both_bounds():
    # (1,4) (2,6) (3,10), U = 0.883 > LL(3) = 0.780 and Π(1+U_i) = 2.167 > 2,
    # yet by hand R3 = 3 + ⌈R/4⌉ + 2⌈R/6⌉: 3 → 6 → 7 → 9 → 10 → 10 ≤ 10.
    result = analyse([task(0, 1, 4, 0), task(1, 2, 6, 1), task(2, 3, 10, 2)], ArgIsTime())
    assert wcrts(result) == [1, 3, 10]
    assert result["rta"]["verdict"] is True and result["rta"]["exact"] is True
    assert result["liu_layland"] == {"applies": True, "bound": 0.779763, "pass": False, "verdict": None}
    assert result["hyperbolic"]["pass"] is False
    assert [row["sim_wcrt_ms"] for row in result["tasks"]] == [1, 3, 10]


def test_the_hyperbolic_bound_passes_where_liu_and_layland_fails():
    # (1,2) (1,3): U = 0.833 > 0.828, but 1.5 · 1.333 = 2 ≤ 2.
    result = analyse([task(0, 1, 2, 0), task(1, 1, 3, 1)], ArgIsTime())
    assert result["liu_layland"]["verdict"] is None
    assert result["hyperbolic"] == {"applies": True, "product": 2.0, "pass": True, "verdict": True}
    assert wcrts(result) == [1, 2]


def test_the_bounds_do_not_apply_when_priorities_are_not_rate_monotonic():
    # the longer period has the higher priority
    result = analyse([task(0, 1, 10, 0), task(1, 1, 4, 1)], ArgIsTime())
    assert result["hyperbolic"]["pass"] is True
    assert result["hyperbolic"]["applies"] is False and result["hyperbolic"]["verdict"] is None
    assert result["rta"]["verdict"] is True


def test_finite_job_counts_limit_the_interference():
    # τ1 (C=3, T=5) runs once: R2 = 3 + min(⌈6/5⌉, 1)·3 = 6 ≤ 8. With endless
    # jobs it would be 3 + 2·3 = 9 > 8.
    once = analyse([task(0, 3, 5, 0, numberofjobs=1), task(1, 3, 8, 1)], ArgIsTime())
    endless = analyse([task(0, 3, 5, 0), task(1, 3, 8, 1)], ArgIsTime())
    assert wcrts(once) == [3, 6] and once["rta"]["verdict"] is True
    assert endless["rta"]["verdict"] is False


def test_offsets_make_rta_only_sufficient_and_the_simulation_decides():
    # τ2 is released at 5, after τ1's job ended at 3: it answers in 3 ≤ D = 4,
    # while RTA (which assumes a common release) says 6 > 4.
    tasks = [task(0, 3, 10, 0, numberofjobs=2), task(1, 3, 10, 1, offset=5, deadline=4, numberofjobs=2)]
    result = analyse(tasks, ArgIsTime())
    assert result["rta"] == {"applies": True, "exact": False, "verdict": False}
    assert result["simulation"]["verdict"] is True and result["simulation"]["exact"] is True
    assert result["tasks"][1]["sim_wcrt_ms"] == 3
    assert result["verdict"] is True


def test_equal_priorities_interfere_with_each_other_and_are_not_exact():
    result = analyse([task(0, 2, 5, 5), task(1, 2, 5, 5)], ArgIsTime())
    assert wcrts(result) == [4, 4]
    assert result["rta"]["exact"] is False and result["simulation"]["exact"] is False
    assert result["rta"]["verdict"] is True


def test_a_back_to_back_task_counts_its_whole_chain_once():
    # τ1 runs 3 jobs of 2 ms back to back at the highest priority: τ2 waits 6.
    tasks = [task(0, 2, 0, 0, numberofjobs=3), task(1, 1, 10, 1, numberofjobs=1)]
    result = analyse(tasks, ArgIsTime())
    assert result["back_to_back"] == 1
    assert result["utilisation"] == 0.1  # the chain has no rate
    assert wcrts(result) == [2, 7]
    assert [row["sim_wcrt_ms"] for row in result["tasks"]] == [2, 7]
    assert result["liu_layland"]["applies"] is False


def test_tasks_on_different_cores_do_not_interfere():
    tasks = [task(0, 3, 4, 0), task(1, 3, 4, 1, coreoffset=1)]
    result = analyse(tasks, ArgIsTime())
    assert wcrts(result) == [3, 3]
    assert result["utilisation"] == 1.5 and result["utilisation_max_core"] == 0.75
    assert result["verdict"] is True


def test_a_kill_at_the_critical_time_is_a_deadline():
    result = analyse([task(0, 5, 20, 0, criticaltime=4)], ArgIsTime())
    assert result["tasks"][0]["deadline_ms"] == 4
    assert result["verdict"] is False and result["simulation"]["misses"] == 10


def test_the_result_is_json_with_stable_keys_and_names_the_model():
    result = analyse([task(0, 1, 4, 0)], ArgIsTime())
    assert json.loads(json.dumps(result)) == result
    assert result["etm"] == {"name": "arg-is-time", "version": 3, "calibrated": False, "unknown_pkgs": []}
    assert set(flat_labels(result)) == set(LABEL_COLUMNS)
    assert flat_labels(result)["rta_schedulable"] == 1


def test_a_model_that_refuses_a_package_gives_an_error_not_an_exception():
    class Refusing(ArgIsTime):
        def execution_time_ms(self, pkg, arg1):
            raise KeyError(pkg)

    result = analyse([task(0, 1, 4, 0)], Refusing())
    assert result["error"].startswith("execution-time model")
    assert result["verdict"] is None and set(result) == set(analyse([task(0, 1, 4, 0)], ArgIsTime()))
