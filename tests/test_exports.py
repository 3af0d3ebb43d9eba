"""Exports for data mining: CSV read back with pandas, SQLite with the seeds' queries."""
from __future__ import annotations

import io
import sqlite3
from datetime import timedelta

import pandas as pd
import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from distributor import exports
from distributor.analysis import ANALYSIS_VERSION, analyse
from distributor.exports import Selection
from distributor.models import Job, Machine, Target, Task, TaskJob, TaskSet
from sessions import etm

PASSWORD_HASH = "pbkdf2_sha256$870000$knownsalt$c2VjcmV0LWhhc2gtb2YtYWxpY2U="
SECRET_SETTING = "s3cret-target-password"

# The seeds' query for task-sets of three tasks (Deep_Shallow_ml_devel).
SEEDS_THREE_TASKS = (
    "select TaskSet.Set_ID, t1.*, t2.*, t3.*, TaskSet.Successful "
    "from Task t1, Task t2, Task t3 "
    "inner join TaskSet on t1.Task_ID = TaskSet.TASK1_ID "
    "and t2.Task_ID = TaskSet.TASK2_ID "
    "and t3.Task_ID = TaskSet.TASK3_ID "
    "and TaskSet.TASK4_ID = -1 "
)


def spec_task(task_id: int, pkg: str = "pi", arg1: int = 4, period: int = 100, jobs: int = 2, **fields) -> dict:
    values = {"id": task_id, "pkg": pkg, "arg1": arg1, "priority": task_id + 1, "deadline": 0, "period": period,
              "offset": 0, "numberofjobs": jobs, "criticaltime": 0, "quota": "5M", "caps": 50, "cores": 1,
              "coreoffset": 0}
    return {**values, **fields}


def finished_set(job: Job, variant: int, tasks: list[dict], machine: Machine, schedulable: bool = True) -> TaskSet:
    """A task-set as the engine leaves it: FINISHED, tasks, task-jobs, labels."""
    now = timezone.now()
    taskset = TaskSet.objects.create(
        job=job, variant=variant, state=TaskSet.State.FINISHED, machine=machine, attempts=1,
        outcome=TaskSet.Outcome.SCHEDULABLE if schedulable else TaskSet.Outcome.UNSCHEDULABLE,
        started_at=now - timedelta(seconds=3), ended_at=now, analysis=analyse(tasks, etm.load()),
    )
    rows = []
    for spec in tasks:
        task = Task.objects.create(taskset=taskset, task_id=spec["id"], **{f: spec[f] for f in Task.FIELDS})
        for number in range(spec["numberofjobs"]):
            release = spec["offset"] + number * spec["period"] if spec["period"] else None
            start = release if release is not None else 10 * number
            exit_type = "EXIT" if schedulable or number == 0 else "EXIT_PERIOD"
            deadline = None if release is None else release + (spec["deadline"] or spec["period"])
            rows.append(TaskJob(taskset=taskset, task=task, job_number=number, release_ms=release,
                                start_ms=start + 1, end_ms=start + 3 + spec["id"], exit_type=exit_type,
                                deadline_abs_ms=deadline, deadline_met=exit_type == "EXIT"))
    TaskJob.objects.bulk_create(rows)
    return taskset


@pytest.fixture
def results(db, django_user_model):
    """Two jobs: sets of 1, 2, 3, 3 and 4 tasks, and a job with a bad set."""
    alice = django_user_model.objects.create(username="alice-owner", password=PASSWORD_HASH)
    target = Target.objects.create(name="lab", kind="stdio", settings={"print": False, "password": SECRET_SETTING})
    machine = Machine.objects.create(target=target, slot=0, host="h1", state=Machine.State.STOPPED)
    first = Job.objects.create(name="first", owner=alice, target=target, spec={}, variant_count=5, cursor=5,
                               state=Job.State.FINISHED)
    sizes = {
        0: [spec_task(0)],
        1: [spec_task(0), spec_task(1, pkg="hey", period=0, jobs=3)],
        2: [spec_task(0), spec_task(1, arg1=8), spec_task(2, pkg="tumatmul", arg1=3, period=200)],
        3: [spec_task(0), spec_task(1, arg1=8), spec_task(2, pkg="tumatmul", arg1=90, period=200)],
        4: [spec_task(0), spec_task(1), spec_task(2), spec_task(3, quota="512K")],
    }
    sets = {variant: finished_set(first, variant, tasks, machine, schedulable=variant != 3)
            for variant, tasks in sizes.items()}
    second = Job.objects.create(name="second", owner=alice, target=target, spec={}, variant_count=1, cursor=1)
    bad = TaskSet.objects.create(job=second, variant=0, state=TaskSet.State.BAD, attempts=3,
                                 last_error=f"connection refused; password={SECRET_SETTING}")
    Task.objects.create(taskset=bad, task_id=0, **{f: spec_task(0)[f] for f in Task.FIELDS})
    return {"first": first, "second": second, "sets": sets, "bad": bad, "machine": machine}


def read_csv(chunks) -> pd.DataFrame:
    return pd.read_csv(io.StringIO("".join(chunks)))


def test_taskjobs_csv_loads_with_numeric_columns(results):
    frame = read_csv(exports.taskjobs_csv(Selection()))
    assert list(frame.columns) == list(exports.TASKJOB_COLUMNS)
    assert len(frame) == TaskJob.objects.count() == 2 + (2 + 3) + 6 + 6 + 8
    for column in ("job_id", "taskset_id", "variant", "task_id", "arg1", "priority", "deadline", "period", "offset",
                   "numberofjobs", "criticaltime", "quota_bytes", "caps", "cores", "coreoffset", "job_number",
                   "start_ms", "end_ms", "machine_id"):
        assert frame[column].dtype == "int64", column
    # back-to-back jobs have no release, so no response time: NaN in a float column
    assert frame["release_ms"].dtype == "float64" and frame["response_ms"].dtype == "float64"
    assert frame["release_ms"].isna().sum() == 3
    with_release = frame.dropna(subset=["release_ms"])
    assert (with_release["response_ms"] == with_release["end_ms"] - with_release["release_ms"]).all()
    assert set(frame["quota_bytes"]) == {5 * 2**20, 512 * 2**10}
    assert set(frame["target"]) == {"lab"} and set(frame["exit_type"]) == {"EXIT", "EXIT_PERIOD"}


def test_taskjobs_csv_rows_come_in_taskset_task_job_order(results):
    frame = read_csv(exports.taskjobs_csv(Selection()))
    keys = list(zip(frame["taskset_id"], frame["task_id"], frame["job_number"]))
    assert keys == sorted(keys)


def test_taskjobs_csv_has_each_task_job_once(results):
    frame = read_csv(exports.taskjobs_csv(Selection()))
    keys = set(zip(frame["taskset_id"], frame["task_id"], frame["job_number"]))
    stored = set(TaskJob.objects.values_list("taskset_id", "task__task_id", "job_number"))
    assert len(frame) == len(keys) and keys == stored


def test_tasksets_csv_pads_task_columns_to_the_largest_set(results):
    frame = read_csv(exports.tasksets_csv(Selection(jobs=(results["first"].pk,))))
    assert list(frame.columns[:len(exports.TASKSET_COLUMNS)]) == list(exports.TASKSET_COLUMNS)
    assert [c for c in frame.columns if c.startswith("task3_")][:2] == ["task3_pkg", "task3_arg1"]
    assert not any(c.startswith("task4_") for c in frame.columns)
    assert len(frame) == 5
    assert list(frame["n_tasks"]) == [1, 2, 3, 3, 4]
    assert list(frame["successful"]) == [1, 1, 1, 0, 1]
    for column in ("successful", "attempts", "utilisation", "rta_schedulable", "etm_version", "task0_period",
                   "task0_c_ms", "task3_period", "task3_quota_bytes", "duration_s"):
        assert pd.api.types.is_numeric_dtype(frame[column]), column
    assert frame["task3_period"].isna().sum() == 4  # padding
    assert frame["etm_name"].iloc[0] == etm.load().name
    assert frame["task2_c_ms"].iloc[3] == etm.load().execution_time_ms("tumatmul", 90)


def test_tasksets_csv_filters_by_state_job_and_date(results):
    bad_only = read_csv(exports.tasksets_csv(Selection(states=("bad",))))
    assert list(bad_only["taskset_id"]) == [results["bad"].pk]
    assert bad_only["successful"].isna().all()
    second = read_csv(exports.tasksets_csv(Selection(jobs=(results["second"].pk,))))
    assert len(second) == 1
    TaskSet.objects.filter(pk=results["sets"][0].pk).update(ended_at=timezone.now() - timedelta(days=3))
    recent = read_csv(exports.tasksets_csv(Selection(since=timezone.now() - timedelta(days=1))))
    assert results["sets"][0].pk not in set(recent["taskset_id"]) and len(recent) == 5
    assert len(read_csv(exports.taskjobs_csv(Selection(states=("bad",))))) == 0


def test_the_sqlite_export_answers_the_seeds_query_for_three_tasks(results, tmp_path):
    path = exports.write_sqlite(tmp_path / "out.sqlite3", Selection())
    db = sqlite3.connect(path)
    rows = db.execute(SEEDS_THREE_TASKS).fetchall()
    three = [results["sets"][2], results["sets"][3]]
    assert sorted((row[0], row[-1]) for row in rows) == [(three[0].pk, 1), (three[1].pk, 0)]
    assert len(rows[0]) == 1 + 3 * 13 + 1
    # the seeds' Task table holds each distinct task once: task 0 is the same everywhere
    assert db.execute("SELECT COUNT(DISTINCT TASK1_ID) FROM TaskSet").fetchone() == (1,)
    assert db.execute("SELECT COUNT(*) FROM TaskSet").fetchone() == (5,)  # finished sets only
    assert db.execute("SELECT TASK2_ID, TASK3_ID, TASK4_ID FROM TaskSet WHERE Set_ID = ?",
                      (results["sets"][1].pk,)).fetchone()[1:] == (-1, -1)
    assert db.execute("SELECT COUNT(*) FROM Job").fetchone() == (TaskJob.objects.count(),)
    assert db.execute("SELECT COUNT(*) FROM taskjobs_flat").fetchone() == (TaskJob.objects.count(),)
    assert db.execute("SELECT COUNT(*) FROM tasksets").fetchone() == (6,)
    assert db.execute("SELECT state FROM tasksets WHERE id = ?", (results["bad"].pk,)).fetchone() == ("bad",)
    assert db.execute("SELECT typeof(response_ms) FROM taskjobs WHERE release_ms IS NOT NULL LIMIT 1").fetchone() == ("integer",)


def test_no_export_contains_accounts_or_secrets(results, tmp_path):
    texts = ["".join(exports.taskjobs_csv(Selection())), "".join(exports.tasksets_csv(Selection()))]
    texts.append(exports.write_sqlite(tmp_path / "all.sqlite3", Selection()).read_bytes().decode("latin-1"))
    assert "lab" in texts[0]  # the exports did include that target
    for text in texts:
        for secret in (PASSWORD_HASH, "knownsalt", SECRET_SETTING, "alice-owner", "connection refused"):
            assert secret not in text


def test_csv_chunks_stream_whole_lines(results, monkeypatch):
    monkeypatch.setattr(exports, "CHUNK_BYTES", 200)
    chunks = exports.csv_chunks("taskjobs-csv", Selection())
    assert iter(chunks) is chunks  # a generator, not a built list
    collected = list(chunks)
    assert len(collected) > 3 and all(chunk.endswith("\n") for chunk in collected)


def test_the_export_command_writes_each_format(results, tmp_path):
    for format, name in (("taskjobs-csv", "tj.csv"), ("tasksets-csv", "ts.csv"), ("sqlite", "db.sqlite3")):
        call_command("export", "--format", format, "--job", str(results["first"].pk), "--state", "finished",
                     "--since", "2000-01-01", "--output", str(tmp_path / name), stdout=io.StringIO())
    assert len(pd.read_csv(tmp_path / "ts.csv")) == 5
    assert len(pd.read_csv(tmp_path / "tj.csv")) == 27
    assert sqlite3.connect(tmp_path / "db.sqlite3").execute("SELECT COUNT(*) FROM TaskSet").fetchone() == (5,)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db.sqlite3", "tj.csv", "ts.csv"]  # no temporaries


@pytest.mark.parametrize("arguments, option", [
    (["--format", "xlsx"], "--format"),
    (["--format", "sqlite", "--state", "done"], "--state"),
    (["--format", "sqlite", "--since", "yesterday"], "--since"),
    (["--format", "sqlite", "--since", "9999-12-31T23:59:59-23:59"], "--since"),
    (["--format", "taskjobs-csv", "--since", "0001-01-01T00:00:00+23:59"], "--since"),
    (["--format", "sqlite", "--job", "999999"], "--job"),
    (["--format", "sqlite", "--job", "x"], "--job"),
])
def test_the_export_command_names_the_bad_option(results, tmp_path, arguments, option):
    with pytest.raises(CommandError, match=f"^{option}"):
        call_command("export", *arguments, "--output", str(tmp_path / "x"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("format", ["taskjobs-csv", "sqlite", "tasksets-parquet"])
def test_the_export_command_refuses_a_folder_as_output(results, tmp_path, format):
    # It crashed renaming its temporary file onto the folder (IsADirectoryError).
    (tmp_path / "out").mkdir()
    with pytest.raises(CommandError, match=r"^--output: .*out is a folder; name a file"):
        call_command("export", "--format", format, "--output", str(tmp_path / "out"))
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and not any((tmp_path / "out").iterdir())


@pytest.mark.skipif(connection.vendor != "postgresql", reason="COPY is PostgreSQL's")
def test_copy_and_python_paths_write_the_same_csv(results):
    copied = "".join(exports.taskjobs_csv(Selection(), method="copy")).splitlines()
    written = "".join(exports.taskjobs_csv(Selection(), method="python")).splitlines()
    assert copied[0] == written[0] == ",".join(exports.TASKJOB_COLUMNS)
    assert copied == written and len(copied) == TaskJob.objects.count() + 1


def test_outcome_deadlines_and_first_miss_are_exported_with_the_seeds_successful(results):
    """A set whose jobs all end EXIT, one of them after its deadline: the
    outcome model says unschedulable (its first miss exported), the seeds'
    Successful still says every job ended EXIT."""
    job = Job.objects.create(name="late", owner=results["first"].owner, target=results["first"].target, spec={},
                             variant_count=1, cursor=1, state=Job.State.FINISHED)
    late = finished_set(job, 0, [spec_task(0, deadline=2, period=100, jobs=1)], results["machine"])
    TaskSet.objects.filter(pk=late.pk).update(outcome=TaskSet.Outcome.UNSCHEDULABLE, first_miss_task=0,
                                              first_miss_job=0, first_miss_kind="DEADLINE", first_miss_ms=2)
    TaskJob.objects.filter(taskset=late).update(deadline_met=False)
    sets = read_csv(exports.tasksets_csv(Selection(jobs=(job.pk, results["first"].pk))))
    row = sets.set_index("taskset_id").loc[late.pk]
    assert (row["outcome"], row["successful"]) == ("unschedulable", 1)
    assert (row["first_miss_task"], row["first_miss_job"], row["first_miss_kind"], row["first_miss_ms"]) == (
        0, 0, "DEADLINE", 2)
    assert row["analysis_version"] == ANALYSIS_VERSION
    nothing_missed = sets[sets["outcome"] == "schedulable"]
    assert nothing_missed["first_miss_task"].isna().all() and nothing_missed["first_miss_kind"].isna().all()
    jobs = read_csv(exports.taskjobs_csv(Selection(jobs=(job.pk,))))
    assert list(jobs["deadline_abs_ms"]) == [2] and list(jobs["deadline_met"]) == [0]
    everything = read_csv(exports.taskjobs_csv(Selection()))
    assert pd.api.types.is_integer_dtype(everything["deadline_met"])  # 1/0, never t/f (COPY)
    assert set(everything["deadline_met"]) == {0, 1}


def test_the_sqlite_export_keeps_deadlines_first_misses_and_the_seeds_successful(results, tmp_path):
    TaskSet.objects.filter(pk=results["sets"][3].pk).update(first_miss_task=0, first_miss_job=1,
                                                             first_miss_kind="EXIT_PERIOD", first_miss_ms=200)
    db = sqlite3.connect(exports.write_sqlite(tmp_path / "out.sqlite3", Selection()))
    assert db.execute("SELECT first_miss_task, first_miss_job, first_miss_kind, first_miss_ms FROM tasksets"
                      " WHERE id = ?", (results["sets"][3].pk,)).fetchone() == (0, 1, "EXIT_PERIOD", 200)
    assert db.execute("SELECT Successful FROM TaskSet WHERE Set_ID = ?", (results["sets"][3].pk,)).fetchone() == (0,)
    assert db.execute("SELECT COUNT(*) FROM taskjobs_flat WHERE deadline_met = 0").fetchone() == (
        TaskJob.objects.filter(deadline_met=False).count(),)


def test_docs_exports_names_every_column():
    """docs/exports.md is where researchers look a column up."""
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "exports.md").read_text()
    names = {*exports.TASKJOB_COLUMNS, *exports.TASKSET_COLUMNS, *exports.TASK_GROUP}
    assert [name for name in sorted(names) if f"`{name}`" not in text] == []
