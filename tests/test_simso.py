"""The simso session and the execution-time model.

Every schedule below was worked out on paper first; the comment above each
assertion is that working. The tests use a tiny model in which a job of pkg
"t" runs exactly ``arg1`` ms, so ``c=3`` in a task means C = 3 ms.
Notation: ``[a, b)`` is the job running from a to b; "P" a priority.
"""
from __future__ import annotations

import json
import logging
import random

import pytest

from distributor.taskfile import expander, parse
from sessions import EventTracker, SessionInfo, TargetFailure, get_session_class
from sessions import etm
from sessions.simso import SimsoSession

TINY = {
    "name": "tiny",
    "version": 3,
    "packages": {"t": {"base_ms": 0, "per_arg_ms": 1}, "fixed7": {"base_ms": 7}},
    "default": {"base_ms": 5},
}


def task(task_id: int, c: int, **fields) -> dict:
    """A concrete task as distributor.taskfile decodes it, taking C = c ms."""
    concrete = {"id": task_id, "pkg": "t", "arg1": c, "priority": 127, "deadline": 0, "period": 0,
                "offset": 0, "numberofjobs": 1, "criticaltime": 0, "quota": "100M", "caps": 235,
                "cores": 1, "coreoffset": 0}
    concrete.update(fields)
    return concrete


def session(etm_setting=None) -> SimsoSession:
    settings = {} if etm_setting is None else {"etm": etm_setting}
    info = SessionInfo(machine_id=1, slot=0, address="", settings=settings, log=logging.getLogger("test"))
    return SimsoSession(info)


def events_of(tasks: list[dict], etm_setting=TINY) -> list[tuple]:
    runner = session(etm_setting)
    runner.start(tasks)
    return [tuple(event) for event in runner.run(timeout=1)]


def schedule(tasks: list[dict], etm_setting=TINY) -> list[tuple]:
    """(task, job, start, end, exit type) of every job, through the tracker."""
    runner = session(etm_setting)
    runner.start(tasks)
    tracker = EventTracker(tasks)
    tracker.feed(runner.run(timeout=1))
    assert tracker.finished
    return [(j.task_id, j.job_number, j.start_ms, j.end_ms, j.exit_type) for j in tracker.all_jobs()]


# -- fixed priorities -----------------------------------------------------------


def test_it_preempts_a_lower_fixed_priority_job():
    # T0: P5, C=5, released 0.  T1: P1, C=2, period 4, offset 1, two jobs.
    # 0: only T0 -> T0 [0,1).  1: T1 (P1 beats P5) [1,3); T0 resumes [3,5)
    # (3 of 5 done).  5: T1 job 1 preempts [5,7); T0 finishes [7,9).
    tasks = [task(0, 5, priority=5, period=20), task(1, 2, priority=1, period=4, offset=1, numberofjobs=2)]
    assert schedule(tasks) == [
        (0, 0, 0, 9, "EXIT"),
        (1, 0, 1, 3, "EXIT"),
        (1, 1, 5, 7, "EXIT"),
    ]


def test_genode_priority_0_beats_5():
    # Both released at 0. Genode: 0 is the highest, so T1 [0,2), then T0 [2,4).
    # (SimSo's own FP, highest number first, or ignoring priorities and
    # going by task id, would run T0 first.)
    tasks = [task(0, 2, priority=5, period=10), task(1, 2, priority=0, period=10)]
    assert schedule(tasks) == [(0, 0, 2, 4, "EXIT"), (1, 0, 0, 2, "EXIT")]


def test_equal_priorities_do_not_preempt_each_other():
    # T0 P3 C=4 at 0 runs [0,4); T1 P3 C=1 released at 1 waits until 4: [4,5).
    tasks = [task(0, 4, priority=3, period=10), task(1, 1, priority=3, period=10, offset=1)]
    assert schedule(tasks) == [(0, 0, 0, 4, "EXIT"), (1, 0, 4, 5, "EXIT")]


def test_equal_priorities_resume_in_release_order():
    # T1 P3 C=3 from 0 [0,2); T0 P3 C=1 released at 1 waits. T2 P0 C=1 at 2
    # [2,3). At 3 both P3 jobs wait: T1, released first, resumes [3,4)
    # before T0 (the lower id) [4,5).
    tasks = [task(0, 1, priority=3, period=10, offset=1), task(1, 3, priority=3, period=10),
             task(2, 1, priority=0, period=10, offset=2)]
    assert schedule(tasks) == [(0, 0, 4, 5, "EXIT"), (1, 0, 0, 4, "EXIT"), (2, 0, 2, 3, "EXIT")]


# -- deadlines ------------------------------------------------------------------


def test_it_schedules_priority_128_by_earliest_deadline():
    # All 128 (EDF). T0: C=2, period 5, two jobs. T1: C=4, period 7, two jobs.
    # 0: deadlines 5 (T0) and 7 (T1) -> T0 [0,2); T1 [2,5) (3 of 4).
    # 5: T0 job 1, deadline 10, does not beat T1's 7 -> T1 [5,6) EXIT.
    # 6: T0 job 1 [6,8).  7: T1 job 1 released (deadline 14), waits; [8,12).
    # Fixed priorities with T0 first (rate monotonic) would preempt T1 at 5
    # and kill it at its period end 7.
    tasks = [task(0, 2, priority=128, period=5, numberofjobs=2),
             task(1, 4, priority=128, period=7, numberofjobs=2)]
    assert schedule(tasks) == [
        (0, 0, 0, 2, "EXIT"),
        (0, 1, 6, 8, "EXIT"),
        (1, 0, 2, 6, "EXIT"),
        (1, 1, 8, 12, "EXIT"),
    ]


def test_the_deadline_field_comes_before_the_period():
    # T1: C=3, period 10 -> absolute deadline 10; runs [0,1).
    # T0: C=2, period 100 but deadline 4, released at 1 -> absolute 5: it
    # preempts, [1,3); T1 resumes [3,5).
    tasks = [task(0, 2, priority=128, period=100, deadline=4, offset=1), task(1, 3, priority=128, period=10)]
    assert schedule(tasks) == [(0, 0, 1, 3, "EXIT"), (1, 0, 0, 5, "EXIT")]


def test_a_task_without_deadline_runs_after_those_with_one():
    # T0: 128, period 0, no deadline -> last. T1: 128, period 50 -> deadline 50.
    tasks = [task(0, 2, priority=128), task(1, 3, priority=128, period=50)]
    assert schedule(tasks) == [(0, 0, 3, 5, "EXIT"), (1, 0, 0, 3, "EXIT")]


def test_any_fixed_priority_outranks_priority_128():
    # T1: P127, C=3 runs first [0,3) although T0 (128) has the earlier
    # deadline 4. T0 runs [3,4) and is killed at its period end 4.
    tasks = [task(0, 2, priority=128, period=4), task(1, 3, priority=127, period=20)]
    assert schedule(tasks) == [(0, 0, 3, 4, "EXIT_PERIOD"), (1, 0, 0, 3, "EXIT")]


def test_a_deadline_miss_alone_does_not_kill():
    # C=3, deadline 2, period 10: misses its deadline, ends late with EXIT at 3.
    assert schedule([task(0, 3, priority=0, period=10, deadline=2)]) == [(0, 0, 0, 3, "EXIT")]


# -- kills ----------------------------------------------------------------------


def test_it_kills_a_job_at_its_period_end():
    # T1: P0, C=3 [0,3). T0: P1, C=3, period 5: [3,5) is 2 of 3 -> killed at
    # its period end 5 (EXIT_PERIOD); job 1 released at 5 runs [5,8) EXIT.
    tasks = [task(0, 3, priority=1, period=5, numberofjobs=2), task(1, 3, priority=0, period=10)]
    assert schedule(tasks) == [
        (0, 0, 3, 5, "EXIT_PERIOD"),
        (0, 1, 5, 8, "EXIT"),
        (1, 0, 0, 3, "EXIT"),
    ]


def test_a_job_that_never_ran_is_not_scheduled():
    # T1: P0, C=5 [0,5). T0: P1, C=2, period 4: job 0 never gets the CPU and
    # is killed at 4 -> NOT_SCHEDULED, start = end = 4. Job 1, released at 4,
    # starts at its first dispatch 5 (not its release): [5,7).
    tasks = [task(0, 2, priority=1, period=4, numberofjobs=2), task(1, 5, priority=0, period=10)]
    assert schedule(tasks) == [
        (0, 0, 4, 4, "NOT_SCHEDULED"),
        (0, 1, 5, 7, "EXIT"),
        (1, 0, 0, 5, "EXIT"),
    ]


def test_a_job_first_free_to_run_at_its_kill_is_not_scheduled():
    # T1: P0, C=4 [0,4). T0: P1, C=1, period 4: the CPU frees at 4, the very
    # instant job 0 is killed -> NOT_SCHEDULED at 4; job 1 runs [4,5).
    tasks = [task(0, 1, priority=1, period=4, numberofjobs=2), task(1, 4, priority=0, period=10)]
    assert schedule(tasks) == [
        (0, 0, 4, 4, "NOT_SCHEDULED"),
        (0, 1, 4, 5, "EXIT"),
        (1, 0, 0, 4, "EXIT"),
    ]


def test_a_job_that_completes_at_its_period_end_exits_normally():
    # C=4, period 4: [0,4) and [4,8), both complete exactly at the kill time.
    assert schedule([task(0, 4, priority=0, period=4, numberofjobs=2)]) == [
        (0, 0, 0, 4, "EXIT"),
        (0, 1, 4, 8, "EXIT"),
    ]


def test_it_kills_a_job_at_its_critical_time():
    # C=3, criticaltime 2, period 10: [0,2) EXIT_CRITICAL, [10,12) EXIT_CRITICAL.
    assert schedule([task(0, 3, priority=0, period=10, criticaltime=2, numberofjobs=2)]) == [
        (0, 0, 0, 2, "EXIT_CRITICAL"),
        (0, 1, 10, 12, "EXIT_CRITICAL"),
    ]


def test_the_earlier_kill_wins_and_the_period_end_wins_a_tie():
    # C=3, period 2: criticaltime 5 comes after the period end 2, criticaltime
    # 2 ties with it: both killed at 2 by the period end.
    later = task(0, 3, priority=0, period=2, criticaltime=5)
    tie = task(1, 3, priority=1, period=2, criticaltime=2, offset=10)
    assert schedule([later, tie]) == [(0, 0, 0, 2, "EXIT_PERIOD"), (1, 0, 10, 12, "EXIT_PERIOD")]


def test_a_critical_time_kill_releases_the_next_back_to_back_job():
    # Period 0, C=3, criticaltime 2: job 0 [0,2) killed, job 1 released at 2:
    # [2,4) killed.
    assert schedule([task(0, 3, priority=0, criticaltime=2, numberofjobs=2)]) == [
        (0, 0, 0, 2, "EXIT_CRITICAL"),
        (0, 1, 2, 4, "EXIT_CRITICAL"),
    ]


# -- releases -------------------------------------------------------------------


def test_period_0_runs_the_jobs_back_to_back():
    # T1: P0, C=1, period 4, two jobs: [0,1) and [4,5).
    # T0: P1, C=2, period 0, offset 1, three jobs: job 0 [1,3); job 1 released
    # at 3 runs [3,4), is preempted by T1 at 4, resumes [5,6); job 2 released
    # at 6 runs [6,8).
    tasks = [task(0, 2, priority=1, offset=1, numberofjobs=3), task(1, 1, priority=0, period=4, numberofjobs=2)]
    assert schedule(tasks) == [
        (0, 0, 1, 3, "EXIT"),
        (0, 1, 3, 6, "EXIT"),
        (0, 2, 6, 8, "EXIT"),
        (1, 0, 0, 1, "EXIT"),
        (1, 1, 4, 5, "EXIT"),
    ]


def test_offsets_delay_the_first_release():
    # T1: P1, C=8, period 20 from 0: [0,5), preempted, [7,10).
    # T0: P0, C=2, period 10, offset 5: released 5 and 15: [5,7) and [15,17).
    tasks = [task(0, 2, priority=0, period=10, offset=5, numberofjobs=2), task(1, 8, priority=1, period=20)]
    assert schedule(tasks) == [
        (0, 0, 5, 7, "EXIT"),
        (0, 1, 15, 17, "EXIT"),
        (1, 0, 0, 10, "EXIT"),
    ]


def test_the_events_are_what_a_genode_target_sends():
    # Back to back from offset 2, C=3: each job's exit precedes the next
    # job's start at the same ms, and JOBS_DONE follows the last exit.
    assert events_of([task(0, 3, offset=2, numberofjobs=2)]) == [
        (0, "START", 2),
        (0, "EXIT", 5),
        (0, "START", 5),
        (0, "EXIT", 8),
        (0, "JOBS_DONE", 8),
    ]


def test_at_one_instant_ends_come_before_starts():
    # T1 (P0) [0,2) ends at 2, the instant T0 (P5) starts.
    assert events_of([task(0, 2, priority=5), task(1, 2, priority=0)]) == [
        (1, "START", 0),
        (1, "EXIT", 2),
        (1, "JOBS_DONE", 2),
        (0, "START", 2),
        (0, "EXIT", 4),
        (0, "JOBS_DONE", 4),
    ]


def test_run_returns_the_events_once():
    runner = session(TINY)
    runner.start([task(0, 1)])
    assert len(runner.run(timeout=1)) == 3
    assert runner.run(timeout=1) == []


def test_random_task_sets_always_finish_with_every_job():
    # Not hand-checked: whatever the mix, the tracker accepts the stream and
    # sees exactly numberofjobs jobs per task (no TargetFailure).
    rng = random.Random(7)
    for _ in range(150):
        tasks = [task(i, rng.randint(1, 6), priority=rng.choice([0, 1, 5, 127, 128, 128]),
                      period=rng.choice([0, 3, 4, 5, 8, 10]), deadline=rng.choice([0, 0, 3]),
                      offset=rng.randint(0, 4), numberofjobs=rng.randint(1, 4),
                      criticaltime=rng.choice([0, 0, 2, 5])) for i in range(rng.randint(1, 5))]
        jobs = schedule(tasks)
        assert len(jobs) == sum(t["numberofjobs"] for t in tasks)
        assert all(start <= end for _, _, start, end, _ in jobs)


def test_a_task_set_file_runs_with_the_default_model():
    # pi with arg1 3 takes 2 + 0.5·3 = 3.5, rounded up to 4 ms; hey 1 ms.
    data = json.dumps({"name": "x", "tasksets": [{"tasks": [
        {"pkg": "hey", "period": 10, "priority": 1, "numberofjobs": 2},
        {"pkg": "pi", "config": {"arg1": 3}, "period": 0, "priority": 2, "numberofjobs": 2},
    ]}]})
    tasks = expander(parse(data, max_bytes=10_000).spec).variant(0)
    # hey [0,1); pi [1,5), [5,9); hey job 1 at 10 [10,11).
    assert schedule(tasks, etm_setting=None) == [
        (0, 0, 0, 1, "EXIT"),
        (0, 1, 10, 11, "EXIT"),
        (1, 0, 1, 5, "EXIT"),
        (1, 1, 5, 9, "EXIT"),
    ]


# -- the session kind ---------------------------------------------------------


def test_simso_is_a_registered_kind():
    assert get_session_class("simso") is SimsoSession


def test_check_settings_accepts_a_name_and_an_inline_model(tmp_path):
    path = tmp_path / "model.json"
    path.write_text(json.dumps(TINY))
    for value in ("default", str(path), TINY):
        assert SimsoSession.check_settings({"etm": value}, []) == {}


def test_check_settings_refuses_a_bad_model(tmp_path):
    errors = SimsoSession.check_settings({"etm": {**TINY, "version": 0}}, [])
    assert list(errors) == ["settings.etm"] and "version" in errors["settings.etm"]
    assert "stored" in SimsoSession.check_settings({"etm": 3}, [])["settings.etm"]
    assert "settings.wcet" in SimsoSession.check_settings({"wcet": 3}, [])


def test_an_unreadable_model_is_a_target_failure(tmp_path):
    with pytest.raises(TargetFailure, match="settings.etm"):
        session(str(tmp_path / "missing.json")).start_host()


def test_the_execution_time_comes_from_the_model():
    # fixed7: 7 ms whatever arg1; "other" is not listed: the default, 5 ms.
    tasks = [task(0, 1, pkg="fixed7", priority=0, period=100), task(1, 99, pkg="other", priority=1, period=100)]
    assert schedule(tasks) == [(0, 0, 0, 7, "EXIT"), (1, 0, 7, 12, "EXIT")]


# -- the execution-time model ---------------------------------------------------


def test_the_default_model_covers_the_seed_binaries():
    model = etm.load()
    assert (model.name, model.version) == ("genode-defaults", 1)
    for pkg in ("hey", "pi", "cond_42", "cond_mod", "linpack", "tumatmul", "namaste", "idle"):
        assert model.execution_time_ms(pkg, 10) >= 1
    assert "calibrate" in json.loads(etm.DEFAULT_PATH.read_text())["note"]


def test_it_loads_a_model_from_a_file(tmp_path):
    path = tmp_path / "model.json"
    path.write_text(json.dumps({**TINY, "name": "from-file"}))
    model = etm.load(str(path))
    assert (model.name, model.version, model.execution_time_ms("t", 4)) == ("from-file", 3, 4)


def test_an_unknown_package_uses_the_default():
    assert etm.load(TINY).execution_time_ms("linpack", 1000) == 5


def test_times_are_exact_decimals_rounded_up_and_at_least_1():
    model = etm.load({"name": "m", "version": 1, "default": {"base_ms": 0},
                      "packages": {"p": {"base_ms": 0, "per_arg_ms": 0.1}}})
    # 0.1 · 30 is 3 exactly (not 3.0000000000000004 -> 4); 0.1 · 31 -> 4.
    assert [model.execution_time_ms("p", arg) for arg in (30, 31, 0)] == [3, 4, 1]


@pytest.mark.parametrize("change, field", [
    ({"default": None}, "default"),
    ({"packages": {"p": {"base_ms": -1}}}, "packages.p.base_ms"),
    ({"packages": {"p": {"base_ms": 1, "slope": 2}}}, "packages.p.slope"),
    ({"packages": {"p": {"per_arg_ms": 1}}}, "packages.p.base_ms"),
    ({"version": "1"}, "version"),
    ({"name": ""}, "name"),
    ({"extra": 1}, "extra"),
])
def test_a_bad_inline_model_is_refused(change, field):
    document = {**TINY, **change}
    if change.get("default", 0) is None:
        del document["default"]
    with pytest.raises(etm.EtmError, match=field):
        etm.load(document)


def test_a_file_that_is_not_json_is_refused(tmp_path):
    path = tmp_path / "model.json"
    path.write_text("{nope")
    with pytest.raises(etm.EtmError, match="not a readable JSON file"):
        etm.load(str(path))
