"""The outcome model through the whole engine: what the exports say a run meant.

A job is submitted with ``submit --wait --inline`` (the real queue, machines
and sessions, in this process) and read back from the tasksets-csv and
taskjobs-csv exports alone, as a researcher mining them would. The reference
verdicts below are written here, independently of distributor.analysis.
"""
from __future__ import annotations

import csv
import io
import json
from collections import defaultdict

import pytest
from django.core.management import call_command

from distributor import exports
from distributor.analysis import ANALYSIS_VERSION
from distributor.models import Target, TaskSet
from tests.cluster import short_timeouts, store_binaries
from tests.peer import PeerFarm

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]  # whole jobs through machines


def submit_and_wait(path, target: str) -> dict:
    out = io.StringIO()
    call_command("submit", str(path), "--target", target, "--wait", "--inline", "--timeout", "300", stdout=out)
    return json.loads(out.getvalue().strip())


def csv_rows(format: str, job: int) -> list[dict]:
    text = "".join(exports.csv_chunks(format, exports.Selection(jobs=(job,))))
    return list(csv.DictReader(io.StringIO(text)))


# -- resource: a memory limit is not a timing result ---------------------------------


@pytest.fixture
def hey_binary(db):
    yield from store_binaries({"hey": b"\x7fELF hey " * 50})


def test_out_of_quota_from_the_task_loader_peer_is_a_resource_outcome(tmp_path, hey_binary):
    short_timeouts(target_timeout_s=10)
    job_file = tmp_path / "quota.json"
    job_file.write_text(json.dumps({"name": "quota", "tasksets": [{"tasks": [
        {"pkg": "hey", "period": 10, "numberofjobs": 2, "quota": "1M"},
    ]}]}))
    with PeerFarm(1, quota_needed=2 * 2**20) as farm:
        Target.objects.create(name="peers", kind="genode", addresses=farm.addresses,
                              settings={"connect_timeout": 5.0, "startup_timeout": 10.0})
        line = submit_and_wait(job_file, "peers")
    assert (line["state"], line["finished"], line["bad"]) == ("finished", 1, 0)
    [taskset] = csv_rows("tasksets-csv", line["job"])
    assert taskset["outcome"] == TaskSet.Outcome.RESOURCE == "resource"
    assert taskset["successful"] == "0" and taskset["first_miss_kind"] == ""
    jobs = csv_rows("taskjobs-csv", line["job"])
    assert [(j["exit_type"], j["deadline_met"]) for j in jobs] == [("OUT_OF_QUOTA", "")] * 2


# -- a random job on SimSo: outcomes and exact verdicts agree with a reference -------


SETS_PER_POLICY = 160


def random_job(priorities: list[int]) -> dict:
    """Three tasks of pkg ``idle`` (a job runs exactly arg1 ms on SimSo's
    default model), periods and execution times drawn per variant, deadlines
    implicit or constrained. ``caps`` only numbers the variants."""
    tasks = [
        {"pkg": "idle", "config": {"arg1": {"random": [1, 9]}}, "period": {"random": [8, 30]},
         "deadline": [0, 6][k % 2] if k else {"random": [0, 12]}, "priority": priority, "numberofjobs": 4,
         **({"caps": {"range": [100, 100 + SETS_PER_POLICY]}} if k == 0 else {})}
        for k, priority in enumerate(priorities)
    ]
    return {"tasks": tasks}


def reference_rta(tasks: list[dict]) -> bool:
    """Textbook response-time analysis of a synchronous set with distinct
    fixed priorities and D ≤ T: R = C + Σ_{hp} ⌈R/T_j⌉·C_j. Exact for the
    set: if every task meets D no job is ever killed; otherwise the highest
    failing task's higher tasks all meet theirs, so its miss is real."""
    for task in tasks:
        deadline = task["deadline"] or task["period"]
        higher = [t for t in tasks if t["priority"] < task["priority"]]
        response = task["c"]
        while True:
            demand = task["c"] + sum(-(-response // t["period"]) * t["c"] for t in higher)
            if demand > deadline:
                return False
            if demand == response:
                break
            response = demand
    return True


def reference_demand(tasks: list[dict]) -> bool:
    """Processor demand (Baruah): dbf(t) ≤ t at every absolute deadline up to
    the hyperperiod (jobs counted up to their numberofjobs). Exact for
    synchronous periodic sets under EDF with D ≤ T."""
    horizon = max(t["period"] * t["numberofjobs"] for t in tasks)
    deadlines = sorted({k * t["period"] + (t["deadline"] or t["period"])
                        for t in tasks for k in range(t["numberofjobs"])})
    for point in (d for d in deadlines if d <= horizon):
        demand = sum(t["c"] * min(t["numberofjobs"], (point - (t["deadline"] or t["period"])) // t["period"] + 1)
                     for t in tasks if point >= (t["deadline"] or t["period"]))
        if demand > point:
            return False
    return True


def test_a_random_simso_job_labels_every_set_consistently(tmp_path):
    Target.default()
    short_timeouts(target_timeout_s=10)
    job_file = tmp_path / "random.json"
    job_file.write_text(json.dumps({"name": "random", "seed": 12, "tasksets": [
        random_job([1, 2, 3]), random_job([128, 128, 128]),
    ]}))
    line = submit_and_wait(job_file, Target.default().name)
    assert (line["state"], line["total"], line["finished"]) == ("finished", 2 * SETS_PER_POLICY, 2 * SETS_PER_POLICY)

    sets = {row["taskset_id"]: row for row in csv_rows("tasksets-csv", line["job"])}
    late = defaultdict(bool)
    for job in csv_rows("taskjobs-csv", line["job"]):
        late[job["taskset_id"]] |= job["deadline_met"] == "0"
        if job["exit_type"] == "EXIT" and job["deadline_abs_ms"]:
            assert (int(job["end_ms"]) <= int(job["deadline_abs_ms"])) == (job["deadline_met"] == "1")
    constrained = 0
    counts = defaultdict(int)
    for taskset_id, row in sets.items():
        schedulable = row["outcome"] == "schedulable"
        # no task-set with a job past its deadline is schedulable, and the reverse
        assert schedulable == (not late[taskset_id]), row
        tasks = [{"c": int(row[f"task{k}_arg1"]), "period": int(row[f"task{k}_period"]),
                  "deadline": int(row[f"task{k}_deadline"]), "priority": int(row[f"task{k}_priority"]),
                  "numberofjobs": int(row[f"task{k}_numberofjobs"])} for k in range(3)]
        constrained += any(0 < t["deadline"] < t["period"] for t in tasks)
        fixed = tasks[0]["priority"] != 128
        reference = reference_rta(tasks) if fixed else reference_demand(tasks)
        if all(t["deadline"] <= t["period"] for t in tasks):  # where the references are exact
            assert reference == schedulable, row
            counts["reference"] += 1
        # every verdict flagged exact equals the measured outcome
        for verdict, exact in (("rta_schedulable", "rta_exact"), ("edf_schedulable", "edf_exact"),
                               ("sim_schedulable", "sim_exact"), ("analytic_schedulable", "analytic_exact")):
            if row[exact] == "1":
                assert row[verdict] == ("1" if schedulable else "0"), (verdict, row)
                counts[exact] += 1
        assert row["analysis_version"] == str(ANALYSIS_VERSION) and row["etm_name"] == "genode-defaults"
        if not schedulable:
            assert row["first_miss_kind"] in ("DEADLINE", "EXIT_PERIOD", "EXIT_CRITICAL", "NOT_SCHEDULED")
            assert row["first_miss_task"] != "" and row["first_miss_job"] != "" and row["first_miss_ms"] != ""
            counts[f"first miss on task {row['first_miss_task']}"] += 1
    outcomes = {row["outcome"] for row in sets.values()}
    assert outcomes == {"schedulable", "unschedulable"}
    assert constrained > 50 and counts["reference"] > 200 and counts["analytic_exact"] > 250, counts
    assert counts["first miss on task 0"] > 0, counts
