"""The Gantt chart of a task-set, laid out here and drawn by templates/web/gantt.svg.

One row per task, a bar per job from its start to its end coloured by how it
ended, a mark at each release and at each period end (and at the job's
absolute deadline when it differs from the period end). A job that missed
its deadline (``TaskJob.deadline_met`` false, the outcome model's judgement)
is hatched and outlined, one that ended EXIT too late has a colour of its
own, and the task-set's first miss is a flag on its task's row at the
instant of the miss. Colours are attributes, not CSS, so the same SVG reads
the same when downloaded on its own; nothing needs JavaScript (every
explanation is an SVG ``<title>``, a tooltip).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from distributor.models import ExitType, Task, TaskJob
from sessions.outcomes import Miss
from webapp.outcome_text import describe

LEFT = 120  # room for the task labels
PLOT_WIDTH = 880
TOP = 28  # room for the axis labels
ROW = 34
BAR = 16
LEGEND_ROW = 22
MAX_BARS = 4000  # more would make a page of megabytes; the window narrows it

COLOURS = {
    ExitType.EXIT: "#2f9e5b",
    ExitType.EXIT_CRITICAL: "#e8871e",
    ExitType.EXIT_PERIOD: "#d64541",
    ExitType.EXIT_EXTERNAL: "#8e6bbf",
    ExitType.EXIT_ERROR: "#7a1f1f",
    ExitType.OUT_OF_QUOTA: "#c9a400",
    ExitType.OUT_OF_CAPS: "#a0672c",
    ExitType.NOT_SCHEDULED: "#7d8590",
}
RELEASE_COLOUR = "#1f6feb"
PERIOD_END_COLOUR = "#57606a"
DEADLINE_COLOUR = "#cf222e"
LATE_COLOUR = "#d6336c"  # ended EXIT, but after its deadline
FIRST_MISS_COLOUR = "currentColor"  # black on light, white on dark: unlike any bar


@dataclass
class Bar:
    x: float
    y: float
    width: float
    colour: str
    exit_type: str
    title: str
    not_scheduled: bool = False
    missed: bool = False  # the job missed its deadline (hatched, outlined)
    late: bool = False  # ... by ending EXIT after it (its own colour)


@dataclass
class Mark:
    x: float
    kind: str  # release | period-end | deadline
    colour: str
    title: str
    path: str  # the line and arrow head, drawn with the same colour


@dataclass
class Chart:
    width: int
    height: int
    plot_left: int
    plot_right: int
    rows: list[dict] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    ticks: list[dict] = field(default_factory=list)
    legend: list[dict] = field(default_factory=list)
    first_miss: dict | None = None  # x, y, path, title of the flag at the first miss
    start_ms: int = 0
    end_ms: int = 0
    shown: int = 0
    total: int = 0

    @property
    def plot_width(self) -> int:
        return self.plot_right - self.plot_left

    @property
    def rows_bottom(self) -> int:
        return TOP + ROW * len(self.rows)

    @property
    def truncated(self) -> bool:
        return self.shown < self.total


def build(tasks: list[Task], taskjobs: list[TaskJob], total: int | None = None,
          window: tuple[int | None, int | None] = (None, None), first_miss: Miss | None = None) -> Chart:
    """Lay out the chart; ``taskjobs`` are those inside the window, at most
    MAX_BARS; ``first_miss`` is the task-set's, flagged if inside the window."""
    by_pk = {task.pk: task for task in tasks}
    row_of = {task.pk: index for index, task in enumerate(tasks)}
    start, end = _span(tasks, taskjobs, window, first_miss)
    scale = PLOT_WIDTH / max(end - start, 1)

    def x_of(ms: float) -> float:
        return round(LEFT + (min(max(ms, start), end) - start) * scale, 2)

    chart = Chart(width=LEFT + PLOT_WIDTH + 20, height=0, plot_left=LEFT, plot_right=LEFT + PLOT_WIDTH, start_ms=start, end_ms=end,
                  shown=len(taskjobs), total=len(taskjobs) if total is None else total)
    for index, task in enumerate(tasks):
        chart.rows.append({"y": TOP + index * ROW, "mid": TOP + index * ROW + ROW / 2, "label": f"{task.task_id}: {task.pkg}",
                           "title": f"task {task.task_id} {task.pkg}({task.arg1}) priority {task.priority}, "
                                    f"period {task.period} ms, deadline {task.deadline} ms, {task.numberofjobs} jobs"})
    for job in taskjobs:
        task = by_pk[job.task_id]
        top = TOP + row_of[job.task_id] * ROW + (ROW - BAR) / 2
        chart.bars.append(_bar(job, task, top, x_of))
        chart.marks.extend(_marks(job, task, top, start, end, x_of))
    chart.first_miss = _first_miss(first_miss, tasks, start, end, x_of)
    chart.ticks = [{"x": x_of(ms), "label": _label(ms)} for ms in _ticks(start, end)]
    chart.legend = _legend(chart, TOP + ROW * len(tasks) + 16)
    chart.height = TOP + ROW * len(tasks) + 16 + LEGEND_ROW * math.ceil(max(len(chart.legend), 1) / 6)
    return chart


def _span(tasks, taskjobs, window, first_miss: Miss | None = None) -> tuple[int, int]:
    low, high = window
    start = low if low is not None else 0
    if high is not None:
        return start, max(high, start + 1)
    ends = [job.end_ms for job in taskjobs]
    period = {task.pk: task.period for task in tasks}
    ends += [job.release_ms + period[job.task_id] for job in taskjobs if job.release_ms is not None and period[job.task_id]]
    ends += [job.deadline_abs_ms for job in taskjobs if job.deadline_abs_ms is not None]
    if first_miss is not None and taskjobs:
        ends.append(first_miss.at_ms)
    return start, max(ends + [start + 1])


def _bar(job: TaskJob, task: Task, top: float, x_of) -> Bar:
    x, right = x_of(job.start_ms), x_of(job.end_ms)
    release = f"released {job.release_ms} ms, " if job.release_ms is not None else ""
    title = (f"task {task.task_id} ({task.pkg}) job {job.job_number}: {release}"
             f"ran {job.start_ms}–{job.end_ms} ms ({job.end_ms - job.start_ms} ms), {job.exit_type}")
    missed = job.deadline_met is False
    late = missed and job.exit_type == ExitType.EXIT
    if job.deadline_abs_ms is not None:
        judged = {True: "met", False: "missed", None: "neither met nor missed (not a timing result)"}[job.deadline_met]
        title += f", deadline {job.deadline_abs_ms} ms {judged}"
    elif missed:
        title += ", missed"
    return Bar(x=x, y=top, width=max(right - x, 1.5), colour=LATE_COLOUR if late else COLOURS.get(job.exit_type, "#000"),
               exit_type=job.exit_type, title=title, not_scheduled=job.exit_type == ExitType.NOT_SCHEDULED,
               missed=missed, late=late)


def _marks(job: TaskJob, task: Task, top: float, start: int, end: int, x_of) -> list[Mark]:
    if job.release_ms is None:
        return []
    marks = []
    label = f"task {task.task_id} job {job.job_number}"

    def add(ms: int, kind: str, colour: str, what: str) -> None:
        if start <= ms <= end:
            x = x_of(ms)
            marks.append(Mark(x, kind, colour, f"{label}: {what} at {ms} ms", _mark_path(kind, x, top)))

    add(job.release_ms, "release", RELEASE_COLOUR, "release")
    period_end = job.release_ms + task.period if task.period else None
    if period_end is not None:
        add(period_end, "period-end", PERIOD_END_COLOUR, "period end")
    # The stored absolute deadline; rows stored before it was get it from the task.
    deadline = job.deadline_abs_ms
    if deadline is None and task.deadline:
        deadline = job.release_ms + task.deadline
    if deadline is not None and deadline != period_end:
        add(deadline, "deadline", DEADLINE_COLOUR, "deadline")
    return marks


def _first_miss(miss: Miss | None, tasks: list[Task], start: int, end: int, x_of) -> dict | None:
    """A flag on the missing task's row at the instant of the miss: a line
    across the row under a triangle."""
    row = next((index for index, task in enumerate(tasks) if task.task_id == miss.task), None) if miss else None
    if row is None or not start <= miss.at_ms <= end:
        return None
    x, y = x_of(miss.at_ms), TOP + row * ROW
    return {"x": x, "y": y, "path": f"M{x} {y + 2}V{y + ROW - 2}M{x - 6} {y}h12l-6 9z",
            "title": f"first miss: {describe(miss)}"}


def _mark_path(kind: str, x: float, top: float) -> str:
    """A release points up from below the bar, a period end down from above it,
    a deadline is a line across it."""
    if kind == "release":
        return f"M{x} {top - 3}V{top + BAR + 1}M{x} {top + BAR + 1}l4 6h-8z"
    if kind == "period-end":
        return f"M{x} {top - 6}V{top + BAR + 3}M{x} {top - 1}l-3.5 -5h7z"
    return f"M{x} {top - 4}V{top + BAR + 4}"


def _ticks(start: int, end: int) -> list[int]:
    """Round time stamps, 1-2-5 steps, about eight of them."""
    span = max(end - start, 1)
    raw = span / 8
    power = 10 ** math.floor(math.log10(raw)) if raw >= 1 else 1
    step = next((power * m for m in (1, 2, 5, 10) if power * m >= raw), power * 10)
    first = math.ceil(start / step) * step
    return list(range(int(first), int(end) + 1, int(step)))


def _label(ms: int) -> str:
    return f"{ms / 1000:g} s" if ms and ms % 1000 == 0 else f"{ms} ms"


def _legend(chart: Chart, top: int) -> list[dict]:
    """What the chart shows, and nothing it does not: a legend of eleven
    entries for a chart in two colours hides the two."""
    used = {bar.exit_type for bar in chart.bars if not bar.late}
    kinds = {mark.kind for mark in chart.marks}
    entries = [{"kind": "bar", "colour": colour, "label": name} for name, colour in COLOURS.items() if name in used]
    if any(bar.late for bar in chart.bars):
        entries.append({"kind": "bar", "colour": LATE_COLOUR, "label": "EXIT, too late"})
    if any(bar.missed and not bar.not_scheduled for bar in chart.bars):
        entries.append({"kind": "missed", "colour": COLOURS[ExitType.EXIT_PERIOD], "label": "missed its deadline"})
    entries += [{"kind": kind, "colour": colour, "label": label}
                for kind, colour, label in (("release", RELEASE_COLOUR, "release"),
                                            ("period-end", PERIOD_END_COLOUR, "period end"),
                                            ("deadline", DEADLINE_COLOUR, "deadline")) if kind in kinds]
    if chart.first_miss:
        entries.append({"kind": "first-miss", "colour": FIRST_MISS_COLOUR, "label": "first miss"})
    for index, entry in enumerate(entries):
        entry["x"] = LEFT + (index % 6) * 150
        entry["y"] = top + (index // 6) * LEGEND_ROW
    return entries
