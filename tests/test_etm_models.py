"""Execution-time models as data (issue 14, points 1-4): stored versions,
measured points, unknown packages on the labels, the etm command, fits from
jobs, the target's etm setting and relabel with a stored model."""
from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from distributor import calibration
from distributor.analysis import analyse
from distributor.label_columns import flat_labels
from distributor.labels import etm_for
from distributor.models import AuditEntry, Calibration, EtmModel, EtmVersion, Machine, Target, TaskSet
from distributor.queue import claim_next, submit_job
from sessions.etm import EtmError, ExecutionTimeModel

pytestmark = pytest.mark.django_db

MEASURED = {"name": "m", "version": 1, "default": {"base_ms": 10},
            "packages": {"pi": {"base_ms": 2, "per_arg_ms": 0.5, "points": {"3": {"ms": 40, "count": 5}}},
                         "hey": {"points": {"1": {"ms": 7.2}}}}}


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


# -- the evaluator: a point wins over the line; what the model does not know ----------


def test_a_measured_point_wins_over_the_line_and_points_only_know_their_arg1():
    model = ExecutionTimeModel.from_dict(MEASURED)
    assert model.execution_time_ms("pi", 3) == 40 and model.execution_time_ms("pi", 4) == 4
    assert model.execution_time_ms("hey", 1) == 8 and model.knows("hey", 1)
    assert not model.knows("hey", 2) and model.execution_time_ms("hey", 2) == 10  # the default, flagged
    assert not model.knows("linpack", 0)


@pytest.mark.parametrize("points, field", [
    ({"x": {"ms": 1}}, "packages.pi.points.x"),
    ({"1": {"count": 3}}, "packages.pi.points.1.ms"),
    ({"1": {"ms": -1}}, "packages.pi.points.1.ms"),
    ({"1": {"ms": 1, "median": 1}}, "packages.pi.points.1.median"),
])
def test_a_bad_point_is_refused_naming_it(points, field):
    with pytest.raises(EtmError, match=field.replace(".", r"\.")):
        ExecutionTimeModel.from_dict({**MEASURED, "packages": {"pi": {"points": points}}})


def test_a_package_the_model_does_not_know_is_on_the_label_and_nothing_is_exact():
    model = ExecutionTimeModel.from_dict(MEASURED)
    known = analyse([{"id": 0, "pkg": "pi", "arg1": 3, "period": 100, "priority": 1}], model)
    assert known["etm"]["unknown_pkgs"] == [] and known["verdict_exact"] is True
    unknown = analyse([{"id": 0, "pkg": "pi", "arg1": 3, "period": 100, "priority": 1},
                       {"id": 1, "pkg": "linpack", "arg1": 1, "period": 200, "priority": 2}], model)
    assert unknown["etm"]["unknown_pkgs"] == ["linpack"]
    assert unknown["verdict"] is True and unknown["verdict_exact"] is False
    assert not unknown["rta"]["exact"] and not unknown["simulation"]["exact"]
    assert flat_labels(unknown)["etm_unknown_pkgs"] == "linpack" and flat_labels(unknown)["analytic_exact"] == 0


# -- stored models and versions -------------------------------------------------------


def test_genode_defaults_is_stored_typed_in_from_the_fixture():
    version = EtmModel.objects.get(name="genode-defaults").latest
    assert (version.version, version.calibrated, version.source) == (1, False, "typed in")
    assert version.document["packages"]["pi"] == {"base_ms": 2, "per_arg_ms": 0.5}


def test_import_export_list_and_show(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(MEASURED))
    assert "m v1: typed in" in run("etm", "import", str(path))
    assert "m v2: typed in" in run("etm", "import", str(path))  # versions are never edited
    exported = json.loads(run("etm", "export", "m"))
    assert exported["version"] == 2 and exported["packages"]["pi"]["points"]["3"]["ms"] == 40
    listed = {row["name"]: row for row in json.loads(run("etm", "list", "--json"))}
    assert listed["m"]["version"] == 2 and listed["m"]["packages"] == ["hey", "pi"]
    shown = run("etm", "show", "m")
    assert "pi: 2 + 0.5·arg1 ms  points 3: 40 ms (n=5" in shown and "hey: no line" in shown


@pytest.mark.parametrize("document, message", [
    ({**MEASURED, "packages": {"pi": {"base_ms": "x"}}}, "packages.pi.base_ms"),
    ({**MEASURED, "name": "../x"}, "name:"),
    ([1], "must be a JSON object"),
])
def test_a_bad_import_names_the_field_and_stores_nothing(tmp_path, document, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    with pytest.raises(CommandError, match=message.replace(".", r"\.")):
        call_command("etm", "import", str(path))
    assert not EtmVersion.objects.exclude(model__name="genode-defaults").exists()



def test_importing_a_folder_says_it_is_a_folder(tmp_path):
    with pytest.raises(CommandError, match="is a folder, not a file"):
        call_command("etm", "import", str(tmp_path))

def test_unknown_model_names_are_refused():
    with pytest.raises(CommandError, match="no execution-time model named 'nope'"):
        call_command("etm", "show", "nope")
    with pytest.raises(CommandError, match="--version: genode-defaults has no version 9"):
        call_command("etm", "export", "genode-defaults", "--version", "9")


# -- the target's etm setting ---------------------------------------------------------


@pytest.mark.parametrize("kind, hosts", [("stdio", ""), ("simso", ""), ("genode", "127.0.0.1:3001")])
def test_every_kind_takes_a_stored_model_and_refuses_an_unknown_one(kind, hosts):
    EtmModel.add_version("board-a", MEASURED)
    run("target", "add", "t", "--kind", kind, *(["--hosts", hosts] if hosts else []))
    assert "board-a" in run("target", "edit", "t", "--set", "etm=board-a")
    assert Target.objects.get(name="t").settings["etm"] == "board-a"
    with pytest.raises(CommandError, match="settings.etm: no execution-time model named 'nope'"):
        call_command("target", "edit", "t", "--set", "etm=nope")
    with pytest.raises(CommandError, match="settings.etm: must name a stored"):
        call_command("target", "edit", "t", "--set", "etm=5")
    assert Target.objects.get(name="t").settings["etm"] == "board-a"  # nothing half-written
    [edit] = AuditEntry.objects.filter(action="target-edit")  # the refused edits are not recorded
    assert edit.subject == "t" and edit.changes["settings"] == [{}, {"etm": "board-a"}]
    with pytest.raises(CommandError, match="settings.etm: no execution-time model named 'nope'"):
        call_command("target", "add", "u", "--kind", kind, "--set", "etm=nope",
                     *(["--hosts", hosts] if hosts else []))


def test_target_edit_refuses_an_unknown_target_and_bad_input(stdio_target):
    with pytest.raises(CommandError, match="name: no target named 'nope'"):
        call_command("target", "edit", "nope", "--set", "etm=genode-defaults")
    with pytest.raises(CommandError, match="give --set"):
        call_command("target", "edit", stdio_target.name)
    with pytest.raises(CommandError, match="settings.colour: not set"):
        call_command("target", "edit", stdio_target.name, "--unset", "colour")
    with pytest.raises(CommandError, match="settings.wcet: unknown setting"):
        call_command("target", "edit", stdio_target.name, "--set", "wcet=3")


def test_the_labels_say_whether_the_model_was_calibrated_on_this_target(stdio_target):
    EtmModel.add_version("board-a", MEASURED, calibrated=True, target=stdio_target.name, jobs=[1])
    other = Target.objects.create(name="other", kind="stdio", settings={"print": False})
    assert etm_for(stdio_target, "board-a").calibrated is True
    assert etm_for(other, "board-a").calibrated is False
    assert etm_for(stdio_target).calibrated is False  # genode-defaults, typed in
    assert etm_for(stdio_target, "default").name == "genode-defaults"


# -- fitting from finished jobs, and relabel with the fitted model --------------------


def finished_calibration_job(target: Target, times: dict[int, list[int]], pkg: str = "pi", runs_twice: int = -1):
    """A job of single-task sets, arg1 → the execution times its jobs measured, stored as a machine would."""
    spec = {"tasksets": [{"tasks": [{"pkg": pkg, "config": {"arg1": arg1}, "period": 1000, "priority": 0,
                                     "numberofjobs": len(ms)}]} for arg1, ms in times.items()]}
    job = submit_job(json.dumps(spec), target=target)
    machine = Machine.objects.create(target=target, slot=40 + Machine.objects.count(), host="here")
    machine.take(pid=1)
    for index, ms in enumerate(times.values()):
        claim = claim_next(machine)
        if index == runs_twice:  # a target failure, then run again: not one uninterrupted run
            claim.taskset.fail(machine, "the board hung")
            claim = claim_next(machine)
        [task_pk] = claim.task_pks.values()
        rows = [(claim.taskset.pk, task_pk, k, k * 1000, k * 1000, k * 1000 + t, "EXIT", k * 1000 + 1000, True)
                for k, t in enumerate(ms)]
        claim.taskset.finish(machine, TaskSet.Outcome.SCHEDULABLE, rows)
    return job


def test_fit_takes_the_maximum_per_point_and_a_line_through_them(stdio_target):
    job = finished_calibration_job(stdio_target, {1: [44, 45, 43], 2: [85, 84], 4: [165, 160]})
    line = json.loads(run("etm", "fit", "--job", str(job.pk), "--name", "fitted"))
    assert (line["name"], line["version"], line["calibrated"], line["target"]) == ("fitted", 1, True, "dry")
    version = EtmModel.objects.get(name="fitted").latest
    pi = version.document["packages"]["pi"]
    assert pi["points"]["1"] == {"ms": 45, "count": 3, "mean": 44.0, "min": 43, "max": 45, "spread": 0.816}
    assert abs(pi["per_arg_ms"] - 40) < 0.5 and abs(pi["base_ms"] - 5) < 1.5
    assert version.document["default"] == EtmModel.objects.get(name="genode-defaults").latest.document["default"]
    # the next fit is the next version and keeps what it did not measure
    other = finished_calibration_job(stdio_target, {3: [9]}, pkg="hey")
    calibration.fit([other.pk], "fitted")
    assert set(EtmModel.objects.get(name="fitted").latest.document["packages"]) == {"pi", "hey"}
    assert EtmModel.objects.get(name="fitted").latest.version == 2


def test_fit_uses_only_task_sets_that_ran_once(stdio_target):
    job = finished_calibration_job(stdio_target, {1: [40], 2: [999]}, runs_twice=1)
    calibration.fit([job.pk], "fitted")
    assert set(EtmModel.objects.get(name="fitted").latest.document["packages"]["pi"]["points"]) == {"1"}


def test_fit_refuses_unknown_jobs_and_jobs_with_nothing_measured(stdio_target):
    with pytest.raises(CommandError, match="--job: no job 999"):
        call_command("etm", "fit", "--job", "999", "--name", "x")
    job = submit_job(json.dumps({"tasksets": [{"tasks": [{"pkg": "pi", "period": 10}]}]}), target=stdio_target)
    with pytest.raises(CommandError, match="--job: no task-job .* nothing to fit"):
        call_command("etm", "fit", "--job", str(job.pk), "--name", "x")
    assert not EtmModel.objects.filter(name="x").exists()


def test_relabel_with_a_fitted_model_records_it_calibrated_on_the_target(stdio_target):
    job = finished_calibration_job(stdio_target, {1: [44], 2: [85]})
    calibration.fit([job.pk], "fitted")
    out = run("relabel", "--job", str(job.pk), "--etm", "fitted", "--workers", "1")
    assert "fitted v1" in out
    labels = [ts.analysis for ts in job.tasksets.order_by("pk")]
    assert [a["etm"] for a in labels] == [{"name": "fitted", "version": 1, "calibrated": True,
                                           "unknown_pkgs": []}] * 2
    assert [a["tasks"][0]["c_ms"] for a in labels] == [44, 85]
    with pytest.raises(CommandError, match="--etm: no execution-time model named 'nope'"):
        call_command("relabel", "--job", str(job.pk), "--etm", "nope")


def test_a_calibration_is_fitted_once_when_its_job_ends(stdio_target):
    EtmModel.add_version("cal", MEASURED)
    request = calibration.submit(stdio_target, ["pi"], (1, 2), 2, "cal")
    [task] = request.job.spec["tasksets"][0]["tasks"]
    assert (task["pkg"], task["arg1"], task["period"], task["priority"], task["numberofjobs"]) == (
        "pi", {"range": [1, 3, 1]}, 1000, 0, 2)
    assert calibration.step() == []  # the job has not ended
    machine = Machine.objects.create(target=stdio_target, slot=41, host="here")
    machine.take(pid=1)
    for ms in (41, 83):
        claim = claim_next(machine)
        [task_pk] = claim.task_pks.values()
        claim.taskset.finish(machine, TaskSet.Outcome.SCHEDULABLE,
                             [(claim.taskset.pk, task_pk, k, 0, k * 1000, k * 1000 + ms, "EXIT", 1000, True)
                              for k in range(2)])
    assert claim_next(machine) is None
    assert calibration.step() == [request.pk] and calibration.step() == []
    request = Calibration.objects.get(pk=request.pk)
    assert request.fitted.version == 2 and request.fitted.calibrated and request.fitted.jobs == [request.job_id]
    assert request.fitted.document["packages"]["pi"]["points"] == {
        "1": {"ms": 41, "count": 2, "mean": 41.0, "min": 41, "max": 41, "spread": 0.0},
        "2": {"ms": 83, "count": 2, "mean": 83.0, "min": 83, "max": 83, "spread": 0.0}}
    assert EtmModel.objects.get(name="cal").versions.count() == 2


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_simso_simulates_with_the_stored_model_its_target_names(tmp_path):
    """The machine resolves the target's etm from the database and hands
    SimSo the model itself: a job of pi with arg1 3 runs the measured 40 ms."""
    from tests.cluster import short_timeouts

    short_timeouts(target_timeout_s=10)
    EtmModel.add_version("measured", MEASURED, calibrated=True, target="sim")
    run("target", "add", "sim", "--kind", "simso", "--set", "etm=measured")
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"tasksets": [{"tasks": [{"pkg": "pi", "config": {"arg1": 3}, "period": 100,
                                                         "numberofjobs": 2}]}]}))
    line = json.loads(run("submit", str(path), "--target", "sim", "--wait", "--inline", "--timeout", "120"))
    assert line["state"] == "finished"
    taskset = TaskSet.objects.get(job_id=line["job"])
    assert [tj.end_ms - tj.start_ms for tj in taskset.taskjobs.order_by("job_number")] == [40, 40]
    assert taskset.analysis["etm"] == {"name": "measured", "version": 1, "calibrated": True, "unknown_pkgs": []}


def test_a_calibration_whose_job_measured_nothing_records_why_and_fits_nothing(stdio_target):
    request = calibration.submit(stdio_target, ["pi"], (1, 1), 1, "empty")
    request.job.cancel()
    assert calibration.step() == [request.pk]
    request = Calibration.objects.get(pk=request.pk)
    assert request.fitted is None and "nothing to fit" in request.error and request.is_done
    assert not EtmModel.objects.filter(name="empty").exists()


def test_fit_with_the_mean_as_statistic_keeps_it_for_the_next_fit(stdio_target):
    job = finished_calibration_job(stdio_target, {1: [40, 44, 45]})
    line = json.loads(run("etm", "fit", "--job", str(job.pk), "--name", "avg", "--statistic", "mean"))
    document = EtmModel.objects.get(name="avg").latest.document
    assert line["version"] == 1 and document["statistic"] == "mean"
    assert document["packages"]["pi"]["points"]["1"]["ms"] == 43.0 and ExecutionTimeModel.from_dict(
        document).execution_time_ms("pi", 1) == 43
    calibration.fit([job.pk], "avg")
    assert EtmModel.objects.get(name="avg").latest.document["statistic"] == "mean"
