"""The Gantt chart of a task-set: a row per task, a bar per job from start to
end coloured by exit type, releases and period ends marked, a legend."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from distributor.models import Job, Target, Task, TaskJob, TaskSet
from webapp import gantt

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def taskset(db):
    target = Target.objects.create(name="dry", kind="stdio")
    job = Job.objects.create(name="g", target=target, spec={}, variant_count=1, cursor=1, state=Job.State.FINISHED)
    ts = TaskSet.objects.create(job=job, variant=0, state=TaskSet.State.FINISHED, outcome="unschedulable")
    common = {"arg1": 0, "offset": 0, "criticaltime": 0, "quota": "1M", "caps": 10, "cores": 1, "coreoffset": 0}
    fast = Task.objects.create(taskset=ts, task_id=0, pkg="hey", priority=1, deadline=0, period=100, numberofjobs=3, **common)
    slow = Task.objects.create(taskset=ts, task_id=1, pkg="pi", priority=2, deadline=60, period=100, numberofjobs=2, **common)
    TaskJob.objects.bulk_create([
        TaskJob(taskset=ts, task=fast, job_number=0, release_ms=0, start_ms=0, end_ms=20, exit_type="EXIT"),
        TaskJob(taskset=ts, task=fast, job_number=1, release_ms=100, start_ms=100, end_ms=120, exit_type="EXIT"),
        TaskJob(taskset=ts, task=fast, job_number=2, release_ms=200, start_ms=200, end_ms=220, exit_type="EXIT"),
        TaskJob(taskset=ts, task=slow, job_number=0, release_ms=0, start_ms=20, end_ms=100, exit_type="EXIT_PERIOD"),
        TaskJob(taskset=ts, task=slow, job_number=1, release_ms=100, start_ms=200, end_ms=200, exit_type="NOT_SCHEDULED"),
    ])
    return ts


def _svg(client, user, taskset, query: str = "") -> ET.Element:
    client.force_login(user)
    response = client.get(f"/tasksets/{taskset.pk}/gantt.svg{query}")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/svg+xml"
    return ET.fromstring(response.content)


def test_there_is_a_row_per_task_and_a_bar_per_job(client, alice, taskset):
    svg = _svg(client, alice, taskset)
    labels = [text.text for row in svg.iter(f"{SVG}g") if row.get("class") == "task-row" for text in row.iter(f"{SVG}text")]
    assert labels == ["0: hey", "1: pi"]
    bars = [el for el in svg.iter() if "job" in (el.get("class") or "").split()]
    assert len(bars) == 5
    kinds = sorted(el.get("class").split()[1] for el in bars)
    assert kinds == ["exit-EXIT"] * 3 + ["exit-EXIT_PERIOD", "exit-NOT_SCHEDULED"]


def test_a_bar_spans_its_job_from_start_to_end(client, alice, taskset):
    svg = _svg(client, alice, taskset)
    rects = {el.find(f"{SVG}title").text: el for el in svg.iter(f"{SVG}rect") if (el.get("class") or "").startswith("job")}
    first = rects["task 0 (hey) job 0: released 0 ms, ran 0–20 ms (20 ms), EXIT"]
    killed = rects["task 1 (pi) job 0: released 0 ms, ran 20–100 ms (80 ms), EXIT_PERIOD"]
    scale = gantt.PLOT_WIDTH / 300  # the chart spans 0..300 ms: the last period end
    assert float(first.get("x")) == gantt.LEFT
    assert float(first.get("width")) == pytest.approx(20 * scale, abs=0.02)
    assert float(killed.get("x")) == pytest.approx(gantt.LEFT + 20 * scale, abs=0.02)
    assert float(killed.get("width")) == pytest.approx(80 * scale, abs=0.02)
    assert first.get("fill") == gantt.COLOURS["EXIT"] and killed.get("fill") == gantt.COLOURS["EXIT_PERIOD"]
    assert float(killed.get("y")) > float(first.get("y"))  # task 1's row is below task 0's


def test_releases_period_ends_and_deadlines_are_marked(client, alice, taskset):
    svg = _svg(client, alice, taskset)
    marks = [el.get("class").split()[1] for el in svg.iter(f"{SVG}path") if (el.get("class") or "").startswith("mark")]
    assert marks.count("release") == 5
    assert marks.count("period-end") == 5
    assert marks.count("deadline") == 2  # only task 1 has a deadline other than its period
    titles = [el.find(f"{SVG}title").text for el in svg.iter(f"{SVG}path") if "deadline" in (el.get("class") or "")]
    assert titles == ["task 1 job 0: deadline at 60 ms", "task 1 job 1: deadline at 160 ms"]


def test_the_legend_names_what_the_chart_shows(client, alice, taskset):
    svg = _svg(client, alice, taskset)
    legend = [el.text for g in svg.iter(f"{SVG}g") if g.get("class") == "legend" for el in g.iter(f"{SVG}text")]
    assert legend == ["EXIT", "EXIT_PERIOD", "NOT_SCHEDULED", "release", "period end", "deadline"]


def test_a_window_shows_only_the_jobs_inside_it(client, alice, taskset):
    svg = _svg(client, alice, taskset, "?from=150&to=300")
    bars = [el for el in svg.iter() if (el.get("class") or "").startswith("job ")]
    assert len(bars) == 2  # task 0 job 2 and task 1's unscheduled job
    ticks = [el.text for g in svg.iter(f"{SVG}g") if g.get("class") == "axis" for el in g.iter(f"{SVG}text")]
    assert ticks[0] == "160 ms" and ticks[-1] == "300 ms"


def test_a_huge_schedule_is_cut_and_says_so(taskset, monkeypatch):
    monkeypatch.setattr(gantt, "MAX_BARS", 2)
    from webapp.views.tasksets import _chart

    chart = _chart(taskset, list(taskset.tasks.all()), (None, None))
    assert (chart.shown, chart.total, chart.truncated) == (2, 5, True)


def test_the_task_set_page_embeds_the_chart(client, alice, taskset):
    client.force_login(alice)
    page = client.get(f"/tasksets/{taskset.pk}/").content.decode()
    chart = re.search(r'<div class="gantt-wrap" id="gantt">(.*?)</div>', page, re.S).group(1)
    assert chart.count('class="job exit-') == 5
    assert "<title id=\"gantt-title\">Schedule of task-set" in chart


@pytest.fixture
def judged(db):
    """A task-set stored under the outcome model: task 1 (deadline 60 < period
    100) ends job 0 EXIT at 80, too late, and is killed in job 1; task 0 meets
    every deadline. The first miss is task 1's job 0 at its deadline, 60 ms."""
    target = Target.objects.create(name="dry", kind="stdio")
    job = Job.objects.create(name="g", target=target, spec={}, variant_count=1, cursor=1, state=Job.State.FINISHED)
    ts = TaskSet.objects.create(job=job, variant=0, state=TaskSet.State.FINISHED, outcome="unschedulable",
                                first_miss_task=1, first_miss_job=0, first_miss_kind="DEADLINE", first_miss_ms=60)
    common = {"arg1": 0, "offset": 0, "criticaltime": 0, "quota": "1M", "caps": 10, "cores": 1, "coreoffset": 0}
    fast = Task.objects.create(taskset=ts, task_id=0, pkg="hey", priority=1, deadline=0, period=100, numberofjobs=2, **common)
    slow = Task.objects.create(taskset=ts, task_id=1, pkg="pi", priority=2, deadline=60, period=100, numberofjobs=2, **common)
    TaskJob.objects.bulk_create([
        TaskJob(taskset=ts, task=fast, job_number=0, release_ms=0, start_ms=0, end_ms=20, exit_type="EXIT",
                deadline_abs_ms=100, deadline_met=True),
        TaskJob(taskset=ts, task=fast, job_number=1, release_ms=100, start_ms=100, end_ms=120, exit_type="EXIT",
                deadline_abs_ms=200, deadline_met=True),
        TaskJob(taskset=ts, task=slow, job_number=0, release_ms=0, start_ms=20, end_ms=80, exit_type="EXIT",
                deadline_abs_ms=60, deadline_met=False),
        TaskJob(taskset=ts, task=slow, job_number=1, release_ms=100, start_ms=120, end_ms=200, exit_type="EXIT_PERIOD",
                deadline_abs_ms=160, deadline_met=False),
    ])
    return ts


def _job_rects(svg: ET.Element) -> dict[str, ET.Element]:
    return {el.find(f"{SVG}title").text: el for el in svg.iter(f"{SVG}rect") if (el.get("class") or "").startswith("job")}


def test_a_missed_job_is_hatched_and_a_late_exit_has_a_colour_of_its_own(client, alice, judged):
    svg = _svg(client, alice, judged)
    rects = _job_rects(svg)
    met = rects["task 0 (hey) job 0: released 0 ms, ran 0–20 ms (20 ms), EXIT, deadline 100 ms met"]
    late = rects["task 1 (pi) job 0: released 0 ms, ran 20–80 ms (60 ms), EXIT, deadline 60 ms missed"]
    killed = rects["task 1 (pi) job 1: released 100 ms, ran 120–200 ms (80 ms), EXIT_PERIOD, deadline 160 ms missed"]
    assert "missed" not in met.get("class").split() and met.get("fill") == gantt.COLOURS["EXIT"]
    assert "missed" in late.get("class").split() and late.get("fill") == gantt.LATE_COLOUR != gantt.COLOURS["EXIT"]
    assert "missed" in killed.get("class").split() and killed.get("fill") == gantt.COLOURS["EXIT_PERIOD"]
    hatches = [el for el in svg.iter(f"{SVG}rect") if el.get("class") == "missed-hatch"]
    assert sorted(el.get("x") for el in hatches) == sorted([late.get("x"), killed.get("x")])
    assert all(el.get("fill") == "url(#gantt-missed)" for el in hatches)
    legend = [el.text for g in svg.iter(f"{SVG}g") if g.get("class") == "legend" for el in g.iter(f"{SVG}text")]
    assert legend[:4] == ["EXIT", "EXIT_PERIOD", "EXIT, too late", "missed its deadline"]
    assert legend[-1] == "first miss"


def test_the_first_miss_is_flagged_on_its_tasks_row_at_its_instant(client, alice, judged):
    svg = _svg(client, alice, judged)
    flags = [el for el in svg.iter(f"{SVG}path") if el.get("class") == "first-miss"]
    assert len(flags) == 1
    title = "first miss: task 1, job 0: ended after its deadline at 60 ms"
    assert flags[0].find(f"{SVG}title").text == title
    assert title in svg.find(f"{SVG}title").text  # the chart's own title says it too
    x, y = (float(n) for n in re.match(r"M([\d.]+) ([\d.]+)", flags[0].get("d")).groups())
    assert x == pytest.approx(gantt.LEFT + 60 * gantt.PLOT_WIDTH / 200, abs=0.02)  # the chart spans 0..200 ms
    assert gantt.TOP + gantt.ROW <= y < gantt.TOP + 2 * gantt.ROW  # task 1's row, the second
    outside = _svg(client, alice, judged, "?from=100&to=200")
    assert not [el for el in outside.iter(f"{SVG}path") if el.get("class") == "first-miss"]


def test_deadlines_are_the_stored_absolute_ones_even_past_the_last_period(client, alice, judged):
    # A deadline longer than the period: the chart reaches the last deadline.
    slow = judged.tasks.get(task_id=1)
    TaskJob.objects.filter(task=slow, job_number=1).update(deadline_abs_ms=250)
    svg = _svg(client, alice, judged)
    titles = [el.find(f"{SVG}title").text for el in svg.iter(f"{SVG}path") if "deadline" in (el.get("class") or "")]
    assert titles == ["task 1 job 0: deadline at 60 ms", "task 1 job 1: deadline at 250 ms"]
    ticks = [el.text for g in svg.iter(f"{SVG}g") if g.get("class") == "axis" for el in g.iter(f"{SVG}text")]
    assert ticks[-1] == "250 ms"


def test_the_task_set_page_shows_the_flag_without_script(client, alice, judged):
    client.force_login(alice)
    page = client.get(f"/tasksets/{judged.pk}/").content.decode()
    chart = re.search(r'<div class="gantt-wrap" id="gantt">(.*?)</div>', page, re.S).group(1)
    assert 'class="first-miss"' in chart and chart.count('class="missed-hatch"') == 2
    assert not re.search(r"<script|\son\w+=", chart)  # a tooltip is an SVG <title>: no script, no handler
