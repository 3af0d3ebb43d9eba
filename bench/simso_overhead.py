"""SimSo task-sets per second through the project versus SimSo called directly.

    python bench/simso_overhead.py [--sets 300] [--rounds 5] [--seed 1]

Both paths simulate the same seeded random small task-sets with the same
SimSo configuration (``sessions.simso.build_configuration``: one processor,
the project's scheduler and task classes, the default execution-time model):

* direct:  Configuration -> ``Model`` -> ``run_model()``;
* project: ``SimsoSession.start`` + ``run`` + ``EventTracker.feed`` + the
  task-job list, i.e. what a machine does per task-set minus the database.

So the difference is what the project adds on top of the simulation itself
(reading the jobs back, sorting the events, tracking them). Each path runs
``--rounds`` times, alternating, and the fastest round counts, which keeps
noise from other processes on a shared machine out of the ratio.
Target: project overhead under 20%.
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

import django  # noqa: E402

django.setup()

from simso.core import Model  # noqa: E402

from sessions import EventTracker, SessionInfo, etm  # noqa: E402
from sessions.simso import SimsoSession, build_configuration  # noqa: E402

PACKAGES = ("hey", "pi", "cond_42", "cond_mod", "tumatmul", "namaste", "idle")


def random_taskset(rng: random.Random) -> list[dict]:
    """2-5 tasks, 1-10 jobs each, a mix of FP, EDF, back-to-back and kills."""
    return [{
        "id": task_id, "pkg": rng.choice(PACKAGES), "arg1": rng.randint(0, 20),
        "priority": rng.choice([0, 1, 2, 5, 10, 127, 128, 128]), "deadline": rng.choice([0, 0, 20]),
        "period": rng.choice([0, 10, 20, 25, 50, 100]), "offset": rng.randint(0, 10),
        "numberofjobs": rng.randint(1, 10), "criticaltime": rng.choice([0, 0, 0, 15]),
        "quota": "100M", "caps": 235, "cores": 1, "coreoffset": 0,
    } for task_id in range(rng.randint(2, 5))]


def run_direct(tasksets: list[list[dict]], model: etm.ExecutionTimeModel) -> None:
    for tasks in tasksets:
        Model(build_configuration(tasks, model)).run_model()


def run_project(tasksets: list[list[dict]], session: SimsoSession) -> int:
    jobs = 0
    for tasks in tasksets:
        session.start(tasks)
        tracker = EventTracker(tasks)
        tracker.feed(session.run(timeout=0))
        assert tracker.finished
        jobs += len(tracker.all_jobs())
    return jobs


def timed(function, *args) -> float:
    started = time.perf_counter()
    function(*args)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    options = parser.parse_args()

    rng = random.Random(options.seed)
    tasksets = [random_taskset(rng) for _ in range(options.sets)]
    model = etm.load("default")
    info = SessionInfo(machine_id=0, slot=0, address="", settings={}, log=logging.getLogger("bench"))
    session = SimsoSession(info)
    jobs = run_project(tasksets, session)  # warm up and count

    direct, project = [], []
    for _ in range(options.rounds):
        direct.append(timed(run_direct, tasksets, model))
        project.append(timed(run_project, tasksets, session))
    direct_s, project_s = min(direct), min(project)
    overhead = project_s / direct_s - 1
    print(f"{options.sets} task-sets ({jobs} jobs), seed {options.seed}, best of {options.rounds} rounds")
    print(f"SimSo directly:     {options.sets / direct_s:8.1f} task-sets/s")
    print(f"through the project:{options.sets / project_s:8.1f} task-sets/s")
    print(f"project/direct time: {project_s / direct_s:.3f} (overhead {overhead:+.1%}; target < +20%)")


if __name__ == "__main__":
    main()
