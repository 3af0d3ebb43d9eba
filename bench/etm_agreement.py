"""Agreement of the analytic labels with the measured outcome, before and
after calibrating the execution-time model on the target (issue 14).

    python bench/etm_agreement.py [--sets 200] [--seed 14] [--peers 4]

Four task-loader peers (tests/peer) whose programs run for other times than
genode-defaults says (pi 5 + 40·arg1 ms, hey 2 + 10·arg1 ms; the defaults
say 2 + 0.5·arg1 and 1) run a random fixed-priority job through the real
engine (``submit --wait --inline``: the queue, machines and Genode sessions
in this process). Printed: how many finished sets have an exact analytic
verdict and how many of those agree with the measured outcome, with the
target's model (genode-defaults), then after ``etm calibrate`` on the same
peers and ``relabel --etm``. Rows go to a fresh SQLite file in a folder of
its own (or the database BENCH_DATABASE_URL names), removed afterwards.
``scenario`` is what tests/test_etm_acceptance.py runs and checks.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

PEER_MS = {"pi": (5, 40), "hey": (2, 10)}  # (base, per arg1) the peers' programs really take
BINARIES = {"pi": b"\x7fELF pi " * 40, "hey": b"\x7fELF hey " * 40}


def peer_exec_time(task: dict, number: int) -> int:
    base, per_arg = PEER_MS[task["pkg"]]
    return base + per_arg * int(task["arg1"])


def job_spec(sets: int, seed: int) -> dict:
    """Three synchronous periodic tasks of distinct fixed priorities, their
    arg1 and periods drawn per variant; ``caps`` only numbers the variants."""
    return {"name": "etm agreement", "seed": seed, "tasksets": [{"tasks": [
        {"pkg": "pi", "config": {"arg1": {"random": [0, 3]}}, "period": {"random": [60, 400]}, "priority": 1,
         "numberofjobs": 3, "caps": {"range": [100, 100 + sets]}},
        {"pkg": "hey", "config": {"arg1": {"random": [0, 5]}}, "period": {"random": [60, 300]}, "priority": 2,
         "numberofjobs": 3},
        {"pkg": "pi", "config": {"arg1": {"random": [0, 3]}}, "period": {"random": [150, 700]}, "priority": 3,
         "numberofjobs": 2},
    ]}]}


def figures(job_id: int) -> dict:
    """Finished sets with a timing outcome; of them, those with an exact
    verdict, and of those, the ones whose verdict is the measured outcome."""
    from distributor.models import TaskSet

    timed = (TaskSet.Outcome.SCHEDULABLE, TaskSet.Outcome.UNSCHEDULABLE)
    rows = TaskSet.objects.filter(job_id=job_id, state=TaskSet.State.FINISHED, outcome__in=timed)
    finished = exact = agree = measured_ok = 0
    models = set()
    for outcome, analysis in rows.values_list("outcome", "analysis"):
        finished += 1
        measured_ok += outcome == TaskSet.Outcome.SCHEDULABLE
        if not analysis:
            continue
        models.add((analysis["etm"]["name"], analysis["etm"]["version"], analysis["etm"].get("calibrated", False)))
        if analysis.get("verdict_exact") and analysis.get("verdict") is not None:
            exact += 1
            agree += analysis["verdict"] == (outcome == TaskSet.Outcome.SCHEDULABLE)
    return {"finished": finished, "measured_schedulable": measured_ok, "exact": exact, "agree": agree,
            "exact_share": round(exact / finished, 4) if finished else None,
            "agreement": round(agree / exact, 4) if exact else None,
            "models": sorted(f"{n} v{v}{' (calibrated here)' if c else ''}" for n, v, c in models)}


def scenario(sets: int = 200, seed: int = 14, peers: int = 4, out=print) -> dict:
    """Run it all in the configured database; returns {"before", "calibration", "after"}."""
    from distributor.models import Target
    from tests.cluster import short_timeouts, store_binaries
    from tests.peer import PeerFarm

    short_timeouts(target_timeout_s=20)
    stored = store_binaries(BINARIES)
    next(stored)
    try:
        with PeerFarm(peers, time_scale=0, exec_time=peer_exec_time) as farm:
            Target.objects.create(name="peers", kind="genode", addresses=farm.addresses,
                                  settings={"connect_timeout": 5.0, "startup_timeout": 10.0})
            spec = Path(tempfile.mkdtemp(prefix="etm-agreement-")) / "random.json"
            spec.write_text(json.dumps(job_spec(sets, seed)))
            job = json.loads(_command("submit", str(spec), "--target", "peers", "--wait", "--inline",
                                      "--timeout", "600"))
            shutil.rmtree(spec.parent, ignore_errors=True)
            before = figures(job["job"])
            out(f"before: {_line(before)}")
            calibrated = json.loads(_command("etm", "calibrate", "--target", "peers", "--pkg", "pi,hey",
                                             "--args", "0:5", "--jobs", "3", "--name", "peers-measured",
                                             "--wait", "--inline", "--timeout", "600"))
            out(f"calibration: job {calibrated['job']} -> {calibrated['name']} v{calibrated['version']} "
                f"(calibrated on {calibrated['target']})")
            _command("target", "edit", "peers", "--set", "etm=peers-measured")
            _command("relabel", "--job", str(job["job"]), "--etm", "peers-measured", "--workers", "1")
            after = figures(job["job"])
            out(f"after:  {_line(after)}")
    finally:
        try:
            next(stored)
        except StopIteration:
            pass
    return {"before": before, "calibration": calibrated, "after": after, "job": job}


def _command(*args: str) -> str:
    from django.core.management import call_command

    stdout = io.StringIO()
    call_command(*args, stdout=stdout, stderr=io.StringIO())
    return stdout.getvalue().strip().splitlines()[-1]


def _line(f: dict) -> str:
    exact = f"{f['exact']}/{f['finished']} finished sets exact ({(f['exact_share'] or 0):.1%})"
    agree = f"{f['agree']}/{f['exact']} agree with the measured outcome" + (
        f" ({f['agreement']:.1%})" if f["agreement"] is not None else "")
    return f"{exact}, {agree}; {f['measured_schedulable']} measured schedulable; model {', '.join(f['models'])}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", type=int, default=200)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--peers", type=int, default=4)
    options = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    folder = Path(tempfile.mkdtemp(prefix="dist-etm-bench-"))
    os.environ["DATA_DIR"] = str(folder)
    os.environ["DATABASE_URL"] = os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{folder / 'bench.sqlite3'}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    try:
        scenario(options.sets, options.seed, options.peers)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
