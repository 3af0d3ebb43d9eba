"""SVG plots of a job's results (distributor.plots)."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from distributor import plots
from distributor.models import Job, Machine, TaskJob
from tests.test_exports import finished_set, spec_task

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def job(stdio_target):
    machine = Machine.objects.create(target=stdio_target, slot=0, host="h", state=Machine.State.STOPPED)
    job = Job.objects.create(name="p", target=stdio_target, spec={}, variant_count=4, cursor=4)
    finished_set(job, 0, [spec_task(0)], machine)
    finished_set(job, 1, [spec_task(0), spec_task(1, pkg="tumatmul", arg1=30)], machine)
    finished_set(job, 2, [spec_task(0, arg1=150), spec_task(1, pkg="tumatmul", arg1=60)], machine, schedulable=False)
    finished_set(job, 3, [spec_task(0, pkg="hey", period=0, jobs=3)], machine)
    return job


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def titles(root: ET.Element) -> list[str]:
    return [element.text for element in root.iter(f"{SVG}title")]


def test_schedulability_plot_draws_measured_and_analytic_series(job):
    root = parse(plots.plot_svg("schedulability", job=job))
    names = [line.get("data-name") for line in root.iter(f"{SVG}polyline")]
    assert names == ["measured", "RTA", "simulation", "overall verdict"]  # no EDF: no set is scheduled by deadline
    measured = root.find(f"{SVG}polyline[@data-name='measured']")
    assert len(measured.get("points").split()) >= 2  # the sets fall into more than one U bin
    counts = [int(text.text) for text in root.iter(f"{SVG}text") if text.get("class") == "count"]
    assert sum(counts) == 4  # every finished set with a timing outcome, once, above its bin


def test_response_time_plot_has_a_box_per_package_with_true_counts(job, monkeypatch):
    monkeypatch.setattr(plots, "RESPONSE_SAMPLE", 3)  # forces a sample of every k-th task-job
    root = parse(plots.response_times_svg(job=job))
    boxes = titles(root)
    assert [t.split(":")[0] for t in boxes] == ["pi", "tumatmul"]  # hey runs back to back: no release
    with_release = TaskJob.objects.filter(taskset__job=job, release_ms__isnull=False)
    assert sum(int(re.search(r"(\d+) task-jobs", t).group(1)) for t in boxes) == with_release.count()
    assert len(list(root.iter(f"{SVG}path"))) > 2


def test_exit_type_plot_stacks_every_task_job(job):
    root = parse(plots.plot_svg("exit-types", job=job))
    counts = [int(t.split(": ")[1]) for t in titles(root)]
    assert sum(counts) == TaskJob.objects.filter(taskset__job=job).count()
    labels = {text.text for text in root.iter(f"{SVG}text")}
    assert {"EXIT", "EXIT_PERIOD"} <= labels


def test_a_job_without_results_gets_an_empty_plot(stdio_target):
    empty = Job.objects.create(name="e", target=stdio_target, spec={}, variant_count=1, cursor=0)
    for name in plots.PLOTS:
        assert parse(plots.plot_svg(name, job=empty)).find(f"{SVG}text[@class='empty']") is not None


def test_an_unknown_plot_is_refused(job):
    with pytest.raises(KeyError, match="unknown plot"):
        plots.plot_svg("pie", job=job)
