"""Server-rendered SVG plots for the job and campaign pages.

Hand-written SVG rather than a plotting library: three simple chart types do
not justify a dependency of matplotlib's size in the web process, and SVG
text is easy to test, to cache and to download. Every plot is drawn from
grouped queries (``distributor.results`` for the labels; the response-time
quartiles from a sample of at most RESPONSE_SAMPLE task-jobs), so a job of
millions of task-sets is plotted in flat memory.

Entry points: ``plot_svg(name, job=…)`` / ``plot_svg(name, campaign=…)`` with a
name from ``PLOTS``; each returns a complete ``<svg>`` document as text.
"""
from __future__ import annotations

import math
from collections import defaultdict
from datetime import timedelta
from xml.sax.saxutils import escape, quoteattr

from django.db.models import Case, Count, ExpressionWrapper, F, IntegerField, Max, Min, QuerySet, Value, When
from django.db.models.functions import Mod

from distributor import results
from distributor.models import ExitType, TaskJob, TaskSet
from distributor.results import tasksets_for

WIDTH, HEIGHT = 640, 360
LEFT, RIGHT, TOP, BOTTOM = 56, 150, 28, 44
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f", "#17becf")
RESPONSE_SAMPLE = 200_000
TIME_BINS = 30
TIME_UNITS = (("seconds", 1, 300), ("minutes", 60, 300 * 60), ("hours", 3600, 96 * 3600), ("days", 86400, math.inf))


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


SERIES = (("measured", "measured"), ("rta", "RTA"), ("edf", "EDF demand"), ("simulation", "simulation"),
          ("verdict", "overall verdict"))


def schedulability_svg(job=None, campaign=None, summary: results.Results | None = None) -> str:
    """Share of schedulable task-sets per utilisation bin: measured, and as
    predicted by each analytic verdict (RTA, EDF demand, simulation, overall),
    with the number of measured sets above each bin."""
    title = "Schedulable task-sets by utilisation"
    bins = (summary or results.summarise(tasksets_for(job, campaign))).bins
    if not bins:
        return _empty(title)
    width = 1 / results.BINS_PER_UNIT
    top = max(bins) + 1
    canvas = _Canvas(title, (0, max(1.2, top * width)), (0, 1), "utilisation U", "schedulable share")
    legend = []
    # analytic series dashed, each differently, so that equal curves stay visible
    for (key, name), colour, dash in zip(SERIES, COLOURS, ("", "8 4", "3 3", "1 4", "6 2 1 2")):
        points = [((b + 0.5) * width, yes / total) for b, counts in sorted(bins.items())
                  for yes, total in [counts[key]] if total]
        if points:
            canvas.polyline(points, colour, name, dash)
            legend.append((name, colour))
    canvas.legend(legend)
    for b, counts in sorted(bins.items()):
        yes, total = counts["measured"]
        canvas.parts.append(f'<text class="count" x="{canvas.x((b + 0.5) * width)}" y="{TOP + 10}" '
                            f'text-anchor="middle" font-size="9">{_compact(total)}<title>U {b * width:g}–'
                            f'{(b + 1) * width:g}: {yes} of {total} measured schedulable</title></text>')
    canvas.parts.append(f'<text x="{WIDTH - RIGHT + 12}" y="{HEIGHT - BOTTOM}" font-size="9">numbers on top:</text>'
                        f'<text x="{WIDTH - RIGHT + 12}" y="{HEIGHT - BOTTOM + 12}" font-size="9">'
                        f'task-sets per bin</text>')
    return canvas.svg()


def _compact(count: int) -> str:
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if count >= 10 * size:
            return f"{count // size}{suffix}"
    return str(count)


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
    canvas.parts.append(f'<text x="{x}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">{escape(pkg)}</text>')


def _quantile(values: list[int], q: float) -> float:
    position = (len(values) - 1) * q
    lower = math.floor(position)
    upper = min(lower + 1, len(values) - 1)
    return values[lower] + (values[upper] - values[lower]) * (position - lower)


# -- exit types over time ------------------------------------------------------------


def exit_types_svg(job=None, campaign=None) -> str:
    """Stacked bars: task-jobs by exit type, binned by the time their
    task-set ended (TIME_BINS bins, grouped in the database), which shows a
    target going bad (or a level getting harder)."""
    title = "Exit types over time"
    ended = tasksets_for(job, campaign).filter(state=TaskSet.State.FINISHED, ended_at__isnull=False)
    span = ended.aggregate(first=Min("ended_at"), last=Max("ended_at"))
    if span["first"] is None:
        return _empty(title)
    seconds = max((span["last"] - span["first"]).total_seconds(), 0.001)
    unit, scale = next((u, f) for u, f, limit in TIME_UNITS if seconds <= limit)
    # the bin of a task-set's end as plain comparisons: no date function per row
    edges = [span["first"] + timedelta(seconds=seconds * k / TIME_BINS) for k in range(1, TIME_BINS)]
    slot = Case(*(When(taskset__ended_at__lt=edge, then=Value(k)) for k, edge in enumerate(edges)),
                default=Value(TIME_BINS - 1), output_field=IntegerField())
    rows = (TaskJob.objects.filter(taskset__in=ended).order_by()
            .values(slot=slot, kind=F("exit_type")).annotate(n=Count("id")))
    bins: dict[int, dict[str, int]] = defaultdict(dict)
    for row in rows:
        bins[row["slot"]][row["kind"]] = row["n"]
    if not bins:
        return _empty(title)
    kinds = [kind for kind in ExitType.values if any(kind in counts for counts in bins.values())]
    kinds += sorted({kind for counts in bins.values() for kind in counts} - set(kinds))
    canvas = _Canvas(title, (0, seconds / scale), (0, max(sum(c.values()) for c in bins.values())),
                     f"{unit} since {span['first']:%Y-%m-%d %H:%M:%S} UTC", "task-jobs")
    width = seconds / scale / TIME_BINS
    colour = {kind: COLOURS[k % len(COLOURS)] for k, kind in enumerate(kinds)}
    for slot_number, counts in sorted(bins.items()):
        base = 0
        for kind in kinds:
            if counts.get(kind):
                canvas.rect(slot_number * width, (slot_number + 0.9) * width, base, base + counts[kind], colour[kind],
                            f"{kind}: {counts[kind]}")
                base += counts[kind]
    canvas.legend([(kind, colour[kind]) for kind in kinds])
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
