"""Bounds on every number (issue 16, point 1): what a task-set file, the
admission goal or an option accepts fits its database column and the
exports; beyond that it is a 400 naming the path, and nothing is stored."""
from __future__ import annotations

import io
import json
import sqlite3

import pandas as pd
import pytest

from distributor import exports, taskfile
from distributor.exports import Selection
from distributor.models import Job, Machine, Target, Task, TaskSet
from tests.test_exports import finished_set
from webapp.models import ApiToken

T = "tasksets[0].tasks[0]"


def task(**fields) -> dict:
    return {"pkg": "hey", "period": 10, "numberofjobs": 2, **fields}


def spec(**fields) -> dict:
    return {"name": "bounds", "tasksets": [{"tasks": [task(**fields)]}]}


@pytest.fixture
def api(client, alice):
    token = ApiToken.issue(alice, "bounds")[1]

    def post(body: dict):
        return client.post("/api/jobs", json.dumps(body), content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {token}")
    return post


def refused(response, key: str, pattern: str) -> None:
    assert response.status_code == 400, response.content
    body = response.json()
    messages = {**body["errors"], **{e["path"]: e["message"] for e in body.get("file_errors", [])}}
    assert key in messages, messages
    assert pattern in messages[key], messages[key]


def short(value) -> str:
    return f"{str(value)[:12]}…({len(str(value))} chars)" if len(str(value)) > 20 else str(value)


@pytest.mark.parametrize("quota", [10**400, "999999999999G", "1025G", 2**40 + 1, "1099511627777", -5, 0], ids=short)
def test_a_quota_above_one_tebibyte_is_refused_with_its_path_and_nothing_stored(db, api, quota):
    refused(api({"spec": spec(quota=quota)}), f"{T}.quota", "at most 1 TiB")
    assert not Job.objects.exists()


@pytest.mark.parametrize("quota", ["1024G", "1048576M", 2**40, "1099511627776", "1K", 1])
def test_a_quota_up_to_one_tebibyte_is_accepted(db, quota):
    parsed = taskfile.parse(json.dumps(spec(quota=quota)), "f.json")
    assert parsed.spec["tasksets"][0]["tasks"][0]["quota"] == str(quota)


def test_caps_stay_within_the_32_bit_column(db, api):
    refused(api({"spec": spec(caps=2**31)}), f"{T}.caps", "≤ 2147483647")
    refused(api({"spec": spec(caps=[5, 2**32 - 1])}), f"{T}.caps[1]", "≤ 2147483647")
    assert not Job.objects.exists()


@pytest.mark.parametrize("generator", [
    {"range": [5, 10**400, 10**400]},  # one value, 5, and a step no column holds
    {"range": [5, -(10**30), -(10**31)]},
    {"range": [0, 10, 2**64]},
])
def test_a_range_whose_stop_or_step_leaves_the_field_far_behind_is_refused(db, api, generator):
    refused(api({"spec": spec(period=generator)}), f"{T}.period.range", "stop and step must stay near 0..4294967295")
    assert not Job.objects.exists()


def test_a_range_ending_just_past_the_bound_is_fine(db):
    parsed = taskfile.parse(json.dumps(spec(period={"range": [4294967290, 4294967296]})), "f.json")
    assert parsed.variant_count == 6


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**400], ids=short)
def test_an_admission_integer_beyond_64_bits_is_refused(db, api, value):
    refused(api({"spec": spec(), "admission": {"goal": value}}), "admission", "integers within ±2^63")
    assert not Job.objects.exists()


def test_admission_integers_of_64_bits_are_accepted(db, api):
    response = api({"spec": spec(), "admission": {"lo": -(2**63), "hi": 2**63 - 1}})
    assert response.status_code == 201, response.content
    assert Job.objects.get().admission == {"lo": -(2**63), "hi": 2**63 - 1}


@pytest.mark.parametrize("option, value, message", [
    ("offset", 10**400, "must be an integer from 0 to 0"),
    ("tries", 2**64, "must be an integer from 1 to 100"),
    ("priority", -(2**63), "must be an integer from -1000 to 1000"),
])
def test_job_options_are_bounded(db, api, option, value, message):
    refused(api({"spec": spec(), option: value}), option, message)
    assert not Job.objects.exists()


def test_the_largest_values_a_file_accepts_are_stored_and_exported_as_numbers(db, tmp_path):
    """Every integer field at its maximum and a 1 TiB quota: the task row, both
    CSVs (numeric columns) and the SQLite export hold them (the quota of 10^400
    used to end in an OverflowError there)."""
    largest = {field: hi for field, (lo, hi, default) in taskfile.INT_FIELDS.items()}
    largest.pop("arg1")
    source = spec(**largest, config={"arg1": taskfile.UINT32_MAX}, quota="1024G")
    parsed = taskfile.parse(json.dumps(source), "f.json")
    tasks = taskfile.Expander(parsed.spec).variant(0)
    tasks[0]["numberofjobs"] = 2  # the stored task keeps the file's value; two task-jobs stand for its million
    target = Target.objects.create(name="lab", kind="stdio", settings={"print": False})
    machine = Machine.objects.create(target=target, slot=0, host="h", state=Machine.State.STOPPED)
    job = Job.objects.create(name="max", target=target, spec=parsed.spec, variant_count=1, cursor=1)
    finished_set(job, 0, tasks, machine)
    Task.objects.filter(taskset__job=job).update(numberofjobs=taskfile.INT_FIELDS["numberofjobs"][1])

    selection = Selection(jobs=(job.pk,))
    frame = pd.read_csv(io.StringIO("".join(exports.csv_chunks("taskjobs-csv", selection))))
    assert frame["quota_bytes"].dtype.kind == "i" and set(frame["quota_bytes"]) == {2**40}
    assert set(frame["caps"]) == {2**31 - 1} and set(frame["period"]) == {taskfile.UINT32_MAX}
    sets = pd.read_csv(io.StringIO("".join(exports.csv_chunks("tasksets-csv", selection))))
    assert sets["task0_quota_bytes"].tolist() == [2**40]
    path = exports.write_sqlite(tmp_path / "max.sqlite3", selection)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT quota_bytes, caps, criticaltime FROM tasks").fetchall() == [
            (2**40, 2**31 - 1, taskfile.UINT32_MAX)]
    assert TaskSet.objects.get().state == TaskSet.State.FINISHED
