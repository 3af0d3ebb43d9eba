"""Server-rendered SVG plots for the job and campaign pages.

Hand-written SVG rather than a plotting library: three simple chart types do
not justify a dependency of matplotlib's size in the web process, and SVG
text is easy to test, to cache and to download. Every function reads its rows
through chunked iterators or database aggregates, so a job of millions of
task-jobs is plotted in flat memory.

Entry points: ``plot_svg(name, job=…)`` / ``plot_svg(name, campaign=…)`` with a
name from ``PLOTS``; each returns a complete ``<svg>`` document as text.
"""
from __future__ import annotations

import math
from collections import defaultdict
from xml.sax.saxutils import escape, quoteattr

from django.db.models import Count, ExpressionWrapper, F, IntegerField, Max, Min, Q, QuerySet
from django.db.models.functions import Mod

from distributor.models import ExitType, TaskJob, TaskSet

WIDTH, HEIGHT = 640, 360
LEFT, RIGHT, TOP, BOTTOM = 56, 150, 28, 44
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f", "#17becf")
UTILISATION_BIN = 0.05
RESPONSE_SAMPLE = 200_000
TIME_BINS = 30
TIME_UNITS = (("seconds", 1, 300), ("minutes", 60, 300 * 60), ("hours", 3600, 96 * 3600), ("days", 86400, math.inf))
VERDICTS = (("measured", "measured"), ("rta", "RTA"), ("edf", "EDF demand"), ("simulation", "simulation"))


def tasksets_for(job=None, campaign=None) -> QuerySet:
    """The task-sets a plot covers: one job's, or every level's of a campaign."""
    if campaign is not None:
        return TaskSet.objects.filter(job_id__in=campaign.levels.values("job_id"))
    return TaskSet.objects.filter(job=job)


# -- SVG pieces -----------------------------------------------------------------


class _Canvas:
    """A plot area with linear axes; collects SVG elements."""

    def __init__(self, title: str, x_range: tuple[float, float], y_range: tuple[float, float],
                 x_label: str, y_label: str, x_ticks: bool = True):
        self.x0, self.x1 = x_range
        self.y0, self.y1 = y_range
        self.parts = [f'<text x="{WIDTH / 2}" y="18" text-anchor="middle" font-size="14">{escape(title)}</text>']
        self._axes(x_label, y_label, x_ticks)

    def x(self, value: float) -> float:
        span = (self.x1 - self.x0) or 1
        return round(LEFT + (value - self.x0) / span * (WIDTH - LEFT - RIGHT), 2)

    def y(self, value: float) -> float:
        span = (self.y1 - self.y0) or 1
        return round(HEIGHT - BOTTOM - (value - self.y0) / span * (HEIGHT - TOP - BOTTOM), 2)

    def _axes(self, x_label: str, y_label: str, x_ticks: bool) -> None:
        bottom, right = HEIGHT - BOTTOM, WIDTH - RIGHT
        self.parts.append(f'<path d="M{LEFT},{TOP}V{bottom}H{right}" fill="none" stroke="#333"/>')
        for value in _ticks(self.x0, self.x1) if x_ticks else []:
            self.parts.append(f'<text x="{self.x(value)}" y="{bottom + 16}" text-anchor="middle">{_fmt(value)}</text>')
        for value in _ticks(self.y0, self.y1):
            self.parts.append(f'<text x="{LEFT - 6}" y="{self.y(value) + 4}" text-anchor="end">{_fmt(value)}</text>')
            self.parts.append(f'<path d="M{LEFT},{self.y(value)}H{right}" stroke="#eee"/>')
        self.parts.append(f'<text x="{(LEFT + right) / 2}" y="{HEIGHT - 8}" text-anchor="middle">{escape(x_label)}</text>')
        self.parts.append(f'<text transform="translate(14,{(TOP + bottom) / 2}) rotate(-90)" '
                          f'text-anchor="middle">{escape(y_label)}</text>')

    def polyline(self, points: list[tuple[float, float]], colour: str, name: str, dash: str = "") -> None:
        path = " ".join(f"{self.x(px)},{self.y(py)}" for px, py in points)
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(f'<polyline class="series" data-name={quoteattr(name)} points="{path}" fill="none" '
                          f'stroke="{colour}" stroke-width="2"{dashes}/>')
        self.parts += [f'<circle cx="{self.x(px)}" cy="{self.y(py)}" r="2.5" fill="{colour}"/>' for px, py in points]

    def rect(self, x0: float, x1: float, y0: float, y1: float, colour: str, tip: str) -> None:
        left, top = self.x(x0), self.y(y1)
        self.parts.append(f'<rect x="{left}" y="{top}" width="{round(self.x(x1) - left, 2)}" '
                          f'height="{round(self.y(y0) - top, 2)}" fill="{colour}"><title>{escape(tip)}</title></rect>')

    def legend(self, entries: list[tuple[str, str]]) -> None:
        for index, (name, colour) in enumerate(entries):
            y = TOP + 14 + 18 * index
            self.parts.append(f'<rect x="{WIDTH - RIGHT + 12}" y="{y - 9}" width="10" height="10" fill="{colour}"/>')
            self.parts.append(f'<text x="{WIDTH - RIGHT + 28}" y="{y}">{escape(name)}</text>')

    def svg(self) -> str:
        return _document(self.parts)


def _document(parts: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">'
            f'<rect width="100%" height="100%" fill="white"/>{"".join(parts)}</svg>\n')


def _empty(title: str) -> str:
    return _document([f'<text x="{WIDTH / 2}" y="18" text-anchor="middle" font-size="14">{escape(title)}</text>',
                      f'<text class="empty" x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no data yet</text>'])


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    step = 10 ** math.floor(math.log10((hi - lo) / count))
    for factor in (1, 2, 5, 10):
        if (hi - lo) / (step * factor) <= count:
            step *= factor
            break
    first = math.ceil(lo / step) * step
    return [round(first + k * step, 10) for k in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(value: float) -> str:
    return f"{value:g}"


# -- schedulability against utilisation ------------------------------------------


def schedulability_svg(job=None, campaign=None) -> str:
    """Share of schedulable task-sets per utilisation bin: measured, and as
    predicted by each analytic verdict (RTA, EDF demand, simulation)."""
    title = "Schedulable task-sets by utilisation"
    counts: dict[str, dict[int, list[int]]] = {key: defaultdict(lambda: [0, 0]) for key, _ in VERDICTS}
    timed = (TaskSet.Outcome.SCHEDULABLE, TaskSet.Outcome.UNSCHEDULABLE)  # resource is no timing result
    rows = (tasksets_for(job, campaign).filter(state=TaskSet.State.FINISHED, outcome__in=timed)
            .values_list("outcome", "analysis"))
    for outcome, analysis in rows.iterator(chunk_size=2000):
        if not analysis or analysis.get("utilisation") is None:
            continue
        bucket = int(analysis["utilisation"] / UTILISATION_BIN)
        predictions = {"measured": outcome == TaskSet.Outcome.SCHEDULABLE,
                       **{key: analysis[key]["verdict"] for key, _ in VERDICTS[1:]}}
        for key, value in predictions.items():
            if value is not None:
                counts[key][bucket][0] += bool(value)
                counts[key][bucket][1] += 1
    if not counts["measured"]:
        return _empty(title)
    top = max(b for series in counts.values() for b in series) + 1
    canvas = _Canvas(title, (0, max(1.2, top * UTILISATION_BIN)), (0, 1), "utilisation U", "schedulable share")
    legend = []
    # analytic series dashed, each differently, so that equal curves stay visible
    for (key, name), colour, dash in zip(VERDICTS, COLOURS, ("", "8 4", "3 3", "1 4")):
        if counts[key]:
            points = [((b + 0.5) * UTILISATION_BIN, yes / total) for b, (yes, total) in sorted(counts[key].items())]
            canvas.polyline(points, colour, name, dash)
            legend.append((name, colour))
    canvas.legend(legend)
    return canvas.svg()


# -- response times per package ---------------------------------------------------


def response_times_svg(job=None, campaign=None) -> str:
    """Box plot of task-job response times (end − release) per package:
    whiskers at the true minimum and maximum, the box at the quartiles of a
    systematic sample of at most RESPONSE_SAMPLE task-jobs."""
    title = "Response time per package"
    taskjobs = TaskJob.objects.filter(taskset__in=tasksets_for(job, campaign), release_ms__isnull=False)
    response = ExpressionWrapper(F("end_ms") - F("release_ms"), output_field=IntegerField())
    extremes = {row["task__pkg"]: row for row in taskjobs.annotate(response=response).values("task__pkg").annotate(
        low=Min("response"), high=Max("response"), count=Count("id")).order_by("task__pkg")}
    if not extremes:
        return _empty(title)
    samples = _response_samples(taskjobs, response, sum(row["count"] for row in extremes.values()))
    packages = sorted(extremes)
    high = max(row["high"] for row in extremes.values())
    canvas = _Canvas(title, (0, len(packages)), (min(0, min(r["low"] for r in extremes.values())), max(high, 1)),
                     "package", "response time (ms)", x_ticks=False)
    for index, pkg in enumerate(packages):
        _box(canvas, index, pkg, extremes[pkg], sorted(samples.get(pkg, [])), COLOURS[index % len(COLOURS)])
    return canvas.svg()


def _response_samples(taskjobs: QuerySet, response, total: int) -> dict[str, list[int]]:
    """Every k-th task-job by id, chosen in the database, so only the sample
    travels; ids are spread evenly over a job's task-sets."""
    stride = max(1, math.ceil(total / RESPONSE_SAMPLE))
    rows = taskjobs.annotate(response=response)
    if stride > 1:
        rows = rows.annotate(pick=Mod("id", stride)).filter(pick=0)
    samples: dict[str, list[int]] = defaultdict(list)
    for pkg, value in rows.values_list("task__pkg", "response").iterator(chunk_size=5000):
        samples[pkg].append(value)
    return samples


def _box(canvas: _Canvas, index: int, pkg: str, extremes: dict, values: list[int], colour: str) -> None:
    centre = index + 0.5
    quartiles = [_quantile(values, q) for q in (0.25, 0.5, 0.75)] if values else [extremes["low"]] * 3
    x = canvas.x(centre)
    canvas.parts.append(f'<path d="M{x},{canvas.y(extremes["low"])}V{canvas.y(extremes["high"])}" stroke="{colour}"/>')
    canvas.rect(centre - 0.3, centre + 0.3, quartiles[0], quartiles[2], colour,
                f"{pkg}: {extremes['count']} task-jobs, median {quartiles[1]:g} ms, max {extremes['high']} ms")
    canvas.parts.append(f'<path class="median" d="M{canvas.x(centre - 0.3)},{canvas.y(quartiles[1])}'
                        f'H{canvas.x(centre + 0.3)}" stroke="black" stroke-width="2"/>')
    canvas.parts.append(f'<text x="{x}" y="{HEIGHT - BOTTOM + 28}" text-anchor="middle">{escape(pkg)}</text>')


def _quantile(values: list[int], q: float) -> float:
    position = (len(values) - 1) * q
    lower = math.floor(position)
    upper = min(lower + 1, len(values) - 1)
    return values[lower] + (values[upper] - values[lower]) * (position - lower)


# -- exit types over time ------------------------------------------------------------


def exit_types_svg(job=None, campaign=None) -> str:
    """Stacked bars: task-jobs by exit type, binned by the time their task-set
    ended, which shows a target going bad (or a level getting harder)."""
    title = "Exit types over time"
    kinds = list(ExitType.values)
    rows = tasksets_for(job, campaign).filter(state=TaskSet.State.FINISHED, ended_at__isnull=False).annotate(
        **{f"n_{kind}": Count("taskjobs", filter=Q(taskjobs__exit_type=kind)) for kind in kinds})
    span = rows.aggregate(first=Min("ended_at"), last=Max("ended_at"))
    if span["first"] is None:
        return _empty(title)
    seconds = max((span["last"] - span["first"]).total_seconds(), 0.001)
    unit, scale = next((u, f) for u, f, limit in TIME_UNITS if seconds <= limit)
    bins: dict[int, list[int]] = defaultdict(lambda: [0] * len(kinds))
    for ended_at, *counts in rows.values_list("ended_at", *(f"n_{kind}" for kind in kinds)).iterator(chunk_size=2000):
        slot = min(int((ended_at - span["first"]).total_seconds() / seconds * TIME_BINS), TIME_BINS - 1)
        bins[slot] = [a + b for a, b in zip(bins[slot], counts)]
    used = [k for k, kind in enumerate(kinds) if any(counts[k] for counts in bins.values())]
    canvas = _Canvas(title, (0, seconds / scale), (0, max(1, max(sum(c) for c in bins.values()))),
                     f"{unit} since {span['first']:%Y-%m-%d %H:%M:%S} UTC", "task-jobs")
    width = seconds / scale / TIME_BINS
    for slot, counts in sorted(bins.items()):
        base = 0
        for k in used:
            if counts[k]:
                canvas.rect(slot * width, (slot + 0.9) * width, base, base + counts[k], COLOURS[k % len(COLOURS)],
                            f"{kinds[k]}: {counts[k]}")
                base += counts[k]
    canvas.legend([(kinds[k], COLOURS[k % len(COLOURS)]) for k in used])
    return canvas.svg()


PLOTS = {
    "schedulability": schedulability_svg,
    "response-times": response_times_svg,
    "exit-types": exit_types_svg,
}


def plot_svg(name: str, *, job=None, campaign=None) -> str:
    """The SVG of plot ``name`` (a key of PLOTS) for a job or a campaign."""
    try:
        plot = PLOTS[name]
    except KeyError:
        raise KeyError(f"unknown plot {name!r}; known: {', '.join(PLOTS)}") from None
    return plot(job=job, campaign=campaign)
