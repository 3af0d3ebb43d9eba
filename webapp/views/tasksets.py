"""A task-set's page: its outcome and first miss, its tasks, its schedule as
a Gantt chart, its analytic labels as tables (``webapp.analysis_table``), its
task-jobs, its raw events per attempt and the attempts that failed."""
from __future__ import annotations

from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from distributor.models import Attempt, Event, ExitType, TaskJob, TaskSet
from webapp import analysis_table, gantt, outcome_text
from webapp.access import login_required
from webapp.params import whole_number

# Rows of a table shown at once; the chart's window and the exports show the rest.
TASKJOB_ROWS = 1000
EVENT_ROWS = 1000
# Quick windows of the chart: short jobs in a long schedule are slivers until zoomed.
ZOOMS = ({"label": "first 100 ms", "to": 100}, {"label": "first second", "to": 1000},
         {"label": "first 10 s", "to": 10_000})


def _taskset_or_404(taskset_id: int) -> TaskSet:
    return get_object_or_404(TaskSet.objects.select_related("job__target", "machine__target"), pk=taskset_id)


def _window(request: HttpRequest) -> tuple[int | None, int | None]:
    low, high = whole_number(request.GET.get("from")), whole_number(request.GET.get("to"))
    if low is not None and high is not None and high <= low:
        high = None
    return low, high


def _chart(taskset: TaskSet, tasks: list, window) -> gantt.Chart:
    rows = TaskJob.objects.filter(taskset=taskset)
    low, high = window
    if low is not None:
        rows = rows.filter(end_ms__gte=low)
    if high is not None:
        rows = rows.filter(start_ms__lte=high)
    shown = list(rows.order_by("start_ms", "task_id")[: gantt.MAX_BARS + 1])
    total = len(shown) if len(shown) <= gantt.MAX_BARS else rows.count()
    return gantt.build(tasks, shown[: gantt.MAX_BARS], total=total, window=window,
                       first_miss=taskset.first_miss)


@login_required
def taskset(request: HttpRequest, taskset_id: int) -> HttpResponse:
    taskset = _taskset_or_404(taskset_id)
    tasks = list(taskset.tasks.all())
    window = _window(request)
    attempts = list(Attempt.objects.filter(taskset=taskset).select_related("machine__target").order_by("number", "started_at"))
    event_counts = dict(Event.objects.filter(taskset=taskset).values_list("attempt").annotate(n=Count("id")).order_by())
    chosen = _chosen_attempt(request, attempts, event_counts)
    events = list(Event.objects.filter(taskset=taskset, attempt=chosen).order_by("seq")[:EVENT_ROWS]) if chosen else []
    taskjobs = list(TaskJob.objects.filter(taskset=taskset).select_related("task").order_by("task__task_id", "job_number")[:TASKJOB_ROWS])
    analysis = analysis_table.build(taskset.analysis)
    miss = taskset.first_miss
    return render(request, "web/taskset.html", {
        "taskset": taskset, "job": taskset.job, "tasks": tasks, "chart": _chart(taskset, tasks, window),
        "window": window, "attempts": attempts, "event_counts": sorted(event_counts.items()), "chosen": chosen,
        "events": events, "taskjobs": taskjobs, "taskjob_limit": TASKJOB_ROWS, "event_limit": EVENT_ROWS,
        "analysis": analysis, "zooms": ZOOMS,
        "explanation": outcome_text.explain(taskset.state, taskset.outcome),
        "first_miss": outcome_text.describe(miss) if miss else "", "miss_window": _around(miss, tasks),
        "all_exit": _all_exit(taskset, taskjobs), "contradiction": analysis_table.agreement(taskset.outcome, analysis),
    })


def _around(miss, tasks: list) -> str:
    """A chart window around the first miss, from before its job's release to
    a little after: the query string of a zoom link."""
    if miss is None:
        return ""
    task = next((t for t in tasks if t.task_id == miss.task), None)
    span = max(task.period, task.deadline, 10) if task else 100
    return f"from={max(miss.at_ms - span * 3 // 2, 0)}&to={miss.at_ms + span // 2}"


def _all_exit(taskset: TaskSet, taskjobs: list) -> bool | None:
    """The seeds' ``Successful``: every job ended EXIT (None before a result,
    or without task-jobs). Read from the rows already loaded when they are
    all there."""
    if taskset.state != TaskSet.State.FINISHED or not taskjobs:
        return None
    if len(taskjobs) < TASKJOB_ROWS:
        return all(job.exit_type == ExitType.EXIT for job in taskjobs)
    return not TaskJob.objects.filter(taskset=taskset).exclude(exit_type=ExitType.EXIT).exists()


def _chosen_attempt(request: HttpRequest, attempts: list, event_counts: dict) -> int | None:
    number = whole_number(request.GET.get("attempt"))
    if number in event_counts:
        return number
    return max(event_counts) if event_counts else None


@login_required
def taskset_gantt(request: HttpRequest, taskset_id: int) -> HttpResponse:
    """The chart alone, as an SVG file (for papers and for tests)."""
    taskset = _taskset_or_404(taskset_id)
    tasks = list(taskset.tasks.all())
    chart = _chart(taskset, tasks, _window(request))
    svg = render(request, "web/gantt.svg", {"chart": chart, "taskset": taskset}, content_type="image/svg+xml")
    svg["Content-Disposition"] = f'inline; filename="taskset-{taskset.pk}.svg"'
    return svg
