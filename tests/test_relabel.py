"""Labels of stored task-sets: relabel with another model, interrupted and
rerun, bad task-sets labelled on every path, and the command line."""
from __future__ import annotations

import io
import json
import threading
import time
from unittest import mock

import pytest
from django.core.management import CommandError, call_command

from distributor.analysis import ANALYSIS_VERSION, analyse
from distributor import summaries
from distributor.labels import label_stored, relabel
from distributor.models import DistributorConfig, EtmModel, EtmVersion, Job, Machine, Target, TaskSet
from distributor.queue import claim_next, submit_job
from sessions import etm

SLOW = {"name": "slow-model", "version": 7, "packages": {}, "default": {"base_ms": 9}}
DEFAULT = etm.load("default")  # hey: 1 ms a job


def variants(count: int, pkg: str = "hey") -> bytes:
    return json.dumps({"tasksets": [{"tasks": [{"pkg": pkg, "period": 10 + i, "numberofjobs": 2},
                                               {"pkg": pkg, "period": 40, "numberofjobs": 1}]}
                                    for i in range(count)]}).encode()


def live_machine(target: Target, slot: int = 0) -> Machine:
    machine = Machine.objects.create(target=target, slot=30 + slot, host="here")
    machine.take(pid=1)
    return machine


def finished_job(target: Target, count: int):
    """A job whose ``count`` task-sets finished with the default model's labels, as a machine stores them."""
    job = submit_job(variants(count), target=target)
    machine = live_machine(target)
    for _ in range(count):
        claim = claim_next(machine)
        assert claim.taskset.finish(machine, TaskSet.Outcome.SCHEDULABLE, [], analysis=analyse(claim.tasks, DEFAULT))
    return job


def model_file(tmp_path, document: dict = SLOW) -> str:
    """The model stored (``etm import``) as version 7 of slow-model: its name is what relabel takes."""
    if not EtmVersion.objects.filter(model__name=document["name"]).exists():
        model = EtmModel.objects.create(name=document["name"])
        EtmVersion.objects.create(model=model, version=document["version"], document=document)
    return document["name"]


def labels_of(job) -> list[dict]:
    return list(job.tasksets.order_by("pk").values_list("analysis", flat=True))


# -- relabel ----------------------------------------------------------------------------


def test_relabel_with_another_model_changes_the_labels_and_records_that_model(stdio_target, tmp_path):
    job = finished_job(stdio_target, 3)
    assert {a["etm"]["name"] for a in labels_of(job)} == {DEFAULT.name}
    done = relabel([job.pk], model_file(tmp_path))
    assert (done.count, done.etms, done.analysis_version) == (3, {("slow-model", 7)}, ANALYSIS_VERSION)
    for analysis in labels_of(job):
        assert analysis["etm"] == {"name": "slow-model", "version": 7, "calibrated": False, "unknown_pkgs": ["hey"]}
        assert analysis["version"] == ANALYSIS_VERSION
        assert [task["c_ms"] for task in analysis["tasks"]] == [9, 9]


def test_relabel_without_a_model_uses_the_targets_own(stdio_target, tmp_path):
    job = finished_job(stdio_target, 2)
    Target.objects.filter(pk=stdio_target.pk).update(settings={"print": False, "etm": model_file(tmp_path)})
    relabel([job.pk])
    assert {a["etm"]["name"] for a in labels_of(job)} == {"slow-model"}


def test_an_interrupted_relabel_keeps_its_committed_chunks_and_a_rerun_finishes(stdio_target, tmp_path):
    job = finished_job(stdio_target, 5)
    seen = []

    def stop_after_the_first_chunk(done: int, total: int) -> None:
        seen.append((done, total))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        relabel([job.pk], model_file(tmp_path), progress=stop_after_the_first_chunk, chunk_size=2)
    assert seen == [(2, 5)]
    assert [a["etm"]["name"] for a in labels_of(job)] == ["slow-model"] * 2 + [DEFAULT.name] * 3
    done = relabel([job.pk], model_file(tmp_path), chunk_size=2)
    assert done.count == 5
    assert [a["etm"]["name"] for a in labels_of(job)] == ["slow-model"] * 5


def test_worker_processes_write_the_same_labels_as_one_process(stdio_target, tmp_path):
    job = finished_job(stdio_target, 7)
    relabel([job.pk], model_file(tmp_path), chunk_size=3)
    alone = labels_of(job)
    TaskSet.objects.filter(job=job).update(analysis=None)
    assert relabel([job.pk], model_file(tmp_path), chunk_size=3, workers=2).count == 7
    assert labels_of(job) == alone


def test_relabel_reaches_only_the_chosen_states(stdio_target, tmp_path):
    job = finished_job(stdio_target, 2)
    first = job.tasksets.order_by("pk").first()
    TaskSet.objects.filter(pk=first.pk).update(state=TaskSet.State.BAD)
    relabel(TaskSet.objects.filter(job=job, state=TaskSet.State.BAD), model_file(tmp_path))
    assert [a["etm"]["name"] for a in labels_of(job)] == ["slow-model", DEFAULT.name]


# -- bad task-sets get labels --------------------------------------------------------------


def running(target: Target, **job_options):
    submit_job(variants(1), target=target, **job_options)
    machine = live_machine(target)
    return claim_next(machine).taskset, machine


def test_a_taskset_that_fails_for_good_gets_labels_from_its_rows(stdio_target):
    taskset, machine = running(stdio_target)
    labels = label_stored(taskset)  # what the reconciler and the admin hand over; None if the model cannot load
    assert taskset.fail(machine, "the target cannot run it", final=True, analysis=labels) == TaskSet.State.BAD
    analysis = TaskSet.objects.get(pk=taskset.pk).analysis
    assert analysis["etm"]["name"] == DEFAULT.name and [t["c_ms"] for t in analysis["tasks"]] == [1, 1]


def test_a_machine_gives_its_own_labels_and_a_retry_gets_none(stdio_target):
    taskset, machine = running(stdio_target, tries=2)
    given = {"given": "by the machine"}
    assert taskset.fail(machine, "target crashed", analysis=given) == TaskSet.State.QUEUED
    assert TaskSet.objects.get(pk=taskset.pk).analysis is None  # not ended: labelled when it ends
    taskset = claim_next(machine).taskset
    assert taskset.fail(machine, "target crashed", analysis=given) == TaskSet.State.BAD
    assert TaskSet.objects.get(pk=taskset.pk).analysis == given


def test_a_bad_taskset_keeps_the_labels_it_has(stdio_target):
    taskset, machine = running(stdio_target)
    TaskSet.objects.filter(pk=taskset.pk).update(analysis={"kept": True})
    taskset.fail(machine, "the target cannot run it", final=True, analysis={"new": True})
    assert TaskSet.objects.get(pk=taskset.pk).analysis == {"kept": True}


def test_a_taskset_whose_machines_keep_dying_ends_bad_with_labels(stdio_target):
    taskset, machine = running(stdio_target, tries=1)
    assert taskset.recover_from_dead_machine(machine, "machine died", labeller=label_stored) == TaskSet.State.BAD
    assert TaskSet.objects.get(pk=taskset.pk).analysis["etm"]["name"] == DEFAULT.name


def test_an_operator_giving_up_on_a_queued_taskset_labels_it(stdio_target):
    taskset, machine = running(stdio_target, tries=2)
    taskset.fail(machine, "target crashed")
    assert TaskSet.objects.get(pk=taskset.pk).give_up("known to break the board", labeller=label_stored)
    stored = TaskSet.objects.get(pk=taskset.pk)
    assert stored.state == TaskSet.State.BAD and stored.analysis["etm"]["name"] == DEFAULT.name


def test_a_model_that_cannot_load_leaves_a_bad_taskset_unlabelled_but_bad(stdio_target, caplog):
    Target.objects.filter(pk=stdio_target.pk).update(settings={"print": False, "etm": "/nonexistent/model.json"})
    taskset, machine = running(Target.objects.get(pk=stdio_target.pk))
    labels = label_stored(taskset)  # what the reconciler and the admin hand over; None if the model cannot load
    assert taskset.fail(machine, "the target cannot run it", final=True, analysis=labels) == TaskSet.State.BAD
    stored = TaskSet.objects.get(pk=taskset.pk)
    assert (stored.state, stored.analysis) == (TaskSet.State.BAD, None)
    assert "left without labels" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_a_machine_labels_the_taskset_its_target_cannot_run():
    """The machine's own path: a task-set error ends it bad at once, labelled
    with the machine's model (tests/fake_sessions.py: pkg "nobinary")."""
    import tests.fake_sessions  # noqa: F401 - registers the "scripted" kind
    from distributor.hosts import beat
    from distributor.machine import run_machine
    from tests.cluster import join_machine_threads

    scripted = Target.objects.create(name="scripted", kind="scripted", settings={"duration_ms": 0})
    job = submit_job(variants(1, pkg="nobinary"), target=scripted, tries=5)
    DistributorConfig.objects.update(idle_timeout_s=0)
    with mock.patch("distributor.reconciler.async_task"):
        beat()
        machine = live_machine(scripted)
        Machine.objects.filter(pk=machine.pk).update(state=Machine.State.LAUNCHING, lease=None)
        thread = threading.Thread(target=run_machine, args=(machine.pk,))
        thread.start()
        deadline = time.monotonic() + 30
        while job.tasksets.filter(state=TaskSet.State.BAD).count() < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        join_machine_threads([thread])
    taskset = job.tasksets.get()
    assert taskset.state == TaskSet.State.BAD
    assert taskset.analysis["etm"]["name"] == DEFAULT.name and len(taskset.analysis["tasks"]) == 2


# -- the command ------------------------------------------------------------------------------


def test_the_command_relabels_with_a_progress_line_and_a_summary(stdio_target, tmp_path):
    job = finished_job(stdio_target, 3)
    out, err = io.StringIO(), io.StringIO()
    with mock.patch("sys.stderr", err):
        call_command("relabel", "--job", str(job.pk), "--etm", model_file(tmp_path), "--workers", "1", stdout=out)
    assert "3/3" in err.getvalue() and "\r" not in err.getvalue()  # not a terminal: the final line alone
    summary = out.getvalue()
    assert "relabelled 3 task-sets" in summary
    assert f"analysis v{ANALYSIS_VERSION}" in summary and "slow-model v7" in summary
    assert {a["etm"]["name"] for a in labels_of(job)} == {"slow-model"}


def test_the_command_summarises_an_ended_jobs_new_labels_before_any_view(stdio_target, tmp_path):
    """No later view of a large job counts its task-sets in its request: the
    command stores the new labels' results summary itself."""
    job = finished_job(stdio_target, 3)
    job.end_if_done()
    job.refresh_from_db()
    assert job.state == job.State.FINISHED
    out = io.StringIO()
    call_command("relabel", "--job", str(job.pk), "--etm", model_file(tmp_path), "--workers", "1", stdout=out)
    assert "results of 1 ended job(s) summarised" in out.getvalue()
    scope = summaries.Scope(job=Job.objects.get(pk=job.pk))
    key, stored = scope.first_look()
    assert {name: (row.key, row.settled) for name, row in stored.items()} == {
        name: (key, True) for name in summaries.JOB_PARTS}
    assert summaries.labels_used(scope) == [{"name": "slow-model", "version": 7, "calibrated": False, "sets": 3}]


@pytest.mark.parametrize("arguments, option", [
    (["--job", "999999"], "--job"),
    (["--job", "x"], "--job"),
    ([], "--job"),
    (["--job", "JOB", "--state", "running"], "--state"),
    (["--job", "JOB", "--etm", "/nonexistent/model.json"], "--etm"),
])
def test_the_command_refuses_what_it_cannot_do_naming_the_option(stdio_target, arguments, option):
    job = finished_job(stdio_target, 1)
    before = labels_of(job)
    with pytest.raises(CommandError, match=option):
        call_command("relabel", *[str(job.pk) if a == "JOB" else a for a in arguments], stdout=io.StringIO())
    assert labels_of(job) == before


def test_an_unknown_job_exits_non_zero_naming_the_option(db, capsys):
    from django.core.management import ManagementUtility

    with pytest.raises(SystemExit) as exit_:
        ManagementUtility(["manage.py", "relabel", "--job", "999999"]).execute()
    assert exit_.value.code != 0
    assert "--job: no job 999999" in capsys.readouterr().err
